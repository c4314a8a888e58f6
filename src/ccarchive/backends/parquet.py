"""The Arrow/Parquet form of the archive: columnar tables that DuckDB, Polars, pandas, Spark or
Trino scan in place, written with pyarrow through fsspec (local disk, S3, ...).

Why this shape: analysis asks "mean flops_any per user" over thousands of jobs or
"the series of job X"; neither should decompress whole jobs.  So there is no JSON in a column
(cc-backend's Parquet export stores gzipped JSON); instead three tables, Hive-partitioned by
``cluster=`` and ``start_month=`` (UTC ``YYYY-MM`` of the start time)::

    <root>/_ccarchive_parquet.json                       marker: format name and version
    <root>/clusters/<cluster>.json                       cluster.json
    <root>/jobs/cluster=<c>/start_month=<m>/part-<utc time>-<uuid>.parquet      one row per job
    <root>/metrics/cluster=<c>/start_month=<m>/part-...parquet    one row per (job, metric, scope)
    <root>/series/cluster=<c>/start_month=<m>/part-...parquet     one row per series

Append-only: each flushed batch of jobs writes one new file per table and partition, never
rewriting older files; names carry the UTC time and a random UUID, so any number of writers can
share a dataset.  Files are written whole (temporary hidden name + rename locally, one PUT on
object stores); ``series`` and ``metrics`` files go first and ``jobs`` files last, so a job row
is only visible once its data is.  Re-archiving a job appends a newer row; readers take the row
with the latest ``archived_at`` and the data rows of the same ``batch``.  Everything needed to
rebuild meta.json and data.json byte for byte is stored (samples as ``list<float32>`` — the
archive's own precision —, statistics and statisticsSeries as float64).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import fsspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from isal.isal_zlib import crc32

from ..atomicio import TMP_PREFIX, AtomicFile, put_atomic
from ..cluster import Cluster, encode_cluster, load_cluster
from ..errors import ClusterConfigError, FormatError, InputError
from ..formats.data import decode_job_data, encode_job_data
from ..formats.meta import decode_job_meta, encode_job_meta
from ..jobstable import Layout
from ..model import FloatArray, Job, JobData, JobMetric, StatsSeries, Unit
from ..names import check_cluster_name, check_key_int, is_cluster_name, is_job_key
from . import Entry, JobKey, WriteResult, job_path, key_of
from . import parquet_schema as S

MARKER = "_ccarchive_parquet.json"
FORMAT_NAME, FORMAT_VERSION = "ccarchive-parquet", 1
TABLES = ("jobs", "metrics", "series")
ROW_GROUP_BYTES = 32 << 20
#: A job whose series reach this many bytes (float32 Arrow) is streamed into a file of its own,
#: row group by row group, instead of waiting in memory for the batch: memory stays bounded by
#: about this much however large the job.
STREAM_JOB_BYTES = 4 << 20


#: ``start_month`` partition values are four-digit years: start times up to 9999-12-31 23:59:59 UTC
MAX_START_TIME = 253402300799
_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")


def start_month(start_time: int) -> str:
    """The ``start_month`` partition value: UTC ``YYYY-MM`` of a unix time."""
    start_time = check_key_int(start_time, "start time")
    if start_time > MAX_START_TIME:
        raise InputError(f"start time {start_time} is after the year 9999 (the Parquet dataset is partitioned "
                         f"by the UTC month of the start time)")
    t = time.gmtime(start_time)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}"


def is_parquet_dataset(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``url`` holds a ccarchive Parquet dataset (its marker file)."""
    try:
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return bool(fs.exists(posixpath.join(root, MARKER)))
    except Exception:  # noqa: BLE001 - any failure means "not recognisably a dataset"
        return False


