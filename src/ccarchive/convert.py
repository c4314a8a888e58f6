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
  read from the source — byte for byte for JSON targets.  For Parquet, in two steps that together
  cover the whole way from the source to the disk without decoding what was just encoded:
  (1) the Arrow rows built for each job must give back the source: a digest of what its
  data.json encodes (metric and scope names, units, timesteps, hostnames, ids, samples at the
  stored float32 precision, statistics, statisticsSeries) taken from the decoded source blocks
  equals the one taken from the rows, and its meta.json re-encoded from its ``jobs`` row as Arrow
  stores it equals the source's — else the job is not written at all (so the next run retries
  it); (2) after each batch is flushed, every file it wrote is read back from the target once and
  must hold the bytes the writer produced (size and CRC-32, summed while writing) and a footer
  with the rows written, else the jobs of its partition are reported failed.  Trusted in between:
  pyarrow's Parquet encoder (the stored bytes are what it produced); decoding every file back
  into Arrow rows would check that too, at more than the cost of all the rest of the checking
  together.  A JSON target's job that does not compare equal is reported and removed again.
* **Pipelined** on one lane: a background thread reads, inflates, decodes and digests the next
  jobs while the current ones are converted to Arrow and written (inflating, decoding and
  Parquet I/O release the GIL).
* **Parallel** for Parquet targets: lanes (one per core) each convert runs of consecutive jobs
  with a sink of their own — the dataset takes any number of writers — the runs getting shorter
  towards the end so that the lanes finish together.  The first two lanes are threads of this
  process that each read their own jobs in turn (inflating, decoding and writing Parquet release
  the GIL; nothing is pickled or imported again, and any source or target works), further ones
  worker processes.
* Transient failures (S3 endpoint down, database locked) are retried a bounded number of
  times with backoff before the job is reported failed; the run continues with the next job.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import posixpath
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from isal.isal_zlib import crc32

from .backends import Archive, JobKey
from .backends import parquet_schema as S
from .backends.parquet import FileSum, ParquetArchive, ParquetSink, block_bounds, float_lists, start_month
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


def _hash_values(h: Any, samples: npt.NDArray[np.float32], has: npt.NDArray[np.bool_], stats: Any) -> None:
    """One block's samples by their count and a CRC-32 of their float32 bytes (a slice of the
    job's canonical samples: every NaN the same quiet NaN), the statistics themselves.  CRC-32 is
    the checksum gzip and Parquet pages use against corruption (every error of up to 32 bits in a
    row found, any other missed with odds of 1 in 4e9) and runs at ten times SHA-256's speed on
    what is almost all of a job's bytes; everything else goes into the SHA-256 as it is."""
    h.update(b"%d:%d" % (samples.size, crc32(samples)))
    h.update(has.tobytes() + _canonical(np.where(has[:, None], stats, 0.0), np.float64).tobytes())


def _hash_missing(h: Any, nulls: npt.NDArray[np.uint8]) -> None:
    """Which of the job's samples are missing (NaN / null), as a bitmap (bit ``i % 8`` of byte
    ``i // 8``, bits past the last sample clear), after its last block: with the CRC-32s of
    the canonical samples, it pins a reader's view of every null slot, whatever its buffer holds."""
    h.update(b"N%d:" % nulls.size + nulls.tobytes())


