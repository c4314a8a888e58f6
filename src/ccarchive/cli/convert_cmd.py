"""``ccarchive convert SRC DST``: copy an archive into another backend, resumable and verified.

SRC and DST are anything ``ccarchive.open_archive`` takes (a path, ``file://``, ``s3://``,
``sqlite:///path.db``, ``parquet+<url>``), or ``ccconfig:PATH`` for the ``archive`` section of a
cc-backend config.json (kebab-case keys: kind file / s3 / sqlite).  Heavy imports happen in
``run`` so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

CCCONFIG_PREFIX = "ccconfig:"

EPILOG = """\
URLs: a path or file:// URL (v3 tree), s3://bucket[/prefix] (v3 keys; credentials and endpoint from
AWS_* environment variables), sqlite:///abs/path.db or sqlite://rel/path.db (cc-backend's SQLite
archive), parquet+<url> (the Parquet dataset), ccconfig:config.json (cc-backend's 'archive' section).

examples:
  ccarchive convert ./var/job-archive sqlite:///srv/archive.db
  ccarchive convert ccconfig:config.json --to-parquet s3://analysis/jobs
  ccarchive convert sqlite:///srv/archive.db ./restored --cluster fritz
"""


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("src", metavar="SRC", help="source archive (URL, path or ccconfig:FILE)")
    p.add_argument("dst", metavar="DST", help="target archive (created when missing or empty)")
    p.add_argument("--cluster", help="only this cluster")
    p.add_argument("--to-parquet", action="store_true",
                   help="write DST as a Parquet dataset (same as giving DST as parquet+<url>)")
    p.add_argument("--overwrite", action="store_true",
                   help="copy jobs already complete in DST again (default: skip them, which makes runs resumable)")
    p.add_argument("--no-verify", action="store_true", help="do not read each job back from DST to compare")
    p.add_argument("--batch-jobs", type=int, default=64, metavar="N",
                   help="jobs per Parquet file batch (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="lanes converting to a Parquet target in parallel: two threads, then worker "
                        "processes (default: one per core)")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="retries of a transient failure (S3 down, DB locked) per operation (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress display (a bar on a terminal, else a line per tenth of the jobs or 10 s)")
    p.add_argument("--json", action="store_true",
                   help="the result as one JSON document (counts, errors); errors also on stderr")


def open_location(text: str, *, create: bool) -> Any:
    """An archive for a command-line location (see the module doc)."""
    from ..archive import open_archive
    from ..backends.s3 import archive_from_config, load_archive_section

    if text.startswith(CCCONFIG_PREFIX):
        from pathlib import Path

        path = Path(text[len(CCCONFIG_PREFIX):])
        return archive_from_config(load_archive_section(path), create=create)
    return open_archive(text, create=create)


def run(name: str, args: argparse.Namespace) -> int:
    from ..backends import PARQUET_PREFIX
    from ..convert import convert
    from ..errors import InputError

    if args.batch_jobs < 1:
        raise InputError(f"--batch-jobs must be at least 1, got {args.batch_jobs}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.retries < 0:
        raise InputError(f"--retries must not be negative, got {args.retries}")
    dst_text = args.dst
    if args.to_parquet:
        if dst_text.startswith(CCCONFIG_PREFIX):
            raise InputError("--to-parquet needs a URL or path as DST, not a cc-backend config")
        if not dst_text.startswith(PARQUET_PREFIX):
            dst_text = PARQUET_PREFIX + dst_text
    src = open_location(args.src, create=False)
    dst = open_location(dst_text, create=True)
    if args.cluster and args.cluster not in src.clusters():
        raise InputError(f"{args.src}: no cluster {args.cluster!r} (clusters: {', '.join(src.clusters()) or 'none'})")
    report = convert(src, dst, cluster=args.cluster, overwrite=args.overwrite, verify=not args.no_verify,
                     progress=not args.no_progress, batch_jobs=args.batch_jobs, retries=args.retries,
                     workers=args.workers)
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    if args.json:
        import json

        print(json.dumps({"src": args.src, "dst": dst.url, "clusters": report.clusters, "total": report.total,
                          "copied": report.copied, "skipped": report.skipped, "failed": report.failed,
                          "verified": not args.no_verify, "bytes_read": report.bytes_read, "ok": report.ok,
                          "errors": report.errors}))
        return 0 if report.ok else 1
    verified = "" if args.no_verify else ", verified"
    print(f"converted {report.copied} of {report.total} jobs in {report.clusters} clusters{verified} "
          f"({report.skipped} already present, {report.failed} errors) -> {dst.url}")
    return 0 if report.ok else 1
