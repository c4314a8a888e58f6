"""``ccarchive archive | retry | status``: jobs of a cc-backend job DB through the pipeline.

Where the data comes from is never guessed: ``--config`` reads cc-backend's config.json exactly as
``ccarchive serve`` does (job DB, archive, metric sources, worker settings), or ``--source`` names
the metric source; ``--job-db``, ``--archive`` and ``--state-db`` replace the file's values.
Synthetic data is used only when asked for by name (``--source synthetic``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .main import UsageError

TIME_HELP = "Unix seconds or ISO 8601 (e.g. 2026-03-01 or 2026-03-01T12:00:00+01:00; no offset = UTC)"


def parse_time(text: str) -> int:
    """A point in time for the command line: Unix seconds or ISO 8601 (UTC unless an offset is given)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither Unix seconds nor an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="cc-backend's config.json: job DB (main.db), archive, metric sources "
                        "(metric-store-external or ccarchive.sources) and worker settings, read as "
                        "'ccarchive serve' reads them")
    p.add_argument("--job-db", metavar="PATH",
                   help="cc-backend job database (SQLite, schema 11); replaces the config's main.db")
    p.add_argument("--state-db", metavar="PATH",
                   help="ccarchive's own state file (default: ccarchive-state.db beside the job DB)")
    if name == "status":
        return
    p.add_argument("--archive", metavar="URL", help="job archive URL or path; replaces the config's archive")
    p.add_argument("--source", metavar="KIND|JSON",
                   help='metric source, needed without --config (replaces the config\'s): a JSON source spec, '
                        'e.g. \'{"kind": "cc-metric-store", "url": "http://ccms:8082", "token-env": "CCMS_TOKEN"}\', '
                        'or "synthetic" for generated test data')
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if name == "archive":
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--id", type=int, help="one job by job DB id")
        g.add_argument("--job-id", type=int, help="one job by scheduler job id (with --cluster and --start-time)")
        g.add_argument("--from", dest="t_from", type=parse_time, metavar="TIME",
                       help=f"all stopped jobs starting at or after this time (with --to); {TIME_HELP}")
        p.add_argument("--cluster", help="the job's cluster (with --job-id)")
        p.add_argument("--start-time", type=parse_time, metavar="TIME", help="the job's start time (with --job-id)")
        p.add_argument("--to", dest="t_to", type=parse_time, metavar="TIME",
                       help="with --from: jobs starting at or before this time")
        p.add_argument("--include-archived", action="store_true", help="re-archive jobs already archived")
    elif name == "retry":
        p.add_argument("--cluster", help="only failed jobs of this cluster")
        p.add_argument("--since", type=parse_time, metavar="TIME",
                       help=f"only failed jobs that started at or after this time; {TIME_HELP}")


def db_paths(args: argparse.Namespace) -> tuple[str, str]:
    """(job DB, state DB): the flags, else the config's ``main.db`` and ``ccarchive.state-db``."""
    if args.config:
        from ..config import load_archiving_config

        cfg = load_archiving_config(args.config, job_db=args.job_db, state_db=args.state_db)
        return cfg.job_db, cfg.state_db
    if not args.job_db:
        raise UsageError("no job DB: give --job-db PATH or --config FILE (cc-backend's config.json)")
    return str(args.job_db), str(args.state_db or Path(args.job_db).resolve().parent / "ccarchive-state.db")


def archiving_setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """(WorkerConfig, RetryPolicy) from ``--config`` and the flags; a missing source, job DB or
    archive is a usage error, so nothing is ever archived from invented data by accident."""
    from ..pipeline import RetryPolicy
    from ..worker import WorkerConfig

    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)  # as -v sets the parent's
    if args.config:
        from ..config import load_archiving_config

        cfg = load_archiving_config(args.config, job_db=args.job_db, archive_url=args.archive,
                                    state_db=args.state_db)
        worker = cfg.worker_config(log_level=level, log_format=args.log_format)
        if args.source:
            worker = dataclasses.replace(worker, source=source_spec(args.source))
        return worker, RetryPolicy(cfg.max_attempts, cfg.retry_backoff_s, cfg.retry_backoff_max_s)
    if not args.source:
        raise UsageError("no metric source: give --config FILE (cc-backend's config.json, read as 'ccarchive serve' "
                         "reads it) or --source KIND|JSON (--source synthetic only for generated test data)")
    if not args.job_db:
        raise UsageError("no job DB: give --job-db PATH or --config FILE (cc-backend's config.json)")
    if not args.archive:
        raise UsageError("no archive: give --archive URL or --config FILE (cc-backend's config.json)")
    job_db, state_db = db_paths(args)
    worker = WorkerConfig(job_db=str(Path(job_db).resolve()), archive_url=args.archive, state_db=state_db,
                          source=source_spec(args.source), log_level=level, log_format=args.log_format)
    return worker, RetryPolicy()


