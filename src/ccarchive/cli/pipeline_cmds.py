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
import sys
import time
from pathlib import Path
from typing import Any

from .args import TIME_HELP, iso_time, parse_time
from .main import UsageError


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="cc-backend's config.json: the job DB (main.db) and ccarchive's state DB"
                   if name == "status" else
                   "cc-backend's config.json: job DB (main.db), archive, metric sources "
                   "(metric-store-external or ccarchive.sources) and worker settings, read as "
                   "'ccarchive serve' reads them")
    p.add_argument("--job-db", metavar="PATH",
                   help="cc-backend job database (SQLite, schema 11); replaces the config's main.db")
    p.add_argument("--state-db", metavar="PATH",
                   help="ccarchive's own state file (default: ccarchive-state.db beside the job DB)")
    if name == "status":
        p.add_argument("--json", action="store_true", help="the status as one JSON document")
        p.add_argument("--check", action="store_true",
                       help="monitoring-plugin mode (Nagios, Icinga): one status line and the exit code "
                            "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the job DB cannot be read)")
        p.add_argument("--warn-failed", type=_count, default=1, metavar="N",
                       help="with --check: WARNING from N failed jobs (monitoring_status 2) on; 0: never "
                            "(default: %(default)s)")
        p.add_argument("--crit-failed", type=_count, metavar="N", help="with --check: CRITICAL from N failed jobs on")
        p.add_argument("--warn-lag", type=_duration, default=3600.0, metavar="DURATION",
                       help="with --check: WARNING when the oldest job waiting for archiving stopped longer ago "
                            "than this (seconds or e.g. 30m, 2h; default: 1h)")
        p.add_argument("--crit-lag", type=_duration, default=6 * 3600.0, metavar="DURATION",
                       help="with --check: CRITICAL beyond this lag (default: 6h)")
        return
    p.add_argument("--archive", metavar="URL", help="job archive URL or path; replaces the config's archive")
    p.add_argument("--source", metavar="KIND|JSON",
                   help='metric source, needed without --config (replaces the config\'s): a JSON source spec, '
                        'e.g. \'{"kind": "cc-metric-store", "url": "http://ccms:8082", "token-env": "CCMS_TOKEN"}\', '
                        'or "synthetic" for generated test data')
    p.add_argument("--no-progress", action="store_true",
                   help="no progress display (a bar on a terminal, else a line per tenth of the jobs or 10 s)")
    p.add_argument("--json", action="store_true", help="the summary as one JSON document on stdout")
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


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0, 1, 2, ...)")
    return int(text)


def _duration(text: str) -> float:
    from ..config import parse_duration
    from ..errors import CcArchiveError

    try:
        return parse_duration(text, "duration")
    except CcArchiveError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("duration: ")) from None


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
    from .args import open_archive_arg
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
    if args.json:
        summary.print_json()
    else:
        summary.print("ccarchive archive")
    return 1 if summary.failed or summary.unfinished else 0


def _retry(args: argparse.Namespace) -> int:
    from ..jobdb import JobDB
    from ..statestore import StateStore
    from .args import open_archive_arg
    from .batch import run_batch

    worker, retry = archiving_setup(args)
    db = JobDB(worker.job_db)
    open_archive_arg(worker.archive_url, storage_options=worker.storage_options)
    ids = db.failed_jobs(cluster=args.cluster, since=args.since)
    if not ids:
        if args.json:
            from .batch import BatchSummary

            BatchSummary().print_json()
        else:
            print("no failed jobs to retry")
        return 0
    state = StateStore(worker.state_db)
    for i in ids:
        db.mark_pending(i)
        state.reset(i)
    summary = run_batch(worker, lambda _: ids, progress=not args.no_progress, desc="retrying", retry=retry)
    if args.json:
        summary.print_json()
    else:
        summary.print("ccarchive retry")
    return 1 if summary.failed or summary.unfinished else 0


MONITORING_NAMES = {0: "not monitored", 1: "pending / running", 2: "archiving failed", 3: "archived"}
NAGIOS_STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


