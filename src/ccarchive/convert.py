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
  statisticsSeries) and of its re-encoded meta.json.  The source's digest is taken from the
  decoded blocks, the target's straight from the Arrow rows read back (no float64 blocks are
  rebuilt).  A job that does not compare equal is reported and, where the backend can, removed
  again so the next run retries it.
* **Pipelined**: a background thread reads, inflates, decodes and digests the next jobs while
  the current ones are converted to Arrow and written (inflating and Parquet I/O release the
  GIL); a batch's files are read back on threads of their own.
* **Parallel** for Parquet targets: decoding and Arrow conversion hold the GIL, so worker
  processes (one per core) each convert runs of consecutive jobs with a sink of their own — the
  dataset takes any number of writers, and only small reports cross processes (sending decoded
  jobs to one writer was measured slower: pickling the Arrow rows costs more than building them).
  Where forking is unsafe (other threads running, e.g. an S3 client's, or an SQLite source whose
  connection must not cross a fork) jobs are converted here.
* Transient failures (S3 endpoint down, database locked) are retried a bounded number of
  times with backoff before the job is reported failed; the run continues with the next job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from .backends import Archive, JobKey
from .backends.parquet import ParquetArchive, block_bounds, float_lists, start_month
from .backends.parquet_schema import SCHEMAS, row_to_job
from .errors import CcArchiveError
from .formats.data import _raw_string, decode_job_data, iter_job_data
from .formats.meta import decode_job_meta, encode_job_meta
from .model import Job, JobData
from .retry import RetryPolicy, call_with_retries

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


def with_retries(fn: Callable[[], Any], what: str, retries: int = 3, backoff: float = 0.5) -> Any:
    """Call ``fn``; retry transient failures (:func:`ccarchive.retry.is_transient`) ``retries``
    times, waiting ``backoff`` seconds and doubling (no jitter: one operation, not a crowd)."""
    policy = RetryPolicy(max_attempts=retries + 1, base_s=backoff, jitter=False)
    return call_with_retries(fn, what, policy, logger=log)