def source_spec(text: str) -> dict[str, Any]:
    """``--source``: a kind name or a JSON object, fully checked here so a typo fails before any work."""
    import json

    from ..errors import InputError
    from ..sources.registry import KNOWN, source_from_spec

    if text.lstrip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"--source: malformed JSON: {e.msg} at column {e.colno}") from None
    else:
        spec = {"kind": text}
    if spec.get("kind") not in KNOWN:
        raise InputError(f"--source: unknown kind {spec.get('kind')!r} (known: {', '.join(KNOWN)})")
    try:
        source_from_spec(spec)
    except (InputError, TypeError, ValueError) as e:
        raise InputError(f"--source: {e}") from None
    return dict(spec)


def run(name: str, args: argparse.Namespace) -> int:
    return {"archive": _archive, "retry": _retry, "status": _status}[name](args)


def _archive(args: argparse.Namespace) -> int:
    from ..jobdb import JobDB
    from .archive_cmds import open_archive_arg
    from .batch import run_batch

    if args.job_id is not None and (not args.cluster or args.start_time is None):
        raise UsageError("--job-id needs --cluster and --start-time")
    if args.t_from is not None and args.t_to is None:
        raise UsageError("--from needs --to")
    worker, retry = archiving_setup(args)
    db = JobDB(worker.job_db)
    # a clear error now if the archive is missing or of another version
    open_archive_arg(worker.archive_url, storage_options=worker.storage_options)
    if args.id is not None:
        ids = [args.id]
    elif args.job_id is not None:
        job = db.find_job(args.job_id, args.cluster, args.start_time)
        if job is None or job.id is None:
            from ..errors import InputError

            raise InputError(f"job {args.cluster}/{args.job_id}/{args.start_time}: not in {worker.job_db}")
        ids = [job.id]
    else:
        ids = [j.id for j in db.iter_jobs_between(args.t_from, args.t_to)
               if j.id is not None and j.job_state != "running"
               and (args.include_archived or j.monitoring_status in (1, 2))]
    if (args.id is not None or args.job_id is not None) and db.get_job(ids[0]).job_state == "running":
        from ..errors import InputError

        raise InputError(f"job DB id {ids[0]}: still running; it is archived after it stops")
    summary = run_batch(worker, lambda _: ids, progress=not args.no_progress, retry=retry,
                        force=args.include_archived or args.id is not None or args.job_id is not None)
    summary.print("ccarchive archive")
    return 1 if summary.failed or summary.unfinished else 0


def _retry(args: argparse.Namespace) -> int:
    from ..jobdb import JobDB
    from ..statestore import StateStore
    from .archive_cmds import open_archive_arg
    from .batch import run_batch

    worker, retry = archiving_setup(args)
    db = JobDB(worker.job_db)
    open_archive_arg(worker.archive_url, storage_options=worker.storage_options)
    ids = db.failed_jobs(cluster=args.cluster, since=args.since)
    if not ids:
        print("no failed jobs to retry")
        return 0
    state = StateStore(worker.state_db)
    for i in ids:
        db.mark_pending(i)
        state.reset(i)
    summary = run_batch(worker, lambda _: ids, progress=not args.no_progress, desc="retrying", retry=retry)
    summary.print("ccarchive retry")
    return 1 if summary.failed or summary.unfinished else 0


def _status(args: argparse.Namespace) -> int:
    from ..jobdb import JobDB
    from ..statestore import StateStore

    path, state_path = db_paths(args)
    db = JobDB(path)
    counts = db.counts_by_status()
    now = int(time.time())
    pending = db.pending_jobs(now=now, grace_s=0, horizon_s=10 * 365 * 86400)
    names = {0: "not monitored", 1: "pending / running", 2: "archiving failed", 3: "archived"}
    print(f"job DB {path}")
    for status in sorted(counts):
        print(f"  monitoring_status {status} ({names.get(status, '?')}): {counts[status]}")
    lag = ""
    if pending:
        oldest = db.get_job(pending[0])
        lag = f", oldest stopped {(now - oldest.start_time - oldest.duration) / 60:.0f} min ago"
    print(f"  stopped and waiting for archiving: {len(pending)}{lag}")
    if Path(state_path).exists():
        failures = StateStore(state_path).failures()
        print(f"  failures recorded in {state_path}: {len(failures)}")
        for f in failures[:50]:
            print(f"    job {f.db_id}: attempts {f.attempts}, {f.last_error_reason}: {f.last_error_message}")
    return 0
