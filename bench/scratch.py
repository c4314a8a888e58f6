"""Where the benchmarks write: a directory of their own, not the system's temporary directory.

Why: what creating a file costs depends on the directory's recent history more than one would
think.  On an ext4 file system without a journal (this development machine's root), the kernel
skips every recently deleted inode when it allocates a new one, so after a few thousand
deletions nearby -- a test suite in /tmp, or the previous benchmark's clean-up -- creating a job
entry (a directory and two files) costs 0.5-2 ms of kernel time instead of a few hundredths of a
millisecond.  That cost lands on the archiving worker's writer and would be measured as
ccarchive's, while a production job archive lives in a directory of its own.  So the benchmarks
write under a base directory of their own, a benchmark's runs keep their files until it ends
(the small-job runs share one directory), and :func:`entry_cost_ms` reports what creating an
entry costs where they wrote.

``CCARCHIVE_BENCH_DIR`` names the base directory; by default it is ``bench/.scratch`` in the
checkout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_ENV = "CCARCHIVE_BENCH_DIR"
DEFAULT_BASE = Path(__file__).resolve().parent / ".scratch"

def base_dir() -> Path:
    """The directory the benchmarks' scratch directories are made in (created if missing)."""
    base = Path(os.environ.get(BASE_ENV) or DEFAULT_BASE)
    base.mkdir(parents=True, exist_ok=True)
    return base


@contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A new directory for one benchmark, removed with everything in it at the end."""
    path = Path(tempfile.mkdtemp(prefix=f"ccarchive-bench-{name}-", dir=base_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def entry_cost_ms(where: Path, entries: int = 200) -> float:
    """CPU time (mostly the kernel's) to create a job-entry-like directory in ``where``: the
    directory and two files in it, each written and renamed into place, as the file archive does
    but without the fsyncs (whose cost is the disk's and varies too much to compare directories).
    On a quiet file system this is a few hundredths of a millisecond.  What it creates stays
    (it goes with ``where``): a deletion would slow the next allocations down."""
    probe = Path(tempfile.mkdtemp(prefix="entry-cost-", dir=where))
    t0 = time.thread_time()
    for i in range(entries):
        d = probe / str(i)
        os.mkdir(d)
        for name in ("data.json.gz", "meta.json"):
            tmp = d / f".{name}.partial"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, b"x" * 512)
            finally:
                os.close(fd)
            os.rename(tmp, d / name)
    return (time.thread_time() - t0) / entries * 1000