def _job_samples(blocks: list[tuple[Any, npt.NDArray[np.int64]]]) -> tuple[npt.NDArray[np.float32],
                                                                           npt.NDArray[np.uint8]]:
    """The samples of ``blocks`` ((data, lengths) in digest order) as one float32 array without the
    padding of short series, every NaN the one quiet NaN (one copy of the job's samples, cut into
    the blocks' slices for their CRC-32s; this thread's scratch, valid until its next call), and
    the bitmap of its NaNs (:func:`_hash_missing`)."""
    flat = S.scratch("digest samples", sum(int(ln.sum()) for _, ln in blocks), np.float32)
    pos = 0
    for values, ln in blocks:
        n = len(ln)
        width = int(ln.max()) if n else 0
        if n and int(ln.min()) == width:
            flat[pos:pos + n * width].reshape(n, width)[...] = values[:, :width]
            pos += n * width
        else:
            for i, length in enumerate(ln.tolist()):
                flat[pos:pos + length] = values[i, :length]
                pos += length
    nan = np.isnan(flat, out=S.scratch("digest nan", len(flat), np.bool_))
    np.copyto(flat, np.float32(np.nan), where=nan)
    return flat, np.packbits(nan, bitorder="little")


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
    order = [(metric, sorted(data[metric] or {})) for metric in sorted(data)]
    blocks = [data[metric][scope] for metric, scopes in order for scope in scopes]
    lengths = [np.asarray(b.lengths, dtype=np.int64).reshape(b.num_series) for b in blocks]
    flat, nan = _job_samples([(np.asarray(b.data), ln) for b, ln in zip(blocks, lengths, strict=True) if len(ln)])
    it = iter(zip(blocks, lengths, strict=True))
    pos = 0
    for metric, scopes in order:
        h.update(b"M" + metric.encode() + b"\0%d" % len(scopes))
        for scope in scopes:
            b, ln = next(it)
            n = b.num_series
            _hash_block(h, scope, (b.unit.base, b.unit.prefix), int(b.timestep), list(b.hostnames), list(b.ids), ln)
            if n:
                size = int(ln.sum())
                has = np.ones(n, dtype=bool) if b.has_statistics is None else np.asarray(b.has_statistics, dtype=bool)
                stats = np.full((n, 3), np.nan) if b.statistics is None else b.statistics
                _hash_values(h, flat[pos:pos + size], has, stats)
                pos += size
            ss = b.statistics_series
            _hash_stats_series(h, None if ss is None else [
                ("min", ss.min), ("median", ss.median), ("max", ss.max), ("mean", ss.mean),
                *sorted((str(k), v) for k, v in (ss.percentiles or {}).items())])
    _hash_missing(h, nan)
    return h.digest()


def rows_digest(metrics: pa.Table, series: pa.Table) -> bytes:
    """:func:`data_digest` of the job whose ``metrics`` and ``series`` rows these are, taken from
    the Arrow columns (what ``load_data`` would rebuild from them)."""
    h = hashlib.sha256()
    hash_rows(h, metrics, series)
    return h.digest()


def _float32_view(values: pa.Array) -> npt.NDArray[np.float32]:
    """The values buffer of a float32 array as numpy, null slots included (no copy)."""
    return np.frombuffer(values.buffers()[1], dtype=np.float32, count=len(values), offset=4 * values.offset)


