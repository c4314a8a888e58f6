"""``ccarchive archive | retry | status``: jobs of a cc-backend job DB through the pipeline."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job-db", required=True, metavar="PATH", help="cc-backend job database (SQLite, schema 11)")
    p.add_argument("--archive", metavar="URL", help="job archive URL or path (needed to archive)")
    p.add_argument("--state-db", metavar="PATH",
                   help="ccarchive's own state file (default: ccarchive-state.db beside the job DB)")
    p.add_argument("--source", default="synthetic", metavar="KIND|JSON",
                   help='metric source: "synthetic" (default) or a JSON source spec, e.g. '
                        '\'{"kind": "python", "class": "mymod:MySource"}\'')
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    add_common(p)
    if name == "archive":
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--id", type=int, help="one job by job DB id")
        g.add_argument("--job-id", type=int, help="one job by scheduler job id (with --cluster and --start-time)")
        g.add_argument("--from", dest="t_from", type=int, metavar="UNIX",
                       help="all stopped jobs starting at or after this time (with --to)")
        p.add_argument("--cluster")
        p.add_argument("--start-time", type=int)
        p.add_argument("--to", dest="t_to", type=int, metavar="UNIX")
        p.add_argument("--include-archived", action="store_true", help="re-archive jobs already archived")
    elif name == "retry":
        p.add_argument("--cluster", help="only failed jobs of this cluster")
        p.add_argument("--since", type=int, metavar="UNIX", help="only failed jobs that started after this time")


def state_db_path(args: argparse.Namespace) -> str:
    return args.state_db or str(Path(args.job_db).resolve().parent / "ccarchive-state.db")


def worker_config(args: argparse.Namespace, *, seed: int = 0) -> Any:
    from ..errors import InputError
    from ..worker import WorkerConfig

    if not args.archive:
        raise InputError("--archive URL is required to archive jobs")
    return WorkerConfig(job_db=str(Path(args.job_db).resolve()), archive_url=args.archive,
                        state_db=state_db_path(args), source=source_spec(args.source, seed))


def source_spec(text: str, seed: int = 0) -> dict[str, Any]:
    """``--source``: a kind name or a JSON object; checked here so a typo fails before any work."""
    import json

    from ..errors import InputError
    from ..sources.registry import KNOWN

    if text.lstrip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"--source: malformed JSON: {e.msg} at column {e.colno}") from None
    else:
        spec = {"kind": text, "seed": seed}
    if spec.get("kind") not in KNOWN:
        raise InputError(f"--source: unknown kind {spec.get('kind')!r} (known: {', '.join(KNOWN)})")
    return dict(spec)


def run(name: str, args: argparse.Namespace) -> int:
    return {"archive": _archive, "retry": _retry, "status": _status}[name](args)


def _archive(args: argparse.Namespace) -> int:
    from ..archive import open_archive
    from ..errors import InputError
    from ..jobdb import JobDB
    from .batch import run_batch

    db = JobDB(args.job_db)
    open_archive(args.archive)  # clear error now if the archive is missing or of another version
    if args.id is not None:
        ids = [args.id]
    elif args.job_id is not None:
        if not args.cluster or args.start_time is None:
            raise InputError("--job-id needs --cluster and --start-time")
        job = db.find_job(args.job_id, args.cluster, args.start_time)
        if job is None or job.id is None:
            raise InputError(f"job {args.cluster}/{args.job_id}/{args.start_time}: not in {args.job_db}")
        ids = [job.id]
    else:
        if args.t_to is None:
            raise InputError("--from needs --to")
        ids = [j.id for j in db.iter_jobs_between(args.t_from, args.t_to)
               if j.id is not None and j.job_state != "running"
               and (args.include_archived or j.monitoring_status in (1, 2))]
    if (args.id is not None or args.job_id is not None) and db.get_job(ids[0]).job_state == "running":
        raise InputError(f"job DB id {ids[0]}: still running; it is archived after it stops")
    summary = run_batch(worker_config(args), lambda _: ids, progress=not args.no_progress,
                        force=args.include_archived or args.id is not None or args.job_id is not None)
    summary.print("ccarchive archive")
    return 1 if summary.failed or summary.unfinished else 0


def _retry(args: argparse.Namespace) -> int:
    from ..jobdb import JobDB
    from ..statestore import StateStore
    from .batch import run_batch

    db = JobDB(args.job_db)
    ids = db.failed_jobs(cluster=args.cluster, since=args.since)
    if not ids:
        print("no failed jobs to retry")
        return 0
    state = StateStore(state_db_path(args))
    for i in ids:
        db.mark_pending(i)
        state.reset(i)
    summary = run_batch(worker_config(args), lambda _: ids, progress=not args.no_progress, desc="retrying")
    summary.print("ccarchive retry")
    return 1 if summary.failed or summary.unfinished else 0


def _status(args: argparse.Namespace) -> int:
    from ..jobdb import JobDB
    from ..statestore import StateStore

    db = JobDB(args.job_db)
    counts = db.counts_by_status()
    now = int(time.time())
    pending = db.pending_jobs(now=now, grace_s=0, horizon_s=10 * 365 * 86400)
    names = {0: "not monitored", 1: "pending / running", 2: "archiving failed", 3: "archived"}
    print(f"job DB {args.job_db}")
    for status in sorted(counts):
        print(f"  monitoring_status {status} ({names.get(status, '?')}): {counts[status]}")
    lag = ""
    if pending:
        oldest = db.get_job(pending[0])
        lag = f", oldest stopped {(now - oldest.start_time - oldest.duration) / 60:.0f} min ago"
    print(f"  stopped and waiting for archiving: {len(pending)}{lag}")
    state_path = state_db_path(args)
    if Path(state_path).exists():
        failures = StateStore(state_path).failures()
        print(f"  failures recorded in {state_path}: {len(failures)}")
        for f in failures[:50]:
            print(f"    job {f.db_id}: attempts {f.attempts}, {f.last_error_reason}: {f.last_error_message}")
    return 0