def status_report(job_db: str, state_db: str, now: int | None = None) -> dict[str, Any]:
    """What ``status`` prints: jobs per monitoring_status, the stopped jobs waiting for archiving
    and the lag of the one that stopped first, and the failures the state DB recorded."""
    from ..jobdb import JobDB
    from ..statestore import StateStore

    now = int(time.time()) if now is None else now
    db = JobDB(job_db)
    counts = db.counts_by_status()
    pending = db.pending_jobs(now=now, grace_s=0, horizon_s=10 * 365 * 86400)
    oldest = min((db.get_job(i) for i in pending), key=lambda j: j.start_time + j.duration, default=None)
    failures = StateStore(state_db).failures() if Path(state_db).exists() else []
    return {
        "job_db": job_db,
        "monitoring_status": {str(k): v for k, v in sorted(counts.items())},
        "failed": counts.get(2, 0),
        "pending": len(pending),
        "oldest_pending": None if oldest is None else {
            "db_id": oldest.id, "job_id": oldest.job_id, "cluster": oldest.cluster,
            "stop_time": oldest.start_time + oldest.duration,
            "stop_time_iso": iso_time(oldest.start_time + oldest.duration)},
        "lag_s": None if oldest is None else max(0, now - oldest.start_time - oldest.duration),
        "state_db": state_db if Path(state_db).exists() else None,
        "failures": [{"db_id": f.db_id, "attempts": f.attempts, "reason": f.last_error_reason,
                      "message": f.last_error_message} for f in failures],
    }


def nagios_check(report: dict[str, Any], args: argparse.Namespace) -> tuple[int, str]:
    """(exit code, status line) of ``status --check``: the worse of the failure and lag verdicts."""
    from ..logs import format_span

    failed, lag = report["failed"], report["lag_s"] or 0
    code = 0
    if failed >= args.warn_failed > 0 or (report["lag_s"] is not None and lag > args.warn_lag):
        code = 1
    if (args.crit_failed is not None and failed >= args.crit_failed > 0) or \
            (report["lag_s"] is not None and lag > args.crit_lag):
        code = 2
    oldest = f"oldest pending {format_span(lag)}" if report["lag_s"] is not None else "none pending"
    warn_f = args.warn_failed or ""
    crit_f = "" if args.crit_failed is None else args.crit_failed or ""
    perf = (f"failed={failed};{warn_f};{crit_f};0 pending={report['pending']};;;0 "
            f"lag_s={lag};{args.warn_lag:.0f};{args.crit_lag:.0f};0")
    return code, f"CCARCHIVE {NAGIOS_STATES[code]} - {failed} failed, {oldest} | {perf}"


def _status(args: argparse.Namespace) -> int:
    import json

    from ..errors import CcArchiveError

    if args.check:
        try:
            report = status_report(*db_paths(args))
        except (CcArchiveError, OSError) as e:  # the job DB cannot be read: UNKNOWN, not CRITICAL
            from .main import one_line

            print(f"CCARCHIVE UNKNOWN - {one_line(str(e))}")
            print(f"ccarchive status: error: {one_line(str(e))}", file=sys.stderr)
            return 3
        code, line = nagios_check(report, args)
        if args.json:
            print(json.dumps({**report, "check": {"code": code, "state": NAGIOS_STATES[code], "line": line}}))
        else:
            print(line)
        return code
    report = status_report(*db_paths(args))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"job DB {report['job_db']}")
    for status, n in report["monitoring_status"].items():
        print(f"  monitoring_status {status} ({MONITORING_NAMES.get(int(status), '?')}): {n}")
    lag = ""
    if report["lag_s"] is not None:
        from ..logs import format_span

        lag = f", oldest stopped {format_span(report['lag_s'])} ago ({report['oldest_pending']['stop_time_iso']})"
    print(f"  stopped and waiting for archiving: {report['pending']}{lag}")
    if report["state_db"]:
        print(f"  failures recorded in {report['state_db']}: {len(report['failures'])}")
        for f in report["failures"][:50]:
            print(f"    job {f['db_id']}: attempts {f['attempts']}, {f['reason']}: {f['message']}")
    return 0
