"""``ccarchive demo``: the embedded default, through the whole pipeline.

Creates ``DIR/job.db`` (cc-backend's schema) with N stopped synthetic jobs, ``DIR/archive`` (v3,
with the embedded cluster configurations) and archives every pending job through the worker
process.  Run again on the same folder it creates nothing and archives whatever is still pending
(the reconciler's query), so an interrupted demo finishes.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="./ccarchive-demo", help="work folder (default: ./ccarchive-demo)")
    p.add_argument("--jobs", type=int, default=200, help="number of synthetic jobs to create (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic jobs and data")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def create_job_db(path: Path, n: int, seed: int, clusters: dict) -> int:  # type: ignore[type-arg]
    """Create the demo job DB atomically (temporary name, then rename) so a killed demo never
    leaves a half-filled DB behind."""
    from ..demo import demo_jobs
    from ..jobdb import JobDB

    tmp = path.with_name(path.name + ".creating")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    day = int(time.time()) // 86400 * 86400
    jobs = demo_jobs(n, clusters, seed=seed, first_start=day - 7 * 86400)
    db = JobDB.create(tmp)
    db.insert_jobs(jobs)
    db.close()
    os.replace(tmp, path)
    return len(jobs)


def run(name: str, args: argparse.Namespace) -> int:
    from ..archive import open_archive
    from ..demo import DEMO_CLUSTERS, embedded_cluster
    from ..errors import InputError
    from ..jobdb import JobDB
    from ..worker import WorkerConfig
    from .batch import run_batch

    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    workdir = Path(args.workdir).resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"--workdir {workdir}: exists and is not a directory") from None
    except OSError as e:
        raise InputError(f"--workdir {workdir}: cannot create it: {e.strerror or e}") from None
    archive = open_archive(str(workdir / "archive"), create=True)
    clusters = {c: embedded_cluster(c) for c in DEMO_CLUSTERS}
    for c in clusters.values():
        if not archive.has_cluster(c.name):
            archive.store_cluster(c)
    db_path = workdir / "job.db"
    created = 0
    if not db_path.exists():
        created = create_job_db(db_path, args.jobs, args.seed, clusters)
    db = JobDB(db_path)
    before = db.counts_by_status()
    horizon = 10 * 365 * 86400

    def select(_archiver: object) -> list[int]:
        return db.pending_jobs(now=time.time(), grace_s=0, horizon_s=horizon)

    config = WorkerConfig(job_db=str(db_path), archive_url=str(workdir / "archive"),
                          state_db=str(workdir / "state.db"), source={"kind": "synthetic", "seed": args.seed})
    summary = run_batch(config, select, progress=not args.no_progress, reconcile_horizon_s=horizon)
    after = db.counts_by_status()
    total = sum(after.values())
    summary.print(f"ccarchive demo: {workdir}", [
        ("jobs in job.db", f"{total} ({'created now' if created else 'existing'})"),
        ("archived before this run", str(before.get(3, 0))),
        ("archived (status 3) now", str(after.get(3, 0))),
        ("archive", str(workdir / "archive")),
        ("browse", f"ccarchive ls {workdir / 'archive'}"),
    ])
    if summary.interrupted:
        return 130
    return 1 if summary.failed or summary.unfinished else 0