def _digest(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _label(key: JobKey) -> str:
    return f"job {key[0]}/{key[1]}/{key[2]}"


def _canonical(values: Any, dtype: Any) -> npt.NDArray[Any]:
    """A contiguous copy at ``dtype`` with every NaN (null) the same bit pattern (hashed as it
    is: no bytes copy of the samples)."""
    a = np.array(values, dtype=dtype, order="C")
    np.copyto(a, np.nan, where=np.isnan(a))
    return a


# The digest of a job's data is taken twice: from the decoded source (:func:`data_digest`) and
# from the Arrow rows read back from the dataset (:func:`rows_digest`, without rebuilding the
# float64 blocks).  Both hash the same stream, block by block in sorted metric and scope order:
# what data.json encodes of the block, samples at the stored float32 precision without the
# padding of short series, statistics as the reader rebuilds them.

def _hash_block(h: Any, scope: str, unit: tuple[str, str], timestep: int, hostnames: list[str],
                ids: list[str | None], lengths: npt.NDArray[np.int64]) -> None:
    h.update(b"S" + scope.encode() + b"\0" + repr((unit, timestep, hostnames, ids)).encode() + lengths.tobytes())


def _hash_values(h: Any, samples: Any, has: npt.NDArray[np.bool_], stats: Any) -> None:
    h.update(_canonical(samples, np.float32))
    h.update(has.tobytes() + _canonical(np.where(has[:, None], stats, 0.0), np.float64).tobytes())


def _hash_stats_series(h: Any, arrays: list[tuple[str, Any]] | None) -> None:
    if arrays is None:
        h.update(b"-")
        return
    for name, v in arrays:
        h.update(name.encode() + (b"\0-" if v is None else b"\0%d" % len(v) + _canonical(v, np.float64).tobytes()))


def data_digest(data: JobData) -> bytes:
    """A digest of everything data.json encodes of ``data``: two jobs with the same digest encode
    to the same text (samples are compared as float32, the archive's stored precision)."""
    h = hashlib.sha256()  # hashed with the CPU's SHA instructions where it has them: twice blake2b's speed
    for metric in sorted(data):
        scopes = data[metric] or {}
        h.update(b"M" + metric.encode() + b"\0%d" % len(scopes))
        for scope in sorted(scopes):
            b = scopes[scope]
            n = b.num_series
            lengths = np.asarray(b.lengths, dtype=np.int64).reshape(n)
            _hash_block(h, scope, (b.unit.base, b.unit.prefix), int(b.timestep), list(b.hostnames), list(b.ids),
                        lengths)
            if n:
                values = np.asarray(b.data)
                width = int(lengths.max())
                samples = values[:, :width] if int(lengths.min()) == width else \
                    np.concatenate([values[i, :ln] for i, ln in enumerate(lengths.tolist())])
                has = np.ones(n, dtype=bool) if b.has_statistics is None else np.asarray(b.has_statistics, dtype=bool)
                stats = np.full((n, 3), np.nan) if b.statistics is None else b.statistics
                _hash_values(h, samples, has, stats)
            ss = b.statistics_series
            _hash_stats_series(h, None if ss is None else [
                ("min", ss.min), ("median", ss.median), ("max", ss.max), ("mean", ss.mean),
                *sorted((str(k), v) for k, v in (ss.percentiles or {}).items())])
    return h.digest()


def rows_digest(metrics: pa.Table, series: pa.Table) -> bytes:
    """:func:`data_digest` of the job whose ``metrics`` and ``series`` rows these are, taken from
    the Arrow columns (what ``load_data`` would rebuild from them)."""
    series, bounds = block_bounds(series)
    hostnames, ids = series["hostname"].to_pylist(), series["id"].to_pylist()
    lists = series["data"].combine_chunks()
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    flat = pc.list_flatten(lists).to_numpy(zero_copy_only=False)  # float32, null -> NaN
    stats = np.column_stack([series[k].to_numpy(zero_copy_only=False).astype(np.float64)
                             for k in ("min", "avg", "max")]) if series.num_rows else np.zeros((0, 3))
    has: npt.NDArray[np.bool_] = np.asarray(~np.isnan(stats).any(axis=1), dtype=np.bool_)

    ss_cols = {k: float_lists(metrics[f"stats_{k}"]) for k in ("min", "median", "max", "mean")}
    by_metric: dict[str, dict[str, int]] = {}
    rows = metrics.select(["metric", "scope", "unit_base", "unit_prefix", "timestep", "stats_percentiles"]).to_pylist()
    for i, r in enumerate(rows):
        scopes = by_metric.setdefault(r["metric"], {})
        if r["scope"] is not None:
            scopes[r["scope"]] = i  # the last row of a scope, as load_data takes it
    h = hashlib.sha256()
    for metric in sorted(by_metric):
        scopes = by_metric[metric]
        h.update(b"M" + metric.encode() + b"\0%d" % len(scopes))
        for scope in sorted(scopes):
            i = scopes[scope]
            r = rows[i]
            lo, hi = bounds.get((metric, scope), (0, 0))
            _hash_block(h, scope, (r["unit_base"] or "", r["unit_prefix"] or ""), int(r["timestep"]),
                        hostnames[lo:hi], ids[lo:hi], lengths[lo:hi])
            if hi > lo:
                _hash_values(h, flat[offsets[lo]:offsets[hi]], has[lo:hi], stats[lo:hi])
            pct = r["stats_percentiles"]
            _hash_stats_series(h, None if ss_cols["min"][i] is None else [
                *((k, ss_cols[k][i]) for k in ("min", "median", "max", "mean")),
                *sorted((str(int(k)), np.array([np.nan if x is None else x for x in v], dtype=np.float64))
                        for k, v in pct or [])])
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
    meta_digest: bytes = b""
    data_digest: bytes = b""
    error: BaseException | None = None


def _read_job(src: Archive, key: JobKey, decode: bool, verify: bool, retries: int, backoff: float) -> _Read:
    """Read one job; with ``decode`` also decode it, check it encodes and take its digests (all
    off the writing thread)."""
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
            check_encodable(r.data)
            r.meta_digest = _digest(encode_job_meta(r.job))
            r.data_digest = data_digest(r.data) if verify else b""
    except Exception as e:  # noqa: BLE001 - reported by the caller, per job
        r.error = e
    return r


#: Jobs read ahead of the one being written (bounds the memory of decoded jobs waiting).
READ_AHEAD = 2


def _read_ahead(src: Archive, keys: list[JobKey], decode: bool, verify: bool, retries: int,
                backoff: float) -> Iterator[_Read]:
    """The jobs of ``keys`` in order, each read by a background thread while earlier ones are written."""
    with ThreadPoolExecutor(1, thread_name_prefix="convert-read") as pool:
        queue: list[Future[_Read]] = []
        it = iter(keys)
        try:
            for key in it:
                queue.append(pool.submit(_read_job, src, key, decode, verify, retries, backoff))
                if len(queue) > READ_AHEAD:
                    yield queue.pop(0).result()
            while queue:
                yield queue.pop(0).result()
        finally:
            for f in queue:
                f.cancel()


def _job_runs(table: pa.Table) -> Iterator[tuple[tuple[int, int], pa.Table]]:
    """(job_id, start_time) and rows of each run of one job's rows (files are sorted by job, so a
    job is one run; any order still works: a job's runs are joined by the caller)."""
    n = table.num_rows
    if n == 0:
        return
    jid, st = table["job_id"].to_numpy(), table["start_time"].to_numpy()
    cuts = (np.flatnonzero((jid[1:] != jid[:-1]) | (st[1:] != st[:-1])) + 1).tolist()
    for a, b in zip([0, *cuts], [*cuts, n], strict=True):
        yield (int(jid[a]), int(st[a])), table.slice(a, b - a)


def _read_back(dst: ParquetArchive, written: list[str], keys: list[JobKey]) -> dict[JobKey, tuple[bytes, bytes]]:
    """(meta digest, data digest) of each job of ``keys`` as stored in the batch files ``written``.
    The files are read on a thread each (reading releases the GIL) while earlier partitions are
    digested."""
    files: dict[str, list[str]] = {}
    for path in written:
        files.setdefault(posixpath.dirname(path), []).append(path)
    by_part: dict[tuple[str, str], list[JobKey]] = {}
    for key in keys:
        by_part.setdefault((key[0], start_month(key[2])), []).append(key)
    names = ("jobs", "metrics", "series")
    wanted = {(cluster, month, name): files.get(dst.partition_dir(name, cluster, month), [])
              for cluster, month in by_part for name in names}

    def table(parts: list[pa.Table] | None, name: str) -> pa.Table:
        if not parts:
            return SCHEMAS[name].empty_table()
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")

    out: dict[JobKey, tuple[bytes, bytes]] = {}
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="convert-verify") as pool:
        reads = {k: [pool.submit(dst.read_file, p) for p in paths] for k, paths in wanted.items()}
        for (cluster, month), part_keys in by_part.items():
            rows: dict[str, dict[tuple[int, int], list[pa.Table]]] = {}
            for name in names:
                rows[name] = {}
                for fut in reads.pop((cluster, month, name)):
                    for job, run in _job_runs(fut.result()):
                        rows[name].setdefault(job, []).append(run)
            for key in part_keys:
                job = (key[1], key[2])
                if job not in rows["jobs"]:
                    continue
                row = table(rows["jobs"][job], "jobs").to_pylist()[-1]
                data_d = rows_digest(table(rows["metrics"].get(job), "metrics"),
                                     table(rows["series"].get(job), "series"))
                out[key] = (_digest(encode_job_meta(row_to_job(cluster, row))), data_d)
    return out


