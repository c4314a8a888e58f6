"""``ccarchive demo``: the embedded default, through the whole pipeline.

Creates ``DIR/job.db`` (cc-backend's schema) with N stopped synthetic jobs, ``DIR/archive`` (v3,
with the embedded cluster configurations) and archives every pending job through the worker
process.  Run again on the same folder it creates nothing and archives whatever is still pending
(the reconciler's query), so an interrupted demo finishes; with nothing pending it says so in one
line, and ``--fresh`` starts over.

The numba kernels are compiled (first run) or loaded from their on-disk cache in this process
before the worker starts, so a first run says why it waits, and the summary reports that warm-up
apart from the archiving throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

#: The default job count: about 70 MB on disk, 1- to 64-node jobs, a quarter of them GPU jobs.
DEFAULT_JOBS = 30
COMPILE_NOTICE = "compiling kernels (first run only) ..."


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="./ccarchive-demo", help="work folder (default: ./ccarchive-demo)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help=f"number of synthetic jobs to create (default: {DEFAULT_JOBS}, about 70 MB on disk)")
    p.add_argument("--fresh", action="store_true",
                   help="delete the work folder's job DB, state DB and demo archive first, then start over")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic jobs and data")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="the summary as one JSON document on stdout")


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


class CompileWatch:
    """Counts numba compilations (cache misses); says ``notice`` once, at the first one."""

    def __init__(self, out: TextIO, notice: str = COMPILE_NOTICE) -> None:
        self.out, self.notice, self.compiled = out, notice, 0

    def on_start(self, event: Any) -> None:
        if self.compiled == 0:
            print(self.notice, file=self.out, flush=True)
        self.compiled += 1

    def on_end(self, event: Any) -> None:
        pass


@contextlib.contextmanager
def watch_compiles(out: TextIO, notice: str = COMPILE_NOTICE) -> Iterator[CompileWatch]:
    """Within the block, print ``notice`` when numba starts compiling: kernels loaded from the
    on-disk cache raise no compile event, so a warm run prints nothing."""
    from numba.core import event

    class _Listener(event.Listener):
        def on_start(self, ev: Any) -> None:
            watch.on_start(ev)

        def on_end(self, ev: Any) -> None:
            watch.on_end(ev)

    watch = CompileWatch(out, notice)
    with event.install_listener("numba:compile", _Listener()):
        yield watch


def disk_usage(path: Path) -> int:
    """Bytes the files under ``path`` occupy on disk (allocated blocks, as ``du`` counts)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def start_over(workdir: Path) -> None:
    """``--fresh``: remove what a demo run made in ``workdir``, and only that."""
    from ..demo import DEMO_CLUSTERS
    from ..errors import InputError

    archive = workdir / "archive"
    if archive.is_dir():
        extra = {p.name for p in archive.iterdir()} - {"version.txt", *DEMO_CLUSTERS}
        if extra:
            raise InputError(f"--fresh: {archive} holds more than a demo archive ({', '.join(sorted(extra)[:3])}); "
                             "remove it yourself or choose another --workdir")
        shutil.rmtree(archive)
    for name in ("job.db", "state.db"):
        for suffix in ("", "-wal", "-shm", ".creating"):
            (workdir / f"{name}{suffix}").unlink(missing_ok=True)


def run(name: str, args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..jobdb import JobDB
    from .batch import BatchSummary, run_batch

    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    workdir = Path(args.workdir).resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"--workdir {workdir}: exists and is not a directory") from None
    except OSError as e:
        raise InputError(f"--workdir {workdir}: cannot create it: {e.strerror or e}") from None
    if args.fresh:
        start_over(workdir)
    db_path = workdir / "job.db"
    horizon = 10 * 365 * 86400

    def select(_archiver: object) -> list[int]:
        return db.pending_jobs(now=time.time(), grace_s=0, horizon_s=horizon)

    if db_path.exists():  # nothing to do: say so without starting anything
        db = JobDB(db_path)
        if not select(None):
            before = db.counts_by_status()
            archived = before.get(3, 0)
            if args.json:
                BatchSummary().print_json({"workdir": str(workdir), "archive": str(workdir / "archive"),
                                           "jobs_in_db": sum(before.values()), "created": 0,
                                           "archived_before": archived, "archived_now": archived,
                                           "already_complete": True})
            else:
                print(f"ccarchive demo: archive already complete: {archived} jobs in {workdir / 'archive'} "
                      f"({disk_usage(workdir / 'archive') / 1e6:.1f} MB on disk); --fresh rebuilds it")
            return 0
    # importing the archive layer loads (or, the first time, compiles) kernels: watched from here
    t0 = time.perf_counter()
    with watch_compiles(sys.stderr) as watch:
        from ..archive import open_archive
        from ..worker import WorkerConfig, warm_up

        archive = open_archive(str(workdir / "archive"), create=True)  # a bad --workdir fails before the warm-up
        warm_up()
    warm_s, compiled = time.perf_counter() - t0, watch.compiled
    from ..demo import DEMO_CLUSTERS, embedded_cluster

    clusters = {c: embedded_cluster(c) for c in DEMO_CLUSTERS}
    for c in clusters.values():
        if not archive.has_cluster(c.name):
            archive.store_cluster(c)
    created = 0
    if not db_path.exists():
        created = create_job_db(db_path, args.jobs, args.seed, clusters)
    db = JobDB(db_path)
    before = db.counts_by_status()
    config = WorkerConfig(job_db=str(db_path), archive_url=str(workdir / "archive"),
                          state_db=str(workdir / "state.db"), source={"kind": "synthetic", "seed": args.seed})
    summary = run_batch(config, select, progress=not args.no_progress, reconcile_horizon_s=horizon)
    summary.wall_s += warm_s
    summary.warmup_s += warm_s
    summary.warmup_note = ("kernels compiled now, cached for the next runs" if compiled
                           else "worker start, kernels from the on-disk cache")
    after = db.counts_by_status()
    total = sum(after.values())
    if args.json:
        summary.print_json({"workdir": str(workdir), "archive": str(workdir / "archive"), "jobs_in_db": total,
                            "created": created, "archived_before": before.get(3, 0),
                            "archived_now": after.get(3, 0), "kernels_compiled": compiled,
                            "on_disk_bytes": disk_usage(workdir / "archive")})
        return 130 if summary.interrupted else 1 if summary.failed or summary.unfinished else 0
    summary.print(f"ccarchive demo: {workdir}", [
        ("jobs in job.db", f"{total} ({'created now' if created else 'existing'})"),
        ("archived before this run", str(before.get(3, 0))),
        ("archived (status 3) now", str(after.get(3, 0))),
        ("archive", str(workdir / "archive")),
        ("archive on disk", f"{disk_usage(workdir / 'archive') / 1e6:.1f} MB"),
        ("browse", f"ccarchive ls {workdir / 'archive'}"),
    ])
    if summary.interrupted:
        return 130
    return 1 if summary.failed or summary.unfinished else 0