class ParquetArchive:
    """A ccarchive Parquet dataset: the archive read API plus a batching writer (:meth:`sink`)."""

    stores_gzip = False  # samples go into Parquet columns

    def __init__(self, url: str, *, create: bool = False, storage_options: dict[str, Any] | None = None):
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/") or "/"
        self._local = isinstance(self.fs, LocalFileSystem)
        if self._local:
            import pyarrow.fs as pafs

            self._pafs: Any = pafs.LocalFileSystem()
        else:
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            self._pafs = PyFileSystem(FSSpecHandler(self.fs))
        self._clusters: dict[str, Cluster] = {}
        self._check_marker(create)

    @property
    def is_local(self) -> bool:
        """True for a dataset on the local disk (which other processes see as this one does)."""
        return self._local

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def _check_marker(self, create: bool) -> None:
        try:
            raw = self.fs.cat_file(self._p(MARKER))
        except FileNotFoundError:
            if not create:
                raise InputError(f"{self.url}: not a ccarchive Parquet dataset (no {MARKER})") from None
            doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tables": list(TABLES),
                   "partitioning": ["cluster", "start_month"]}
            self.put(self._p(MARKER), (json.dumps(doc, indent=1) + "\n").encode())
            return
        try:
            doc = json.loads(raw)
            ok = doc.get("format") == FORMAT_NAME and int(doc.get("version", 0)) == FORMAT_VERSION
        except (ValueError, AttributeError, TypeError):
            ok = False
        if not ok:
            raise FormatError(f"{self.url}/{MARKER}: not format {FORMAT_NAME} version {FORMAT_VERSION}")

    def put(self, path: str, payload: bytes) -> None:
        """Write one whole file atomically (:class:`~ccarchive.atomicio.AtomicFile`)."""
        put_atomic(self.fs, path, payload)

    def partition_dir(self, table: str, cluster: str, month: str) -> str:
        """``<root>/<table>/cluster=<c>/start_month=<m>``, the cluster name checked first."""
        return self._p(table, _segment("cluster", check_cluster_name(cluster)), _segment("start_month", month))

    def _cluster_file(self, name: str) -> str:
        return self._p("clusters", f"{check_cluster_name(name)}.json")

    # -- clusters ---------------------------------------------------------------------------------
    def clusters(self) -> list[str]:
        """Clusters with a stored config or with jobs, sorted (names that are not valid cluster
        names, which ccarchive never writes, are left out)."""
        names = {posixpath.basename(p)[:-5] for p in self._ls(self._p("clusters")) if p.endswith(".json")}
        names |= {v for v in (_partition_value(p, "cluster") for p in self._ls(self._p("jobs"))) if v}
        return sorted(n for n in names if is_cluster_name(n))

    def _ls(self, path: str) -> list[str]:
        try:
            return [p.rstrip("/") for p in self.fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []

    def has_cluster(self, name: str) -> bool:
        return bool(self.fs.exists(self._cluster_file(name)))

    def load_cluster_bytes(self, name: str) -> bytes:
        return bytes(self.fs.cat_file(self._cluster_file(name)))

    def load_cluster(self, name: str) -> Cluster:
        if name not in self._clusters:
            try:
                raw = self.load_cluster_bytes(name)
            except FileNotFoundError:
                raise ClusterConfigError(f"{self.url}: unknown cluster {name!r} (no clusters/{name}.json)") from None
            self._clusters[name] = load_cluster(raw, name_hint=f"clusters/{name}.json")
        return self._clusters[name]

    def store_cluster(self, cluster: Cluster) -> None:
        self.put(self._cluster_file(cluster.name), encode_cluster(cluster))
        self._clusters[cluster.name] = cluster

    def stored_clusters(self) -> list[Cluster]:
        """The cluster configs stored in the dataset that load (the flat columns of ``jobs``
        files follow them); a broken one is left out rather than stopping a flush."""
        out = []
        for name in self.clusters():
            try:
                out.append(self.load_cluster(name))
            except (ClusterConfigError, FormatError, InputError):
                continue
        return out

    # -- writing ----------------------------------------------------------------------------------
    def sink(self, *, max_jobs: int = 256, max_bytes: int = 256 << 20,
             stream_job_bytes: int = STREAM_JOB_BYTES) -> ParquetSink:
        """A batching writer: ``add(job, data)`` buffers, ``flush()`` writes one file per table and
        partition (also automatically past ``max_jobs`` jobs or ``max_bytes`` of samples); a job
        larger than ``stream_job_bytes`` streams into a series file of its own."""
        return ParquetSink(self, max_jobs=max_jobs, max_bytes=max_bytes, stream_job_bytes=stream_job_bytes)

    def write_job(self, job: Job, data: JobData) -> WriteResult:
        """One job as its own batch (prefer :meth:`sink` for many jobs: fewer, larger files)."""
        sink = self.sink()
        sink.add(job, data)
        files = sink.flush()
        size = sum(int(self.fs.size(f)) for f in files)
        return WriteResult(self._p("jobs"), "series", size, 0)

    def write_encoded(self, job: Job | JobKey, encoded_data: bytes, meta: bytes, *,
                      gzipped: bytes | Callable[[], bytes] | None = None) -> WriteResult:
        """Add a job from its encoded data.json and meta.json (``gzipped`` is not needed here)."""
        decoded = decode_job_meta(meta)
        if decoded.key != key_of(job):
            raise InputError(f"{self.url}: meta.json describes {decoded.label}, not {job_path(*key_of(job))}")
        return self.write_job(decoded, decode_job_data(encoded_data))

    def delete_job(self, job: Job | JobKey) -> None:
        key_of(job)  # a bad key is reported as such, like on every other backend
        raise InputError(f"{self.url}: the Parquet dataset is append-only; jobs cannot be deleted "
                         f"(archive the job again to supersede it)")

    # -- reading ----------------------------------------------------------------------------------
    def read_file(self, path: str) -> pa.Table:
        """One Parquet file of the dataset, whole (``path`` as :meth:`ParquetSink.flush` returns it)."""
        return pq.read_table(path, filesystem=self._pafs)

    def check_file(self, path: str, want: FileSum) -> str | None:
        """Read one file the sink wrote back from storage: None when it holds the bytes written
        (size and CRC-32) and a Parquet footer with the rows written, else what differs."""
        crc = size = 0
        with self.fs.open(path, "rb") as f:
            while chunk := f.read(16 << 20):
                crc, size = crc32(chunk, crc), size + len(chunk)
        if (size, crc) != (want.size, want.crc):
            return f"{posixpath.basename(path)}: {size} bytes, CRC-32 {crc:08x}; written: {want.size} bytes, " \
                   f"CRC-32 {want.crc:08x}"
        rows = pq.read_metadata(path, filesystem=self._pafs).num_rows
        if rows != want.rows:
            return f"{posixpath.basename(path)}: {rows} rows in its footer; written: {want.rows}"
        return None

    def dataset(self, table: str) -> ds.Dataset:
        """The whole table as a pyarrow dataset (partition columns ``cluster`` and ``start_month``)."""
        schema = S.with_partitions(S.SCHEMAS[table])
        base = self._p(table)
        if not self.fs.exists(base):
            return ds.dataset(pa.table({f.name: pa.array([], f.type) for f in schema}))
        hive = ds.partitioning(S.PARTITIONS, flavor="hive")
        if table == "jobs":  # plus the flat columns of every file (their footers are small)
            found = ds.dataset(base, filesystem=self._pafs, format="parquet", partitioning=hive)
            schema = pa.unify_schemas([schema, *(f.physical_schema for f in found.get_fragments())])
        return ds.dataset(base, filesystem=self._pafs, format="parquet", schema=schema, partitioning=hive)

    def _partitions(self, cluster: str | None) -> list[tuple[str, str]]:
        """(cluster, month) of every ``jobs`` partition; directories ccarchive never writes are skipped."""
        if cluster is not None:
            check_cluster_name(cluster)
        out = []
        for cdir in self._ls(self._p("jobs")):
            c = _partition_value(cdir, "cluster")
            if c is None or not is_cluster_name(c) or (cluster is not None and c != cluster):
                continue
            months = (_partition_value(p, "start_month") for p in self._ls(cdir))
            out += [(c, m) for m in months if m is not None and _MONTH.fullmatch(m)]
        return sorted(out)

    def _read(self, table: str, cluster: str, month: str, flt: Any = None,
              columns: list[str] | None = None) -> pa.Table:
        """Rows of one partition of ``table`` (partition columns not included)."""
        base = self.partition_dir(table, cluster, month)
        try:
            d = ds.dataset(base, filesystem=self._pafs, format="parquet", schema=S.SCHEMAS[table])
        except (FileNotFoundError, OSError):
            return S.SCHEMAS[table].empty_table() if columns is None else \
                S.SCHEMAS[table].empty_table().select(columns)
        return d.to_table(filter=flt, columns=columns)

    def _latest(self, jobs: pa.Table) -> pa.Table:
        """One row per (job_id, start_time): the one with the latest (archived_at, batch)."""
        if jobs.num_rows == 0:
            return jobs
        order = jobs.sort_by([("job_id", "ascending"), ("start_time", "ascending"),
                              ("archived_at", "descending"), ("batch", "descending")])
        jid, st = order["job_id"].to_numpy(), order["start_time"].to_numpy()
        keep = np.ones(len(jid), dtype=bool)
        keep[1:] = (jid[1:] != jid[:-1]) | (st[1:] != st[:-1])
        return order.filter(pa.array(keep))

    def _job_rows(self, cluster: str | None) -> Iterator[tuple[str, pa.Table]]:
        for c, m in self._partitions(cluster):
            yield c, self._latest(self._read("jobs", c, m))

    def _job_row(self, key: JobKey) -> dict[str, Any] | None:
        c, j, s = key
        rows = self._latest(self._read("jobs", c, start_month(s), (pc.field("job_id") == j) &
                                       (pc.field("start_time") == s)))
        return rows.to_pylist()[0] if rows.num_rows else None

    def exists(self, job: Job | JobKey) -> bool:
        return self._job_row(key_of(job)) is not None

    def jobs_table(self, cluster: str | None = None, user: str | None = None, since: Any = None,
                   until: Any = None, state: str | None = None) -> pa.Table:
        """One row per job, statistics as flat columns (:mod:`ccarchive.jobstable`), from the
        ``jobs`` table alone: no JSON, and the start-time window pushed into the scan."""
        from ..jobstable import JobFilter, scan_jobs_table

        flt = JobFilter.make(self, cluster, user, since, until, state)
        return scan_jobs_table(self._table_jobs(flt), flt)

    def _table_jobs(self, flt: Any) -> Iterator[Job]:
        """The latest row of each job in ``flt``'s window, without resources, tags and links."""
        expr = None
        for e in ([] if flt.since is None else [pc.field("start_time") >= flt.since]) + \
                 ([] if flt.until is None else [pc.field("start_time") < flt.until]):
            expr = e if expr is None else expr & e
        for c, m in self._partitions(flt.cluster):
            if not _month_in(m, flt.since, flt.until):
                continue
            for r in self._latest(self._read("jobs", c, m, expr, columns=_TABLE_COLUMNS)).to_pylist():
                yield S.row_to_job(c, {**_NO_LISTS, **r})

    def iter_job_keys(self, cluster: str | None = None) -> Iterator[JobKey]:
        """Keys of every stored job, sorted by cluster, jobId, startTime."""
        keys: list[JobKey] = []
        for c, m in self._partitions(cluster):
            t = self._read("jobs", c, m, columns=["job_id", "start_time"])
            keys += {(c, j, s) for j, s in zip(t["job_id"].to_pylist(), t["start_time"].to_pylist(), strict=True)
                     if is_job_key((c, j, s))}
        yield from sorted(keys)

    def iter_jobs(self, cluster: str | None = None) -> Iterator[Job]:
        jobs: list[Job] = []
        for c, t in self._job_rows(cluster):
            jobs += [S.row_to_job(c, r) for r in t.to_pylist()]
        yield from sorted(jobs, key=lambda j: j.key)

    def load_meta(self, job: Job | JobKey) -> Job:
        key = key_of(job)
        row = self._job_row(key)
        if row is None:
            raise InputError(f"{self.url}: no archived job {job_path(*key)}")
        return S.row_to_job(key[0], row)

    def load_meta_bytes(self, job: Job | JobKey) -> bytes:
        """meta.json as ccarchive would write it for the stored job."""
        return encode_job_meta(self.load_meta(job))

    def load_data(self, job: Job | JobKey) -> JobData:
        key = key_of(job)
        row = self._job_row(key)
        if row is None:
            raise InputError(f"{self.url}: no archived job {job_path(*key)}")
        c, j, s = key
        flt = (pc.field("job_id") == j) & (pc.field("start_time") == s) & (pc.field("batch") == row["batch"])
        metrics = self._read("metrics", c, start_month(s), flt)
        series = self._read("series", c, start_month(s), flt)
        if metrics.num_rows == 0:
            raise FormatError(f"{self.url}: job {job_path(*key)} has no metric rows (batch {row['batch']})")
        return tables_to_data(metrics, series)

    def load_data_bytes(self, job: Job | JobKey) -> bytes:
        """data.json as ccarchive would write it for the stored job."""
        return encode_job_data(self.load_data(job))

    def load_data_text(self, job: Job | JobKey) -> bytes | npt.NDArray[np.uint8]:
        """The data.json text for the decoder (as :meth:`load_data_bytes`)."""
        return self.load_data_bytes(job)

    def list_entries(self, cluster: str) -> Iterator[Entry]:
        for key in self.iter_job_keys(cluster):
            yield Entry(job_path(*key), key, ["data.json", "meta.json"])

    def temporary_files(self) -> list[str]:
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return []
        return sorted(p for p in found if posixpath.basename(p).startswith(TMP_PREFIX))


_NO_LISTS = dict.fromkeys(("resources", "tags", "concurrent_jobs", "meta_data"))
_TABLE_COLUMNS = [f.name for f in S.JOBS if f.name not in _NO_LISTS]


def _month_in(month: str, since: int | None, until: int | None) -> bool:
    """Whether a ``start_month`` partition can hold start times in ``[since, until)``."""
    def month_of(t: int) -> str:
        return start_month(min(max(t, 0), MAX_START_TIME))

    return (since is None or month >= month_of(since)) and (until is None or month <= month_of(until - 1))


def _segment(name: str, value: str) -> str:
    return f"{name}={urllib.parse.quote(value, safe='')}"


def _partition_value(path: str, name: str) -> str | None:
    base = posixpath.basename(path.rstrip("/"))
    prefix = f"{name}="
    return urllib.parse.unquote(base[len(prefix):]) if base.startswith(prefix) else None


def tables_to_data(metrics: pa.Table, series: pa.Table) -> JobData:
    """Rebuild the columnar :class:`JobMetric` blocks of one job from its metrics and series rows."""
    out: JobData = {}
    series, bounds = block_bounds(series)
    # statisticsSeries straight into numpy (a Python float per value is slow for long jobs)
    stats = {k: float_lists(metrics[f"stats_{k}"]) for k in ("min", "median", "max", "mean")}
    rows = metrics.select([f.name for f in S.METRICS if not f.name.startswith("stats_")] +
                          ["stats_percentiles"]).to_pylist()
    for i, m in enumerate(rows):
        scopes = out.setdefault(m["metric"], {})
        if m["scope"] is None:  # a metric stored with no scopes at all
            continue
        for k, values in stats.items():
            m[f"stats_{k}"] = values[i]
        lo, hi = bounds.get((m["metric"], m["scope"]), (0, 0))
        scopes[m["scope"]] = _block(m, series.slice(lo, hi - lo))
    return out


def block_bounds(series: pa.Table) -> tuple[pa.Table, dict[tuple[str, str], tuple[int, int]]]:
    """One job's series rows in (metric, scope, series) order (files are written so: no copy
    then), and the row range of each (metric, scope) block, found without a Python step per row."""
    order = ["metric", "scope", "series"]
    if not S.is_sorted(series, order):
        series = series.sort_by([(k, "ascending") for k in order])
    n = series.num_rows
    if n == 0:
        return series, {}
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in ("metric", "scope"):
        col = series[k]
        change[1:] |= pc.not_equal(col.slice(1), col.slice(0, n - 1)).fill_null(True).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(change).tolist()
    metric, scope = series["metric"].take(starts).to_pylist(), series["scope"].take(starts).to_pylist()
    ends = [*starts[1:], n]
    return series, {(m, sc): (lo, hi) for m, sc, lo, hi in zip(metric, scope, starts, ends, strict=True)}


def float_lists(col: pa.ChunkedArray) -> list[FloatArray | None]:
    """Each row of a list<double> column as a float64 array (null values as NaN), or None."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    lengths = pc.list_value_length(arr)
    valid = lengths.is_valid().to_numpy(zero_copy_only=False)
    counts = lengths.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    ends = np.cumsum(counts)
    starts = ends - counts
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return [flat[a:b] if ok else None for a, b, ok in zip(starts.tolist(), ends.tolist(), valid.tolist(), strict=True)]


def _f64(values: Any) -> FloatArray:
    if isinstance(values, np.ndarray):
        return values
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _block(m: dict[str, Any], rows: pa.Table) -> JobMetric:
    n = rows.num_rows
    lists = rows["data"].combine_chunks() if n else pa.array([], pa.list_(pa.float32()))
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    width = int(lengths.max()) if n else 0
    flat = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
    if n and int(lengths.min()) == width:
        data = flat.reshape(n, width)  # astype made it a fresh array
    else:
        data = np.full((n, width), np.nan, dtype=np.float64)
        pos = 0
        for i, ln in enumerate(lengths.tolist()):
            data[i, :ln] = flat[pos:pos + ln]
            pos += ln
    cols = [rows[k].to_numpy(zero_copy_only=False).astype(np.float64) for k in ("min", "avg", "max")]
    stats = np.column_stack(cols) if n else np.zeros((0, 3))
    has: npt.NDArray[np.bool_] = np.asarray(~np.isnan(stats).any(axis=1), dtype=np.bool_)
    stats[~has] = 0.0
    ss = None
    if m["stats_min"] is not None:
        pct = m["stats_percentiles"]
        ss = StatsSeries(min=_f64(m["stats_min"]), median=_f64(m["stats_median"]), max=_f64(m["stats_max"]),
                         mean=None if m["stats_mean"] is None else _f64(m["stats_mean"]),
                         percentiles=None if pct is None else {int(k): _f64(v) for k, v in pct})
    return JobMetric(unit=Unit(m["unit_base"] or "", m["unit_prefix"] or ""), timestep=int(m["timestep"]),
                     hostnames=rows["hostname"].to_pylist(), ids=rows["id"].to_pylist(), data=data,
                     lengths=lengths, statistics=stats, has_statistics=has, statistics_series=ss)


class FileSum(NamedTuple):
    """What the sink wrote to one file: its size, the CRC-32 of its bytes and its rows."""

    size: int
    crc: int
    rows: int


class _Summing:
    """A binary file that keeps the size and CRC-32 of what is written through it (the writer's
    output is summed as it goes, not read again)."""

    def __init__(self, file: Any) -> None:
        self.file, self.size, self.crc = file, 0, 0

    def write(self, data: Any) -> int:
        self.crc = crc32(data, self.crc)
        self.size += len(data)
        return int(self.file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


class _JobRows:
    """One job's rows while it is being archived: in memory, or spilled to its own series file."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.metrics: list[pa.Table] = []
        self.series: list[pa.Table] = []
        self.bytes = 0
        self.file: AtomicFile | None = None
        self.out: _Summing | None = None
        self.writer: pq.ParquetWriter | None = None
        self.path = ""
        self.spilled_rows = 0

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001, S110 - dropping the file anyway
                pass
        if self.file is not None:
            self.file.abort()


class ParquetSink:
    """Buffers archived jobs and writes them as one append-only batch per :meth:`flush`.

    Jobs arrive whole (:meth:`add` with data) or metric by metric from the streamed archiver
    (:meth:`add_metric` for each metric, then :meth:`add` without data).  Each metric becomes Arrow
    rows (float32 samples) at once; a job that grows past ``stream_job_bytes`` is written to a
    series file of its own in row groups as it goes, published when the job completes; a job
    abandoned half-way (:meth:`abandon`) leaves nothing.  ``metrics`` and ``jobs`` rows (small)
    wait for the batch: series files first, jobs files last, so a job row is only visible after
    its data.
    """

    def __init__(self, dataset: ParquetArchive, *, max_jobs: int = 256, max_bytes: int = 256 << 20,
                 stream_job_bytes: int = STREAM_JOB_BYTES) -> None:
        self.dataset = dataset
        self.max_jobs, self.max_bytes, self.stream_job_bytes = max_jobs, max_bytes, stream_job_bytes
        self._current: _JobRows | None = None
        #: :class:`FileSum` of each file the last :meth:`flush` wrote or published
        self.written: dict[str, FileSum] = {}
        self._reset()

    def _reset(self) -> None:
        self._batch = uuid.uuid4().hex
        self._jobs: list[Job] = []
        self._metrics: dict[tuple[str, str], list[pa.Table]] = {}
        self._series: dict[tuple[str, str], list[pa.Table]] = {}
        self._published: list[str] = []  # series files of streamed jobs, already visible
        self._sums: dict[str, FileSum] = {}  # what was written to each file of the batch
        self._flushed: set[str] = set()  # batch files already written by an interrupted flush
        self._archived_at: int | None = None
        self._bytes = 0

    @property
    def pending(self) -> int:
        """Jobs added but not yet written."""
        return len(self._jobs)

    @property
    def full(self) -> bool:
        """True once ``max_jobs`` jobs or ``max_bytes`` of samples are buffered."""
        return len(self._jobs) >= self.max_jobs or self._bytes >= self.max_bytes

    def _rows_of(self, job: Job) -> _JobRows:
        start_month(key_of(job)[2])  # a key the dataset cannot store is refused before any row of it exists
        if self._current is not None and self._current.job.key != job.key:
            self.abandon()  # a job that never finished (its archiving failed)
        if self._current is None:
            self._current = _JobRows(job)
        return self._current

    def add_metric(self, job: Job, metric: str, scopes: dict[str, JobMetric]) -> tuple[pa.Table, pa.Table]:
        """One metric of the job being archived (metrics in sorted order, then :meth:`add`).
        Returns its ``metrics`` and ``series`` rows (``convert`` checks them against the source)."""
        return self._add_rows(job, *S.metric_rows(job, metric, scopes, self._batch))

    def add_data(self, job: Job, data: JobData) -> tuple[pa.Table, pa.Table]:
        """All metrics of the job being archived at once: as :meth:`add_metric` for each metric
        in sorted order, with the rows built in one go (then :meth:`add` without data)."""
        return self._add_rows(job, *S.data_rows(job, [(metric, data[metric]) for metric in sorted(data)],
                                                self._batch))

    def _add_rows(self, job: Job, metrics: pa.Table, series: pa.Table) -> tuple[pa.Table, pa.Table]:
        rows = self._rows_of(job)
        rows.metrics.append(metrics)
        rows.series.append(series)
        rows.bytes += series.nbytes
        if rows.bytes >= self.stream_job_bytes:  # row groups of about stream_job_bytes each
            self._spill(rows)
        return metrics, series

    def _spill(self, rows: _JobRows) -> None:
        """Write the job's pending series rows to its own file (opened on first use)."""
        if rows.writer is None:
            job = rows.job
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            cluster, job_id, start = key_of(job)
            rows.path = posixpath.join(self.dataset.partition_dir("series", cluster, start_month(start)),
                                       f"part-{stamp}-{self._batch}-{job_id}-{start}.parquet")
            rows.file = AtomicFile(self.dataset.fs, rows.path)
            rows.out = _Summing(rows.file.file)
            rows.writer = S.parquet_writer("series", rows.out)
        if rows.series:
            table = pa.concat_tables(rows.series)
            S.write_row_groups(rows.writer, table, ROW_GROUP_BYTES)
            rows.spilled_rows += table.num_rows
        rows.series, rows.bytes = [], 0

    def add(self, job: Job, data: JobData | None = None, *, flush_when_full: bool = True) -> list[str]:
        """Complete one job: its metrics (``data``, unless they came through :meth:`add_metric`)
        and its job row.  Returns the files written if this triggered a flush."""
        if data is not None:
            if self._current is not None and self._current.job.key == job.key:
                self.abandon()  # whole data given: earlier partial rows of this job are superseded
            self.add_data(job, data)
        rows = self._rows_of(job)
        part = (job.cluster, start_month(job.start_time))
        if rows.writer is not None:
            self._spill(rows)
            rows.writer.close()
            assert rows.file is not None and rows.out is not None
            rows.file.commit()
            self._published.append(rows.path)
            self._sums[rows.path] = FileSum(rows.out.size, rows.out.crc, rows.spilled_rows)
        else:
            self._series.setdefault(part, []).extend(rows.series)
            self._bytes += rows.bytes
        self._metrics.setdefault(part, []).extend(rows.metrics)
        self._jobs.append(job)
        self._current = None
        return self.flush() if flush_when_full and self.full else []

    def abandon(self) -> None:
        """Drop the job being added (its archiving failed): nothing of it is written."""
        if self._current is not None:
            self._current.abort()
            self._current = None

    def discard(self) -> int:
        """Drop the buffered jobs (after a failed flush the caller gave up on); returns how many."""
        n = len(self._jobs)
        self.abandon()
        self._reset()
        return n

    def flush(self) -> list[str]:
        """Write the buffered jobs: series and metrics files first, jobs files last.  Returns the
        paths written (none when nothing is buffered).  On failure the buffer is kept for a retry."""
        if self._current is not None:
            raise InputError(f"{self.dataset.url}: flush while {self._current.job.label} is being added "
                             f"(finish it with add() or drop it with abandon() first)")
        if not self._jobs:
            return []
        # A retry after a failed flush writes the same names and skips the files already written:
        # the rows carry this batch's id, so writing them twice would duplicate them.
        if self._archived_at is None:
            self._archived_at = time.time_ns() // 1000
        archived_at = self._archived_at
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(archived_at / 1e6))
        jobs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        part_jobs: dict[tuple[str, str], list[Job]] = {}
        for job in self._jobs:
            row = S.job_row(job)
            row["archived_at"], row["batch"] = archived_at, self._batch
            jobs.setdefault((job.cluster, start_month(job.start_time)), []).append(row)
            part_jobs.setdefault((job.cluster, start_month(job.start_time)), []).append(job)
        layout = Layout.of(self._jobs, self.dataset.stored_clusters())
        written = list(self._published)
        name = f"part-{stamp}-{self._batch}.parquet"
        series = {posixpath.join(self.dataset.partition_dir("series", cluster, month), name): tables
                  for (cluster, month), tables in sorted(self._series.items())}
        todo = [path for path in series if path not in self._flushed]
        if len(todo) > 1:  # one file per partition, each on its own thread (pyarrow releases the GIL)
            with ThreadPoolExecutor(min(len(todo), os.cpu_count() or 1), thread_name_prefix="parquet-flush") as pool:
                futures = [pool.submit(self._write_series, path, series[path]) for path in todo]
            for path, fut in zip(todo, futures, strict=True):
                if fut.exception() is None:  # kept for a retry even when another file failed
                    self._flushed.add(path)
            for fut in futures:
                fut.result()  # the first failure, raised
        for path in todo:
            if path not in self._flushed:
                self._write_series(path, series[path])
                self._flushed.add(path)
        written += series
        small = {"metrics": {part: pa.concat_tables(tables) for part, tables in self._metrics.items()},
                 "jobs": {part: S.jobs_file_table(rows, part_jobs[part], layout) for part, rows in jobs.items()}}
        for t in ("metrics", "jobs"):
            for (cluster, month), table in sorted(small[t].items()):
                path = posixpath.join(self.dataset.partition_dir(t, cluster, month), name)
                if path not in self._flushed:
                    payload = S.parquet_bytes(t, table, ROW_GROUP_BYTES)
                    self.dataset.put(path, payload)
                    self._sums[path] = FileSum(len(payload), crc32(payload), table.num_rows)
                    self._flushed.add(path)
                written.append(path)
        self.written = {path: self._sums[path] for path in written}
        self._reset()
        return written

    def _write_series(self, path: str, tables: list[pa.Table]) -> None:
        """One partition's ``series`` file of the batch (its rows sorted by job)."""
        table = S.sorted_for("series", pa.concat_tables(tables)) if tables else S.SERIES.empty_table()
        with AtomicFile(self.dataset.fs, path) as out:
            summing = _Summing(out.file)
            with S.parquet_writer("series", summing) as writer:
                S.write_row_groups(writer, table, ROW_GROUP_BYTES)
        self._sums[path] = FileSum(summing.size, summing.crc, table.num_rows)

    def close(self) -> None:
        self.abandon()
        self.flush()

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abandon()
        self.flush()
