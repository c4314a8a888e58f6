"""data.json decoding throughput: the number kernel against ``json.loads`` + numpy.

Throughput is MB/s of JSON text (the decompressed data.json) for every row, so ``vs_baseline`` is
the ratio of times to the straightforward decoder: ``json.loads`` into Python lists, then numpy
arrays (what ``decode_job_data`` did before the kernel, and still does for an already decoded
object).  Two shapes: a 64-node job as the demo archives it (node scope, compact Go output) and
cc-backend's real emmy test job (pretty-printed, 15-digit decimals).  ``load_data`` rows are the
library call on a file archive, gunzip included (one core: the kernel and the inflater run on
the caller's thread; data.json.gz is inflated straight into the parse buffer); its budget is
>= 300 MB/s of JSON text, judged on the whole 7-day job (with ``--quick`` only on emmy: a
quarter of the job has the same per-series work on less text).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.scratch import scratch

#: cc-backend's emmy test job: real, pretty-printed legacy data.json.
EMMY_ARCHIVE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cc-backend" / "archive"
EMMY_KEY = ("emmy", 1403244, 1608923076)
LOAD_BUDGET_MBS = 300.0


def _best(fn: Callable[[], Any], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _row(case: str, impl: str, seconds: float, nbytes: int, base_seconds: float, note: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {
        "group": "decode", "case": case, "impl": impl, "seconds": seconds,
        "throughput": nbytes / seconds / 1e6, "unit": "MB/s", "vs_baseline": base_seconds / seconds,
    }
    if note:
        row["note"] = note
    return row


def _demo_job_archive(tmp: Path, samples: int) -> tuple[Any, tuple[str, int, int]]:
    """A 64-node fritz job archived by ccarchive from the synthetic source, as the demo does."""
    from ccarchive.archive import open_archive
    from ccarchive.core import archive_job
    from ccarchive.demo import embedded_cluster
    from ccarchive.sources.synthetic import SyntheticSource, synthetic_job

    cluster = embedded_cluster("fritz")
    job = synthetic_job(cluster, "main", 4242, 1_767_225_600, 64, (samples - 1) * 60, seed=7)
    archive = open_archive(os.path.join(tmp, "archive"), create=True)
    archive_job(job, source=SyntheticSource(seed=7), archive=archive, cluster=cluster,
                core_scope_max_nodes=0, keep_data=False)
    return archive, job.key


def _case_rows(case: str, archive: Any, key: tuple[str, int, int], repeats: int, judged: bool) -> list[dict[str, Any]]:
    import json

    from ccarchive.formats import compress
    from ccarchive.formats.data import decode_job_data

    gz = archive.fs.cat_file(archive.job_dir(key) + "/data.json.gz")
    text = compress.gunzip_bytes(gz)
    n = len(text)
    t_base = _best(lambda: decode_job_data(json.loads(text)), max(1, repeats // 3))
    t_ours = _best(lambda: decode_job_data(text), repeats)
    t_load = _best(lambda: archive.load_data(key), repeats)
    t_zng = _best(lambda: decode_job_data(compress.gunzip_array(gz)), repeats)
    t_isal = _best(lambda: compress.gunzip_bytes(gz), repeats)
    t_into = _best(lambda: compress.gunzip_array(gz), repeats)
    load = _row(case, "ccarchive load_data (file archive, .gz)", t_load, n, t_base,
                "gunzip (zlib-ng, into an array) + decode" + ("" if judged else "; budget judged at full size"))
    if judged:  # a quarter of the job: the per-series work (~5 ms for 1216 series) weighs more
        load["budget"] = f"load_data >= {LOAD_BUDGET_MBS:.0f} MB/s one core"
        load["pass"] = load["throughput"] >= LOAD_BUDGET_MBS
    return [
        _row(case, "json.loads + numpy (baseline)", t_base, n, t_base, f"{n / 1e6:.1f} MB of JSON text"),
        _row(case, "ccarchive decode_job_data", t_ours, n, t_base, "text already in memory"),
        load,
        _row(case, "gunzip_array (zlib-ng) + decode_job_data", t_zng, n, t_base, "inflated into the parse buffer"),
        _row(case, "gunzip only: ISA-L to bytes", t_isal, n, t_base, "gunzip_bytes"),
        _row(case, "gunzip only: zlib-ng into an array", t_into, n, t_base, "gunzip_array"),
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Bench rows for data.json decoding (MB/s of JSON text)."""
    from ccarchive.archive import open_archive
    from ccarchive.kernels.jsonnum import warm_up

    warm_up()
    repeats = 3 if quick else 7
    samples = 2520 if quick else 10080
    rows: list[dict[str, Any]] = []
    with scratch("decode") as tmp:
        archive, key = _demo_job_archive(tmp, samples)
        rows += _case_rows(f"64-node job, {samples} samples", archive, key, repeats, judged=not quick)
    if (EMMY_ARCHIVE / "version.txt").exists():
        rows += _case_rows("emmy fixture (pretty-printed)", open_archive(str(EMMY_ARCHIVE)), EMMY_KEY, repeats,
                           judged=True)
    return rows