@dataclass
class _Settings:
    verify: bool
    batch_jobs: int
    retries: int
    backoff: float


@dataclass
class _Part:
    """What copying some of the jobs did (one worker's share, merged into the report)."""

    copied: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)


def _convert_keys(src: Archive, dst: Archive, keys: list[JobKey], s: _Settings,
                  step: Callable[[], Any] = lambda: None) -> _Part:
    """Copy the jobs of ``keys`` into ``dst`` (a Parquet target: in batches, each read back once)."""
    part = _Part()
    sink = dst.sink(max_jobs=s.batch_jobs) if isinstance(dst, ParquetArchive) else None
    pending: list[tuple[JobKey, bytes, bytes]] = []  # parquet: (key, meta digest, data digest)

    def check_pending(written: list[str]) -> None:
        got: dict[JobKey, tuple[bytes, bytes]] = {}
        if s.verify and isinstance(dst, ParquetArchive):
            try:
                got = _read_back(dst, written, [k for k, _, _ in pending])
            except Exception as e:  # noqa: BLE001 - every job of the batch is unverified
                part.errors += [f"{_label(k)}: verification failed: {type(e).__name__}: {e}" for k, _, _ in pending]
                pending.clear()
                return
        for key, meta_d, data_d in pending:
            if s.verify and got.get(key) != (meta_d, data_d):
                what = "not found" if key not in got else "differs from the source"
                part.errors.append(f"{_label(key)}: verification failed: read back from the target {what}")
            else:
                part.copied += 1
        pending.clear()

    def flush() -> None:
        if sink is not None and sink.pending:
            try:
                written = with_retries(sink.flush, "parquet batch", s.retries, s.backoff)
            except Exception as e:  # noqa: BLE001
                part.errors += [f"{_label(k)}: not written: {type(e).__name__}: {e}" for k, _, _ in pending]
                pending.clear()
                sink.discard()
                return
            check_pending(written)

    for r in _read_ahead(src, keys, sink is not None, s.verify, s.retries, s.backoff):
        key = r.key
        part.bytes_read += r.size
        try:
            if r.error is not None:
                raise r.error
            assert r.job is not None
            if sink is not None:
                assert r.data is not None
                pending.append((key, r.meta_digest, r.data_digest))
                sink.add(r.job, r.data, flush_when_full=False)
                r.data = None
                if sink.full:
                    flush()
            else:
                _copy_one(dst, key, r.meta_raw, r.data_raw, s.verify, s.retries, s.backoff)
                part.copied += 1
        except Exception as e:  # noqa: BLE001 - one job's failure must not end the run
            part.errors.append(f"{_label(key)}: {type(e).__name__}: {e}")
        step()
    flush()
    return part


