"""Reading whole archives: ``verify`` and ``convert`` to Parquet against the straightforward path.

A demo-like archive (``ccarchive demo``'s synthetic jobs through the pipeline) is made in a
temporary folder, then each operation runs twice in the same process:

* **verify** baseline: every job serially, ``json.loads`` of meta.json and data.json, long arrays
  sampled as verify does, and jsonschema's validators (relaxed and strict) walking each document;
  ccarchive: :func:`ccarchive.verify.verify_archive` in one process and with a worker per core.
  The two ccarchive reports must be equal (``identical``).
* **convert** baseline: job by job, ``json.loads`` of data.json into the data model, the Parquet
  sink, and each job read back from the dataset and re-encoded for the comparison (what
  ``convert`` did before it had its own decoder); a second row does the same with ccarchive's
  decoder (``decode_job_data`` of the text), which isolates what the rest of convert gained.
  ccarchive: :func:`ccarchive.convert.convert` in one process and with a lane per core.  All use
  the same Parquet writer (so a faster writer speeds the baselines up too).  ``identical``: every
  job reads back with the same meta.json and data.json from all four datasets.

``load_data`` MB/s against ``json.loads`` is the ``decode`` group's (one job, one core).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.scratch import scratch

VERIFY_SPEEDUP = 10.0
CONVERT_SPEEDUP = 5.0


def _row(case: str, impl: str, seconds: float, nbytes: int, base: float, note: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"group": "reads", "case": case, "impl": impl, "seconds": seconds,
                           "throughput": nbytes / seconds / 1e6, "unit": "MB/s JSON", "vs_baseline": base / seconds}
    if note:
        row["note"] = note
    return row


def _make_archive(tmp: Path, jobs: int) -> str:
    work = os.path.join(tmp, "demo")
    subprocess.run([sys.executable, "-m", "ccarchive", "demo", "--workdir", work, "--jobs", str(jobs),
                    "--seed", "1", "--no-progress"], check=True, stdout=subprocess.DEVNULL, timeout=1800)
    return os.path.join(work, "archive")


def _cpu() -> float:
    """CPU seconds of this process and its finished children: less noisy than wall time on a
    shared machine, and what the parallel runs spend in all."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _json_bytes(archive: Any) -> int:
    return sum(len(archive.load_data_bytes(k)) + len(archive.load_meta_bytes(k)) for k in archive.iter_job_keys())


def verify_baseline(archive: Any) -> int:
    """The straightforward verify: json.loads and jsonschema per job, serial; returns the messages."""
    from ccarchive.validate import _covered, get_validator
    from ccarchive.verify import _skeleton

    found = 0
    for c in archive.clusters():
        for entry in archive.list_entries(c):
            meta = json.loads(archive.load_meta_bytes(entry.key))
            errors: list[str] = []
            data = _skeleton(json.loads(archive.load_data_bytes(entry.key)), entry.rel, errors)
            for relaxed in (True, False):
                found += sum(1 for _ in get_validator("job-meta", relaxed=relaxed).iter_errors(meta))
                found += sum(1 for _ in get_validator("job-data", relaxed=relaxed).iter_errors(data))
                for metric, scopes in data.items():  # type: ignore[union-attr]
                    for scope, jm in scopes.items():
                        if not _covered("job-data", metric, scope):
                            found += sum(1 for _ in get_validator("job-metric-data", relaxed=relaxed).iter_errors(jm))
    return found


def convert_baseline(src: Any, dst: Any, batch_jobs: int = 64, with_json_loads: bool = True) -> int:
    """The straightforward conversion to Parquet: decode (``json.loads``, or ccarchive's decoder of
    the text when ``with_json_loads`` is False), sink, then every job read back from the dataset
    one by one and re-encoded to compare; returns the jobs that compared equal."""
    from ccarchive.formats.data import decode_job_data, encode_job_data
    from ccarchive.formats.meta import decode_job_meta, encode_job_meta

    def digest(b: bytes) -> bytes:
        return hashlib.blake2b(b, digest_size=16).digest()

    sink = dst.sink(max_jobs=batch_jobs)
    pending: list[tuple[Any, bytes, bytes]] = []
    ok = 0

    def flush() -> int:
        sink.flush()
        good = sum(1 for key, m, d in pending if digest(encode_job_meta(dst.load_meta(key))) == m
                   and digest(encode_job_data(dst.load_data(key))) == d)
        pending.clear()
        return good

    for key in src.iter_job_keys():
        job = decode_job_meta(src.load_meta_bytes(key))
        text = src.load_data_bytes(key)
        data = decode_job_data(json.loads(text) if with_json_loads else text)
        pending.append((key, digest(encode_job_meta(job)), digest(encode_job_data(data))))
        sink.add(job, data, flush_when_full=False)
        if sink.full:
            ok += flush()
    return ok + flush()