def _packed_nulls(values: pa.Array, ranges: list[tuple[int, int]]) -> npt.NDArray[np.uint8]:
    """The null bitmap of ``values[a:b]`` for the ``ranges`` one after the other (as
    :func:`_job_samples` packs the source's NaNs): the array's own validity bitmap, inverted,
    when the ranges are the whole array in order; else unpacked, cut and packed again."""
    n = len(values)
    whole = [(a, b) for a, b in ranges if b > a]
    validity = values.buffers()[0]
    if whole and whole[0][0] == 0 and whole[-1][1] == n and all(
            whole[i][1] == whole[i + 1][0] for i in range(len(whole) - 1)):
        if validity is None or values.null_count == 0:
            return np.zeros(-(-n // 8), dtype=np.uint8)
        if values.offset % 8 == 0:
            start = values.offset // 8
            nulls = np.invert(np.frombuffer(validity, dtype=np.uint8)[start:start + -(-n // 8)])
            if n % 8:
                nulls[-1] &= (1 << (n % 8)) - 1
            return nulls
    missing = values.is_null().to_numpy(zero_copy_only=False)
    return np.packbits(np.concatenate([missing[a:b] for a, b in whole] or [np.zeros(0, dtype=bool)]),
                       bitorder="little")


def hash_rows(h: Any, metrics: pa.Table, series: pa.Table) -> None:
    """Feed ``h`` what :func:`rows_digest` hashes of these rows (metric by metric in sorted order)."""
    given = series
    series, bounds = block_bounds(series)
    hostnames, ids = series["hostname"].to_pylist(), series["id"].to_pylist()
    lists = series["data"]
    lists = lists.chunk(0) if lists.num_chunks == 1 else lists.combine_chunks()
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy().astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    # The float32 values buffer as it is, null slots included, and the null bitmap on its own: equal
    # to the source's canonical samples and NaN bitmap, every valid value is the source's and every
    # null stands for a NaN of it.  data_rows writes the quiet NaN into the null slots; rows whose
    # null slots hold anything else never compare equal (a false alarm, never a false pass), so
    # rows that had to be sorted first (Arrow's take leaves null slots undefined) are hashed from
    # a copy with the quiet NaN filled in.
    values = pc.list_flatten(lists)
    flat = _float32_view(values if series is given or not values.null_count else
                         pc.fill_null(values, pa.scalar(np.nan, pa.float32())))
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
    ranges: list[tuple[int, int]] = []
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
                ranges.append((offsets[lo], offsets[hi]))
                _hash_values(h, flat[offsets[lo]:offsets[hi]], has[lo:hi], stats[lo:hi])
            pct = r["stats_percentiles"]
            _hash_stats_series(h, None if ss_cols["min"][i] is None else [
                *((k, ss_cols[k][i]) for k in ("min", "median", "max", "mean")),
                *sorted((str(int(k)), np.array([np.nan if x is None else x for x in v], dtype=np.float64))
                        for k, v in pct or [])])
    _hash_missing(h, _packed_nulls(values, ranges))


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
        text = with_retries(partial(src.load_data_text if decode else src.load_data_bytes, key), _label(key),
                            retries, backoff)
        r.size = len(r.meta_raw) + len(text)
        r.job = decode_job_meta(r.meta_raw)
        if r.job.key != key:
            raise CcArchiveError(f"meta.json describes job {r.job.cluster}/{r.job.job_id}/{r.job.start_time}")
        if not decode:
            r.data_raw = bytes(text)
        else:
            r.data = decode_job_data(text)  # the decoded arrays do not refer to the text
            del text
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


def stored_meta_digest(job: Job) -> bytes:
    """The digest of the meta.json that the job's ``jobs`` row, as Arrow stores it, gives back."""
    row = S.job_row(job)
    row["archived_at"], row["batch"] = 0, ""
    stored = pa.Table.from_pylist([row], schema=S.JOBS).to_pylist()[0]
    return _digest(encode_job_meta(S.row_to_job(job.cluster, stored)))


def _unreadable(dst: ParquetArchive, written: dict[str, FileSum]) -> dict[str, str]:
    """The files of ``written`` that do not read back from the target as written, with why."""
    bad: dict[str, str] = {}
    for path, want in written.items():
        try:
            problem = dst.check_file(path, want)
        except Exception as e:  # noqa: BLE001 - a file that cannot be read back is not verified
            problem = f"{type(e).__name__}: {e}"
        if problem:
            bad[path] = problem
    return bad


#: Samples (Arrow bytes) a Parquet batch holds before it is flushed.  Large jobs go into their
#: batch's files too (only one larger than this streams into a file of its own): a job's rows are
#: built whole anyway, and a file per large job costs a writer, a footer and an fsync that a lane
#: waits for (60 demo jobs: 30 files written instead of 56, same CPU).
BATCH_BYTES = 256 << 20


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
                  step: Callable[[], Any] = lambda: None, reads: Iterable[_Read] | None = None) -> _Part:
    """Copy the jobs of ``keys`` into ``dst`` (a Parquet target: in batches, each read back once).
    ``reads``: those jobs as they are read (a lane's); by default a background thread reads
    ahead while the jobs before are written."""
    part = _Part()
    sink = dst.sink(max_jobs=s.batch_jobs, max_bytes=BATCH_BYTES, stream_job_bytes=BATCH_BYTES) \
        if isinstance(dst, ParquetArchive) else None
    pending: list[JobKey] = []  # parquet: jobs added to the batch, their rows checked against the source

    def check_pending() -> None:
        """Read the batch's files back: a job counts as copied when every file written for its
        partition reads back as written."""
        assert isinstance(dst, ParquetArchive) and sink is not None
        bad = _unreadable(dst, sink.written) if s.verify else {}
        bad_dirs = {posixpath.dirname(p): why for p, why in bad.items()}
        for key in pending:
            part_dirs = [dst.partition_dir(t, key[0], start_month(key[2])) for t in ("jobs", "metrics", "series")]
            why = next((bad_dirs[d] for d in part_dirs if d in bad_dirs), None)
            if why is not None:
                part.errors.append(f"{_label(key)}: verification failed: a file of its batch does not read back "
                                   f"from the target as written ({why})")
            else:
                part.copied += 1
        pending.clear()

    def flush() -> None:
        if sink is not None and sink.pending:
            try:
                with_retries(sink.flush, "parquet batch", s.retries, s.backoff)
            except Exception as e:  # noqa: BLE001
                part.errors += [f"{_label(k)}: not written: {type(e).__name__}: {e}" for k in pending]
                pending.clear()
                sink.discard()
                return
            check_pending()

    if reads is None:
        reads = _read_ahead(src, keys, sink is not None, s.verify, s.retries, s.backoff)
    for r in reads:
        key = r.key
        part.bytes_read += r.size
        try:
            if r.error is not None:
                raise r.error
            assert r.job is not None
            if sink is not None:
                assert r.data is not None
                _add_checked(sink, r, s.verify)
                pending.append(key)
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


def _add_checked(sink: ParquetSink, r: _Read, verify: bool) -> None:
    """Add one job to the batch; with ``verify`` its rows must give back the source's digests
    first (else nothing of it is written)."""
    assert r.job is not None and r.data is not None
    try:
        metrics, series = sink.add_data(r.job, r.data)
        if verify:
            data_d = rows_digest(metrics, series)
            if (data_d, stored_meta_digest(r.job)) != (r.data_digest, r.meta_digest):
                what = "data.json" if data_d != r.data_digest else "meta.json"
                raise CcArchiveError(f"verification failed: the Parquet rows do not give back the source's {what}")
    except BaseException:
        sink.abandon()
        raise
    sink.add(r.job, flush_when_full=False)


# -- lanes (Parquet targets) -----------------------------------------------------------------------
# Converting to Parquet is CPU work (inflating, decoding, Arrow, zstd, checking), and the dataset
# takes any number of writers: lanes each take the next chunk of consecutive jobs and convert it
# with a sink of their own, so each chunk is a batch of its own.  The first lanes are threads of
# this process: inflating, decoding and Parquet writing release the GIL, so two keep two cores
# busy without pickling anything or importing everything again (measured: less CPU in all and a
# little faster than a worker process per core), and any source or target works.  More lanes
# than that would mostly wait for each other's GIL-bound parts (Arrow conversion, digests): they
# are worker processes (from a fork server: numba's OpenMP runtime does not survive a plain fork),
# each converting one chunk at a time, where the source and target allow it.

#: Lanes run as threads of this process; further lanes are worker processes.
THREAD_LANES = 2

_WORKER: tuple[Archive, Archive, _Settings] | None = None


@contextmanager
def _lean_memory() -> Iterator[None]:
    """While converting: Arrow buffers from jemalloc (the default pool, mimalloc, faults in fresh
    zeroed pages for much of what each job allocates again: most of a second of system time per
    60 demo jobs), and the objects that exist already (modules, mostly) left out of the garbage
    collector's full passes over the many objects each job makes.  The scratch arrays this thread
    used for the jobs are freed after (the lanes' and readers' threads end with the run)."""
    before = pa.default_memory_pool()
    pa.set_memory_pool(S.writer_pool())
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        pa.set_memory_pool(before)
        S.drop_scratch()


def _init_worker(src: Archive, dst: Archive, s: _Settings) -> None:
    global _WORKER
    _WORKER = (src, dst, s)
    pa.set_memory_pool(S.writer_pool())  # as _lean_memory does, for the worker's life
    gc.freeze()


def _convert_chunk(keys: list[JobKey]) -> _Part:
    assert _WORKER is not None
    return _convert_keys(*_WORKER[:2], keys, _WORKER[2])


#: Jobs in the shortest chunk (the last ones): each chunk is a batch with files of its own (three
#: per partition, each written, synced and read back).
MIN_CHUNK = 3


def _chunks(keys: list[JobKey], batch_jobs: int, workers: int) -> list[list[JobKey]]:
    """Runs of consecutive jobs (files keep narrow job ranges), at most a batch each, getting
    shorter towards the end (each 1 / (2 x lanes) of the jobs left, at least :data:`MIN_CHUNK`):
    lanes start on long runs and end on short ones, so the last lane to finish (its batch
    flushed alone) is not far behind the others, whatever the jobs' sizes."""
    out: list[list[JobKey]] = []
    i = 0
    while i < len(keys):
        size = max(MIN_CHUNK, min(batch_jobs, -(-(len(keys) - i) // (2 * workers))))
        out.append(keys[i:i + size])
        i += size
    return out


def _start_workers(src: Archive, dst: Archive, s: _Settings, chunks: list[list[JobKey]],
                   workers: int) -> tuple[ProcessPoolExecutor | None, list[Future[_Part]]]:
    """Start ``workers`` worker processes and hand them all chunks (the lanes here take chunks
    back from the end, see :func:`_run_lanes`); none where no fork server exists, where an SQLite
    source's connection would have to cross processes, or where the workers' files would not be
    seen here (a dataset in this process's memory)."""
    import multiprocessing

    from .backends.sqlite import SqliteArchive

    if (workers < 1 or "forkserver" not in multiprocessing.get_all_start_methods() or isinstance(src, SqliteArchive)
            or not (isinstance(dst, ParquetArchive) and dst.is_local)):
        return None, []
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_init_worker, initargs=(src, dst, s))
    return pool, [pool.submit(_convert_chunk, c) for c in chunks]


def _run_lanes(src: Archive, dst: Archive, s: _Settings, chunks: list[list[JobKey]], lanes: int,
               bar: Any) -> list[_Part]:
    """Convert ``chunks`` on ``lanes`` lanes: up to :data:`THREAD_LANES` threads here (this one
    included), each taking the next chunk when done with one, and worker processes for the rest.
    With workers, the threads take chunks from the last one back (those no worker has started)
    while the workers take them from the first on.  A chunk whose worker died (killed, out of
    memory) is converted again here (its rows, if any were written, are superseded).  Returns
    the parts in chunk order."""
    here = min(lanes, THREAD_LANES)
    pool, futures = _start_workers(src, dst, s, chunks, lanes - here)
    parts: dict[int, _Part] = {}
    order = iter(range(len(chunks) - 1, -1, -1) if futures else range(len(chunks)))
    lock, stop = threading.Lock(), threading.Event()

    def take() -> int:
        with lock:
            i = next(order, -1)
            if i >= 0 and futures and not futures[i].cancel():
                return -1  # a worker has this chunk (and every one before it)
            return i

    def lane() -> None:
        while not stop.is_set() and (i := take()) >= 0:
            # each job read when its turn comes: the other lanes keep the cores busy meanwhile,
            # and a read-ahead thread per lane would cost more in GIL hand-overs than it saves
            reads = (_read_job(src, key, True, s.verify, s.retries, s.backoff) for key in chunks[i])
            parts[i] = _convert_keys(src, dst, chunks[i], s, reads=reads)
            with lock:
                bar.update(len(chunks[i]))

    try:
        with ThreadPoolExecutor(max(1, here - 1), thread_name_prefix="convert-lane") as threads:
            others = [threads.submit(lane) for _ in range(here - 1)]
            try:
                lane()
                for other in others:
                    other.result()
            finally:
                stop.set()  # an interrupted run: the other lanes end after their current chunk
        index = {f: i for i, f in enumerate(futures) if i not in parts}
        for fut in as_completed(index):
            i = index[fut]
            try:
                parts[i] = fut.result()
            except Exception:  # noqa: BLE001
                log.warning("convert: a worker process failed; converting its %d jobs here", len(chunks[i]))
                parts[i] = _convert_keys(src, dst, chunks[i], s)
            bar.update(len(chunks[i]))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return [parts[i] for i in range(len(chunks))]


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
    ``workers``: lanes converting to a Parquet target in parallel, this thread included
    (default: one per core; see :data:`THREAD_LANES`)."""
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
    bar = progress_display(rep.total, "convert", enabled=progress, initial=rep.skipped)
    try:
        with _lean_memory():
            if n < 2 or len(chunks) < 2:
                parts = [_convert_keys(src, dst, todo, s, bar.update)]
            else:
                parts = _run_lanes(src, dst, s, chunks, min(n, len(chunks)), bar)
    finally:
        bar.close()
    for part in parts:
        rep.copied += part.copied
        rep.bytes_read += part.bytes_read
        rep.errors += part.errors
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