# -- worker processes (Parquet targets) ------------------------------------------------------------
# Converting to Parquet is CPU work (decoding, Arrow, zstd, reading back), and the dataset takes
# any number of writers: forked workers each convert whole chunks of jobs with their own sink,
# so each chunk is a batch of its own and nothing but the small reports crosses processes.

_WORKER: tuple[Archive, Archive, _Settings] | None = None


def _init_worker(src: Archive, dst: Archive, s: _Settings) -> None:
    global _WORKER
    _WORKER = (src, dst, s)


def _convert_chunk(keys: list[JobKey]) -> _Part:
    assert _WORKER is not None
    return _convert_keys(*_WORKER[:2], keys, _WORKER[2])


def _chunks(keys: list[JobKey], batch_jobs: int, workers: int) -> list[list[JobKey]]:
    """Runs of consecutive jobs (files keep narrow job ranges): four per worker, so that runs of
    large jobs even out, and at most a batch each."""
    size = max(1, min(batch_jobs, -(-len(keys) // (4 * workers))))
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def _fork_safe() -> bool:
    """No other thread runs here that could hold a lock at the fork (tqdm's monitor, left over
    from an earlier progress bar, only sleeps; the workers never touch tqdm)."""
    me = threading.current_thread()
    return all(t is me or t.name == "tqdm_monitor" for t in threading.enumerate())


def _start_pool(src: Archive, dst: Archive, s: _Settings, chunks: list[list[JobKey]],
                workers: int) -> tuple[ProcessPoolExecutor, list[Future[_Part]]] | None:
    """Fork the workers and hand them the chunks, or None where forking is unsafe (other threads
    run in this process, e.g. an S3 client's; an SQLite source), where the workers' files would not
    be seen here (a dataset in this process's memory) or there is too little work to share."""
    import multiprocessing

    from .backends.sqlite import SqliteArchive

    if (workers < 2 or len(chunks) < 2 or not _fork_safe()
            or "forkserver" not in multiprocessing.get_all_start_methods()):
        return None
    if isinstance(src, SqliteArchive) or not (isinstance(dst, ParquetArchive) and dst.is_local):
        return None  # an SQLite connection must not be used across a fork
    try:
        from .kernels.jsonnum import warm_up

        warm_up()  # loaded once here rather than in every worker
    except ImportError:
        pass
    pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_init_worker, initargs=(src, dst, s))
    # the workers come from a fork server (numba's OpenMP runtime does not survive a plain fork)
    return pool, [pool.submit(_convert_chunk, c) for c in chunks]


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
    workers: int | None = None,
) -> ConvertReport:
    """Copy every job (and cluster config) of ``src`` into ``dst``; see the module doc.
    ``workers``: processes converting to a Parquet target (default: one per core; 1 converts here)."""
    from .logs import progress as progress_display
    from .verify import default_workers

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
    s = _Settings(verify, max(1, batch_jobs), retries, backoff)
    n = (default_workers() if workers is None else max(1, workers)) if isinstance(dst, ParquetArchive) else 1
    chunks = _chunks(todo, s.batch_jobs, n)
    started = _start_pool(src, dst, s, chunks, n)
    bar = progress_display(rep.total, "convert", enabled=progress, initial=rep.skipped)
    try:
        if started is None:
            parts = [_convert_keys(src, dst, todo, s, bar.update)]
        else:
            parts = _gather(started[1], chunks, src, dst, s, bar)
    finally:
        bar.close()
        if started is not None:
            started[0].shutdown(wait=True, cancel_futures=True)
    for part in parts:
        rep.copied += part.copied
        rep.bytes_read += part.bytes_read
        rep.errors += part.errors
    return rep


def _gather(futures: list[Future[_Part]], chunks: list[list[JobKey]], src: Archive, dst: Archive, s: _Settings,
            bar: Any) -> list[_Part]:
    """The workers' parts in chunk order; a chunk whose worker died (killed, out of memory) is
    converted again in this process (its rows, if any were written, are superseded)."""
    index = {f: i for i, f in enumerate(futures)}
    parts: dict[int, _Part] = {}
    for fut in as_completed(futures):
        i = index[fut]
        try:
            parts[i] = fut.result()
        except Exception:  # noqa: BLE001
            log.warning("convert: a worker process failed; converting its %d jobs here", len(chunks[i]))
            parts[i] = _convert_keys(src, dst, chunks[i], s)
        bar.update(len(chunks[i]))
    return [parts[i] for i in range(len(chunks))]


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