def _report_lines(rep: Any) -> list[str]:
    return [f"{rep.clusters} {rep.jobs}", *rep.errors, *rep.all_warnings()]


def run(quick: bool) -> list[dict[str, Any]]:
    """Bench rows for verify and convert of a generated archive."""
    from ccarchive.archive import open_archive
    from ccarchive.convert import convert
    from ccarchive.kernels.jsonnum import warm_up
    from ccarchive.verify import default_workers, verify_archive

    warm_up()
    jobs = 12 if quick else 60
    rows: list[dict[str, Any]] = []
    with scratch("reads") as tmp:
        archive = open_archive(_make_archive(tmp, jobs))
        nbytes = _json_bytes(archive)
        case = f"demo archive, {jobs} jobs, {nbytes / 1e6:.0f} MB JSON"

        t0 = time.perf_counter()
        verify_baseline(archive)
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        serial = verify_archive(archive, workers=1)
        t_serial = time.perf_counter() - t0
        workers = default_workers()
        t0 = time.perf_counter()
        parallel = verify_archive(archive)
        t_par = time.perf_counter() - t0
        same = _report_lines(serial) == _report_lines(parallel)
        rows.append(_row(case, "verify: json.loads + jsonschema, serial (baseline)", t_base, nbytes, t_base))
        rows.append(_row(case, "ccarchive verify, 1 process", t_serial, nbytes, t_base))
        par = _row(case, f"ccarchive verify, {workers} worker processes", t_par, nbytes, t_base,
                   f"report identical to the serial one: {same}")
        par["budget"] = f"verify >= {VERIFY_SPEEDUP:.0f}x the baseline"
        par["pass"] = same and t_base / t_par >= VERIFY_SPEEDUP
        par["figure"] = f"{t_base / t_par:.1f}x ({t_base:.1f} s -> {t_par:.1f} s)"
        rows.append(par)

        t0, c0 = time.perf_counter(), _cpu()
        base_ds = open_archive("parquet+" + os.path.join(tmp, "pq-base"), create=True)
        convert_baseline(archive, base_ds)
        t_base, c_base = time.perf_counter() - t0, _cpu() - c0
        t0, c0 = time.perf_counter(), _cpu()
        dec_ds = open_archive("parquet+" + os.path.join(tmp, "pq-decoder"), create=True)
        convert_baseline(archive, dec_ds, with_json_loads=False)
        t_dec, c_dec = time.perf_counter() - t0, _cpu() - c0
        t0, c0 = time.perf_counter(), _cpu()
        one_ds = open_archive("parquet+" + os.path.join(tmp, "pq-one"), create=True)
        rep_one = convert(archive, one_ds, progress=False, workers=1)
        t_one, c_one = time.perf_counter() - t0, _cpu() - c0
        t0, c0 = time.perf_counter(), _cpu()
        ours_ds = open_archive("parquet+" + os.path.join(tmp, "pq-ours"), create=True)
        rep = convert(archive, ours_ds, progress=False, workers=workers)
        t_ours, c_ours = time.perf_counter() - t0, _cpu() - c0
        keys = list(archive.iter_job_keys())
        datasets = (base_ds, dec_ds, one_ds, ours_ds)
        same = rep.ok and rep_one.ok and all(
            len({ds.load_meta_bytes(k) for ds in datasets}) == 1
            and len({ds.load_data_bytes(k) for ds in datasets}) == 1 for k in keys)
        rows.append(_row(case, "convert: json.loads, job by job, read back per job (baseline)", t_base, nbytes,
                         t_base, f"CPU {c_base:.1f} s"))
        rows.append(_row(case, "same with ccarchive's decoder", t_dec, nbytes, t_base,
                         f"CPU {c_dec:.1f} s; ccarchive convert, {workers} lanes, is {t_dec / t_ours:.1f}x this"))
        rows.append(_row(case, "ccarchive convert to Parquet, verified, 1 process", t_one, nbytes, t_base,
                         f"CPU {c_one:.1f} s (all threads)"))
        conv = _row(case, f"ccarchive convert to Parquet, verified, {workers} lanes", t_ours, nbytes,
                    t_base, f"CPU {c_ours:.1f} s (all processes); same jobs read back from all four datasets: {same}")
        conv["budget"] = f"convert >= {CONVERT_SPEEDUP:.0f}x the baseline"
        conv["pass"] = same and t_base / t_ours >= CONVERT_SPEEDUP
        conv["figure"] = f"{t_base / t_ours:.1f}x ({t_base:.1f} s -> {t_ours:.1f} s)"
        rows.append(conv)
    return rows
