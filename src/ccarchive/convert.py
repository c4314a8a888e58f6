"""Copy jobs between any two archives (file, S3, SQLite, Parquet), resumable and verified.

Why it works the way it does:

* **Bytes, not objects**, between the JSON backends: meta.json and the (decompressed) data.json
  text are copied exactly as stored, so a legacy entry stays what it was (pretty-printed,
  ``stopTime``...) and nothing is re-rounded.  Gzip is re-applied by the target's own rule.
  A Parquet target decodes them into columns; a Parquet source produces the bytes ccarchive's
  encoders give for the stored job.
* **Resumable**: jobs already complete in the target (meta plus data) are skipped, so an
  interrupted run (or a run against a target that was partly filled before) just continues.
  ``overwrite=True`` copies everything again.
* **Verified**: each job is read back from the target after writing and compared with what was
  read from the source — byte for byte for JSON targets.  For Parquet, each flushed batch's
  files are read back once (not job by job, which would rescan the growing dataset) and each
  job compared with the source by a digest of what its data.json encodes (metric and scope
  names, units, timesteps, hostnames, ids, samples at the stored float32 precision, statistics,
  statisticsSeries) and of its re-encoded meta.json.  A job that does not compare equal is
  reported and, where the backend can, removed again so the next run retries it.
* **Pipelined**: a background thread reads, inflates and decodes the next jobs while the
  current ones are converted to Arrow and written (inflating and Parquet I/O release the GIL).
* Transient failures (S3 endpoint down, database locked) are retried a bounded number of
  times with backoff before the job is reported failed; the run continues with the next job.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .backends import Archive, JobKey
from .backends.parquet import ParquetArchive, start_month, tables_to_data
from .backends.parquet_schema import row_to_job
from .errors import CcArchiveError, TransientError
from .formats.data import _raw_string, decode_job_data, iter_job_data
from .formats.meta import decode_job_meta, encode_job_meta
from .model import Job, JobData

log = logging.getLogger(__name__)
DATA_NAMES = ("data.json", "data.json.gz")


@dataclass
class ConvertReport:
    """What a conversion did; ``ok`` when no job or cluster failed."""

    clusters: int = 0
    total: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def ok(self) -> bool:
        return not self.errors


def complete_keys(archive: Archive, clusters: Iterable[str]) -> set[JobKey]:
    """Keys of the jobs that are complete in ``archive`` (meta.json and a data file present)."""
    out: set[JobKey] = set()
    for c in clusters:
        for e in archive.list_entries(c):
            if "meta.json" in e.names and any(n in e.names for n in DATA_NAMES):
                out.add(e.key)
    return out


def _transient(e: BaseException) -> bool:
    from .backends import is_transient_backend_error

    if isinstance(e, TransientError):
        return True
    import sqlite3

    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return True
    return is_transient_backend_error(e)


def with_retries(fn: Callable[[], Any], what: str, retries: int = 3, backoff: float = 0.5) -> Any:
    """Call ``fn``; retry transient failures ``retries`` times with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == retries or not _transient(e):
                raise
            delay = backoff * 2**attempt
            log.warning("%s: transient failure (%s: %s), retrying in %.1f s", what, type(e).__name__, e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _digest(b: bytes) -> bytes:
    return hashlib.blake2b(b, digest_size=16).digest()


def _label(key: JobKey) -> str:
    return f"job {key[0]}/{key[1]}/{key[2]}"


def _canonical(values: Any, dtype: Any) -> bytes:
    """The array's bytes at ``dtype`` with every NaN (null) the same bit pattern."""
    a = np.array(values, dtype=dtype)  # a copy: NaNs are set below
    a[np.isnan(a)] = np.nan
    return a.tobytes()


def data_digest(data: JobData) -> bytes:
    """A digest of everything data.json encodes of ``data``: two jobs with the same digest encode
    to the same text (samples are compared as float32, the archive's stored precision)."""
    h = hashlib.blake2b(digest_size=16)
    for metric in sorted(data):
        scopes = data[metric] or {}
        h.update(b"M" + metric.encode() + b"\0%d" % len(scopes))
        for scope in sorted(scopes):
            b = scopes[scope]
            h.update(b"S" + scope.encode() + b"\0" + repr((b.unit.base, b.unit.prefix, int(b.timestep),
                                                           list(b.hostnames), list(b.ids))).encode())
            if b.num_series and b.statistics is not None:
                lengths = np.asarray(b.lengths, dtype=np.int64)
                h.update(lengths.tobytes())
                width = int(lengths.max())
                h.update(_canonical(np.asarray(b.data)[:, :width], np.float32))
                has = np.ones(b.num_series, dtype=bool) if b.has_statistics is None else \
                    np.asarray(b.has_statistics, dtype=bool)
                h.update(has.tobytes() + _canonical(np.where(has[:, None], b.statistics, 0.0), np.float64))
            ss = b.statistics_series
            if ss is None:
                h.update(b"-")
                continue
            arrays = [("min", ss.min), ("median", ss.median), ("max", ss.max), ("mean", ss.mean)]
            arrays += sorted((str(k), v) for k, v in (ss.percentiles or {}).items())
            for name, v in arrays:
                h.update(name.encode() + (b"\0-" if v is None else b"\0%d" % len(v) + _canonical(v, np.float64)))
    return h.digest()


def check_encodable(data: JobData) -> None:
    """Raise the FormatError encoding data.json would raise (non-finite statistics, hostnames or
    ids Go cannot write), without encoding the samples."""
    iter_job_data(data)  # checks the statistics of every block before returning
    blocks = [b for scopes in data.values() for b in (scopes or {}).values()]
    for host in set().union(*(b.hostnames for b in blocks)):
        _raw_string(host, "hostname")
    for sid in set().union(*(b.ids for b in blocks)) - {None}:
        _raw_string(str(sid), "series id")


@dataclass
class _Read:
    """One source job, read and decoded (or the error that stopped it)."""

    key: JobKey
    size: int = 0
    meta_raw: bytes = b""
    data_raw: bytes = b""
    job: Job | None = None
    data: JobData | None = None
    error: BaseException | None = None


def _read_job(src: Archive, key: JobKey, decode: bool, retries: int, backoff: float) -> _Read:
    r = _Read(key)
    try:
        r.meta_raw = with_retries(partial(src.load_meta_bytes, key), _label(key), retries, backoff)
        r.data_raw = with_retries(partial(src.load_data_bytes, key), _label(key), retries, backoff)
        r.size = len(r.meta_raw) + len(r.data_raw)
        r.job = decode_job_meta(r.meta_raw)
        if r.job.key != key:
            raise CcArchiveError(f"meta.json describes job {r.job.cluster}/{r.job.job_id}/{r.job.start_time}")
        if decode:
            r.data = decode_job_data(r.data_raw)
            r.data_raw = b""  # the decoded arrays do not refer to it: free it now
    except Exception as e:  # noqa: BLE001 - reported by the caller, per job
        r.error = e
    return r


#: Jobs read ahead of the one being written (bounds the memory of decoded jobs waiting).
READ_AHEAD = 2


def _read_ahead(src: Archive, keys: list[JobKey], decode: bool, retries: int, backoff: float) -> Iterator[_Read]:
    """The jobs of ``keys`` in order, each read by a background thread while earlier ones are written."""
    with ThreadPoolExecutor(1, thread_name_prefix="convert-read") as pool:
        queue: list[Future[_Read]] = []
        it = iter(keys)
        try:
            for key in it:
                queue.append(pool.submit(_read_job, src, key, decode, retries, backoff))
                if len(queue) > READ_AHEAD:
                    yield queue.pop(0).result()
            while queue:
                yield queue.pop(0).result()
        finally:
            for f in queue:
                f.cancel()


def _read_back(dst: ParquetArchive, written: list[str], keys: list[JobKey]) -> dict[JobKey, tuple[bytes, bytes]]:
    """(meta digest, data digest) of each job of ``keys`` as stored in the batch files ``written``."""
    files: dict[str, list[str]] = {}
    for path in written:
        files.setdefault(posixpath.dirname(path), []).append(path)

    def table(name: str, cluster: str, month: str) -> pa.Table:
        paths = files.get(dst.partition_dir(name, cluster, month), [])
        parts = []
        for p in paths:
            with dst.fs.open(p, "rb") as f:
                parts.append(pq.read_table(f))
        return pa.concat_tables(parts, promote_options="default") if parts else pa.table({})

    out: dict[JobKey, tuple[bytes, bytes]] = {}
    by_part: dict[tuple[str, str], list[JobKey]] = {}
    for key in keys:
        by_part.setdefault((key[0], start_month(key[2])), []).append(key)
    for (cluster, month), part_keys in by_part.items():
        jobs, metrics, series = (table(t, cluster, month) for t in ("jobs", "metrics", "series"))
        rows = {(r["job_id"], r["start_time"]): r for r in jobs.to_pylist()}
        for key in part_keys:
            row = rows.get((key[1], key[2]))
            if row is None:
                continue
            flt = (pc.field("job_id") == key[1]) & (pc.field("start_time") == key[2])
            data = tables_to_data(metrics.filter(flt), series.filter(flt))
            out[key] = (_digest(encode_job_meta(row_to_job(cluster, row))), data_digest(data))
    return out


def convert(
    src: Archive,
    dst: Archive,
    *,
    cluster: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
    progress: bool = True,
    batch_jobs: int = 64,
    retries: int = 3,
    backoff: float = 0.5,
) -> ConvertReport:
    """Copy every job (and cluster config) of ``src`` into ``dst``; see the module doc."""
    from tqdm import tqdm

    rep = ConvertReport()
    clusters = [cluster] if cluster else src.clusters()
    rep.clusters = len(clusters)
    for c in clusters:
        try:
            if src.has_cluster(c) and (overwrite or not dst.has_cluster(c)):
                with_retries(partial(dst.store_cluster, src.load_cluster(c)), f"cluster {c}", retries, backoff)
        except (CcArchiveError, OSError) as e:
            rep.errors.append(f"cluster {c}: config not copied: {e}")
    keys = [k for c in clusters for k in src.iter_job_keys(c)]
    rep.total = len(keys)
    done = set() if overwrite else complete_keys(dst, clusters)
    todo = [k for k in keys if k not in done]
    rep.skipped = rep.total - len(todo)
    sink = dst.sink(max_jobs=max(1, batch_jobs)) if isinstance(dst, ParquetArchive) else None
    pending: list[tuple[JobKey, bytes, bytes]] = []  # parquet: (key, meta digest, data digest)
    bar = tqdm(total=rep.total, initial=rep.skipped, unit="job", desc="convert", disable=not progress,
               dynamic_ncols=True)

    def check_pending(written: list[str]) -> None:
        got: dict[JobKey, tuple[bytes, bytes]] = {}
        if verify and isinstance(dst, ParquetArchive):
            try:
                got = _read_back(dst, written, [k for k, _, _ in pending])
            except Exception as e:  # noqa: BLE001 - every job of the batch is unverified
                rep.errors += [f"{_label(k)}: verification failed: {type(e).__name__}: {e}" for k, _, _ in pending]
                pending.clear()
                return
        for key, meta_d, data_d in pending:
            if verify and got.get(key) != (meta_d, data_d):
                what = "not found" if key not in got else "differs from the source"
                rep.errors.append(f"{_label(key)}: verification failed: read back from the target {what}")
            else:
                rep.copied += 1
        pending.clear()

    def flush() -> None:
        if sink is not None and sink.pending:
            try:
                written = with_retries(sink.flush, "parquet batch", retries, backoff)
            except Exception as e:  # noqa: BLE001
                rep.errors += [f"{_label(k)}: not written: {type(e).__name__}: {e}" for k, _, _ in pending]
                pending.clear()
                sink.discard()
                return
            check_pending(written)

    try:
        for r in _read_ahead(src, todo, sink is not None, retries, backoff):
            key = r.key
            rep.bytes_read += r.size
            try:
                if r.error is not None:
                    raise r.error
                assert r.job is not None
                if sink is not None:
                    assert r.data is not None
                    check_encodable(r.data)
                    pending.append((key, _digest(encode_job_meta(r.job)), data_digest(r.data) if verify else b""))
                    sink.add(r.job, r.data, flush_when_full=False)
                    r.data = None
                    if sink.full:
                        flush()
                else:
                    _copy_one(dst, key, r.meta_raw, r.data_raw, verify, retries, backoff)
                    rep.copied += 1
            except Exception as e:  # noqa: BLE001 - one job's failure must not end the run
                rep.errors.append(f"{_label(key)}: {type(e).__name__}: {e}")
            bar.update()
        flush()
    finally:
        bar.close()
    return rep


def _copy_one(dst: Archive, key: JobKey, meta_raw: bytes, data_raw: bytes, verify: bool,
              retries: int, backoff: float) -> None:
    """Write one job's bytes into a JSON backend and compare what reads back."""
    with_retries(lambda: dst.write_encoded(key, data_raw, meta_raw), _label(key), retries, backoff)
    if not verify:
        return
    got_meta = with_retries(lambda: dst.load_meta_bytes(key), _label(key), retries, backoff)
    got_data = with_retries(lambda: dst.load_data_bytes(key), _label(key), retries, backoff)
    if got_meta != meta_raw or got_data != data_raw:
        what = "meta.json" if got_meta != meta_raw else "data.json"
        try:
            dst.delete_job(key)
        except Exception:  # noqa: BLE001 - the mismatch is the error to report
            log.warning("%s: could not remove the mismatching copy", _label(key), exc_info=True)
        raise CcArchiveError(f"verification failed: {what} read back from the target differs from the source")
