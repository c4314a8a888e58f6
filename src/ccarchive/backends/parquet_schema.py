"""Schemas of the Parquet dataset and the conversions Job/JobData <-> Arrow tables.

Kept apart from the reader/writer so the column contract (documented in docs/backends.md) is in
one place.  Every file of a table has exactly this schema, so engines scanning many files never
have to reconcile them; ``jobs`` files add flat statistics columns after it, laid out from the
clusters stored in the dataset (:func:`jobs_file_table`).  ``cluster`` and ``start_month`` are
Hive partition columns: they live in the directory names, not in the files.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..jobstable import DERIVED_COLUMNS, Layout, derived_columns, flat_columns
from ..model import ConcurrentJobs, Job, JobData, JobLink, JobMetric, JobStatistics, Resource, StatsSeries, Tag, Unit

PARTITIONS = pa.schema([("cluster", pa.string()), ("start_month", pa.string())])

_S, _I32, _I64, _F64 = pa.string(), pa.int32(), pa.int64(), pa.float64()
_F64_LIST = pa.list_(_F64)
JOB_STAT = pa.struct([("unit_base", _S), ("unit_prefix", _S), ("avg", _F64), ("min", _F64), ("max", _F64)])
RESOURCE = pa.struct([("hostname", _S), ("configuration", _S), ("hwthreads", pa.list_(_I32)),
                      ("accelerators", pa.list_(_S))])
TAG = pa.struct([("type", _S), ("name", _S), ("scope", _S), ("id", _I64)])
LINK = pa.struct([("id", _I64), ("job_id", _I64)])
_BATCH = [pa.field("batch", _S, nullable=False)]

JOBS = pa.schema([
    ("job_id", _I64), ("start_time", _I64), ("duration", _I64), ("sub_cluster", _S), ("partition", _S),
    ("user", _S), ("project", _S), ("job_state", _S), ("shared", _S),
    ("num_nodes", _I32), ("num_hwthreads", _I32), ("num_acc", _I32), ("smt", _I32),
    ("walltime", _I64), ("submit_time", _I64), ("requested_memory", _I64), ("array_job_id", _I64),
    ("monitoring_status", _I32), ("energy", _F64), ("id", _I64),
    ("resources", pa.list_(RESOURCE)), ("tags", pa.list_(TAG)),
    ("statistics", pa.map_(_S, JOB_STAT)), ("footprint", pa.map_(_S, _F64)),
    ("energy_footprint", pa.map_(_S, _F64)), ("meta_data", pa.map_(_S, _S)),
    ("concurrent_jobs_count", _I64), ("concurrent_jobs", pa.list_(LINK)),
    ("archived_at", pa.timestamp("us", tz="UTC")), *_BATCH,
])
METRICS = pa.schema([
    ("job_id", _I64), ("start_time", _I64), ("metric", _S), ("scope", _S),
    ("unit_base", _S), ("unit_prefix", _S), ("timestep", _I32), ("num_series", _I32),
    ("stats_min", _F64_LIST), ("stats_median", _F64_LIST), ("stats_max", _F64_LIST), ("stats_mean", _F64_LIST),
    ("stats_percentiles", pa.map_(_I32, _F64_LIST)), *_BATCH,
])
SERIES = pa.schema([
    ("job_id", _I64), ("start_time", _I64), ("metric", _S), ("scope", _S), ("series", _I32),
    ("hostname", _S), ("id", _S), ("unit", _S), ("timestep", _I32),
    ("min", _F64), ("avg", _F64), ("max", _F64), ("data", pa.list_(pa.float32())), *_BATCH,
])
SCHEMAS = {"jobs": JOBS, "metrics": METRICS, "series": SERIES}
#: zstd level of every file.  Level 1 writes the samples (most of a dataset) about a third faster
#: than level 3 for files about a fifth larger, and reads back as fast: the dataset is written
#: once per job and scanned by analysis tools, so the write time is what counts.
ZSTD_LEVEL = 1
_SORT = {"jobs": ["job_id", "start_time"], "metrics": ["job_id", "start_time", "metric", "scope"],
         "series": ["job_id", "start_time", "metric", "scope", "series"]}


def with_partitions(schema: pa.Schema) -> pa.Schema:
    """A table schema plus the Hive partition columns (what a dataset scan returns)."""
    return pa.schema(list(schema) + list(PARTITIONS))


def _map(m: dict[Any, Any] | None) -> list[tuple[Any, Any]] | None:
    return None if m is None else sorted(m.items())


def job_row(job: Job) -> dict[str, Any]:
    """One ``jobs`` row (without partition columns and batch) for a job."""
    stats = None if job.statistics is None else {
        k: {"unit_base": s.unit.base, "unit_prefix": s.unit.prefix, "avg": s.avg, "min": s.min, "max": s.max}
        for k, s in job.statistics.items()}
    cj = job.concurrent_jobs or ConcurrentJobs()
    return {
        "job_id": job.job_id, "start_time": job.start_time, "duration": job.duration,
        "sub_cluster": job.sub_cluster, "partition": job.partition, "user": job.user, "project": job.project,
        "job_state": job.job_state, "shared": job.shared, "num_nodes": job.num_nodes,
        "num_hwthreads": job.num_hwthreads, "num_acc": job.num_acc, "smt": job.smt, "walltime": job.walltime,
        "submit_time": job.submit_time, "requested_memory": job.requested_memory,
        "array_job_id": job.array_job_id, "monitoring_status": job.monitoring_status,
        "energy": job.energy, "id": job.id,
        "resources": None if job.resources is None else [
            {"hostname": r.hostname, "configuration": r.configuration, "hwthreads": r.hwthreads,
             "accelerators": r.accelerators} for r in job.resources],
        "tags": [{"type": t.type, "name": t.name, "scope": t.scope, "id": t.id} for t in job.tags or []],
        "statistics": _map(stats), "footprint": _map(job.footprint),
        "energy_footprint": _map(job.energy_footprint), "meta_data": _map(job.meta_data),
        "concurrent_jobs_count": cj.count,
        "concurrent_jobs": None if cj.items is None else [{"id": x.id, "job_id": x.job_id} for x in cj.items],
    }


def jobs_file_table(rows: list[dict[str, Any]], jobs: list[Job], layout: Layout) -> pa.Table:
    """The rows of one ``jobs`` file: the :data:`JOBS` columns, then flat columns for pandas,
    polars and SQL without map access or arithmetic (``end_time``, ``node_hours``, ``core_hours``,
    ``gpu_hours``, ``<metric>_avg|min|max``, ``footprint_<key>``, ``energy_<metric>``; units in the
    field metadata), laid out by ``layout`` so files written with the same clusters stored have
    the same columns."""
    table = pa.Table.from_pylist(rows, schema=JOBS)
    fields, arrays = derived_columns(jobs, DERIVED_COLUMNS)
    more_fields, more_arrays = flat_columns(jobs, layout)
    for f, a in zip(fields + more_fields, arrays + more_arrays, strict=True):
        table = table.append_column(f, a)
    return table


def row_to_job(cluster: str, r: dict[str, Any]) -> Job:
    """The :class:`Job` of one ``jobs`` row (as ``to_pylist`` returns it)."""
    def fmap(v: list[tuple[Any, Any]] | None) -> dict[Any, Any] | None:
        return None if v is None else dict(v)

    stats = fmap(r["statistics"])
    return Job(
        cluster=cluster, sub_cluster=r["sub_cluster"] or "", job_id=int(r["job_id"]),
        start_time=int(r["start_time"]), user=r["user"] or "", project=r["project"] or "",
        resources=None if r["resources"] is None else [  # type: ignore[arg-type]
            Resource(x["hostname"], x["configuration"] or "", x["hwthreads"], x["accelerators"])
            for x in r["resources"]],
        num_nodes=int(r["num_nodes"] or 0), partition=r["partition"] or "", shared=r["shared"] or "none",
        job_state=r["job_state"] or "",
        tags=[Tag(t["type"], t["name"], t["scope"], int(t["id"])) for t in r["tags"] or []],
        energy_footprint=fmap(r["energy_footprint"]), footprint=fmap(r["footprint"]), meta_data=fmap(r["meta_data"]),
        concurrent_jobs=ConcurrentJobs(
            None if r["concurrent_jobs"] is None else [JobLink(x["id"], x["job_id"]) for x in r["concurrent_jobs"]],
            int(r["concurrent_jobs_count"] or 0)),
        energy=float(r["energy"] or 0.0), array_job_id=int(r["array_job_id"] or 0), walltime=int(r["walltime"] or 0),
        requested_memory=int(r["requested_memory"] or 0), duration=int(r["duration"] or 0), smt=int(r["smt"] or 0),
        monitoring_status=int(r["monitoring_status"] or 0), num_acc=int(r["num_acc"] or 0),
        num_hwthreads=int(r["num_hwthreads"] or 0),
        statistics=None if stats is None else {
            k: JobStatistics(Unit(s["unit_base"] or "", s["unit_prefix"] or ""), s["avg"], s["min"], s["max"])
            for k, s in stats.items()},
        id=None if r["id"] is None else int(r["id"]), submit_time=int(r["submit_time"] or 0),
    )


def _offsets(lengths: list[int]) -> pa.Array:
    out = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=out[1:])
    return pa.array(out)


def _f64_lists(values: list[Any]) -> pa.Array:
    """list<double> from numpy arrays (``None`` = null list, NaN = null value), built from one
    flat array and offsets: no Python float per value (a week of statisticsSeries is 4 x 10080
    numbers per metric), and no pandas (which ``pa.array(from_pandas=True)`` imports)."""
    arrays = [None if v is None else np.asarray(v, dtype=np.float64).ravel() for v in values]
    flat = np.concatenate([a for a in arrays if a is not None] or [np.empty(0)])
    return pa.ListArray.from_arrays(_offsets([0 if a is None else len(a) for a in arrays]),
                                    pa.array(flat, type=_F64, mask=np.isnan(flat)), type=_F64_LIST,
                                    mask=pa.array([a is None for a in arrays], type=pa.bool_()))


def _percentile_maps(series: list[StatsSeries | None]) -> pa.Array:
    """``stats_percentiles``: map<int32, list<double>> of each row's percentiles (null without)."""
    entries = [sorted((int(k), v) for k, v in ss.percentiles.items()) if ss is not None and ss.percentiles
               else None for ss in series]
    pairs = [kv for e in entries if e is not None for kv in e]
    return pa.MapArray.from_arrays(_offsets([0 if e is None else len(e) for e in entries]),
                                   pa.array([k for k, _ in pairs], type=_I32),
                                   _f64_lists([v for _, v in pairs]), type=METRICS.field("stats_percentiles").type,
                                   mask=pa.array([e is None for e in entries], type=pa.bool_()))


def _metrics_table(job: Job, metrics: list[tuple[str, dict[str, JobMetric]]], batch: str) -> pa.Table:
    """The ``metrics`` rows of some metrics: one per scope (one row with a null scope for none)."""
    rows: list[tuple[str, str | None, JobMetric | None]] = []
    for metric, scopes in metrics:
        rows += [(metric, name, scopes[name]) for name in sorted(scopes)] or [(metric, None, None)]
    blocks = [b for _, _, b in rows]
    sss = [None if b is None else b.statistics_series for b in blocks]
    n = len(rows)
    cols: dict[str, Any] = {
        "job_id": [job.job_id] * n, "start_time": [job.start_time] * n,
        "metric": [m for m, _, _ in rows], "scope": [name for _, name, _ in rows],
        "unit_base": [None if b is None else b.unit.base for b in blocks],
        "unit_prefix": [None if b is None else b.unit.prefix for b in blocks],
        "timestep": [0 if b is None else b.timestep for b in blocks],
        "num_series": [0 if b is None else b.num_series for b in blocks],
    }
    for stat in ("min", "median", "max", "mean"):
        cols[f"stats_{stat}"] = _f64_lists([None if ss is None else getattr(ss, stat) for ss in sss])
    cols["stats_percentiles"] = _percentile_maps(sss)
    cols["batch"] = [batch] * n
    return pa.table({f.name: cols[f.name] if isinstance(cols[f.name], pa.Array) else pa.array(cols[f.name], f.type)
                     for f in METRICS}, schema=METRICS)


_NAN32 = np.float32(np.nan)
#: Largest scratch array (bytes) a thread keeps for reuse (:func:`scratch`).
SCRATCH_BYTES = 32 << 20
_scratch = threading.local()


def scratch(name: str, n: int, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """``n`` items of ``dtype``, this thread's to use until it asks for ``name`` again: the
    temporaries of a job (a byte or four per sample) reuse the same memory from job to job,
    where a fresh array is fresh pages whose faults cost more than filling them (60 demo jobs:
    2 ms against 70).  Larger than :data:`SCRATCH_BYTES`: a new array each time."""
    dt = np.dtype(dtype)
    if n * dt.itemsize > SCRATCH_BYTES:
        return np.empty(n, dtype=dt)
    held = getattr(_scratch, name, None)
    if held is None or held.dtype != dt:
        held = np.empty(SCRATCH_BYTES // dt.itemsize, dtype=dt)  # pages are touched as they are used
        setattr(_scratch, name, held)
    return held[:n]


def drop_scratch() -> None:
    """Free this thread's scratch arrays."""
    _scratch.__dict__.clear()


def float32_values(flat: npt.NDArray[np.float32]) -> pa.Array:
    """``flat`` as a float32 Arrow array, NaN as null, without a copy of the values: the validity
    bitmap is packed here (``pa.array(mask=...)`` takes several times as long), and every NaN in
    ``flat`` is set to the one quiet NaN, so that the values buffer, null slots included, is what
    ``convert`` checksums (the Parquet file stores no value for a null)."""
    nan = np.isnan(flat, out=scratch("rows nan", len(flat), np.bool_))
    nulls = int(np.count_nonzero(nan))
    if not nulls:
        return pa.Array.from_buffers(pa.float32(), len(flat), [None, pa.py_buffer(flat)], null_count=0)
    np.copyto(flat, _NAN32, where=nan)
    valid = np.packbits(nan, bitorder="little")
    np.invert(valid, out=valid)
    return pa.Array.from_buffers(pa.float32(), len(flat), [pa.py_buffer(valid), pa.py_buffer(flat)],
                                 null_count=nulls)


def data_rows(job: Job, metrics: list[tuple[str, dict[str, JobMetric]]], batch: str) -> tuple[pa.Table, pa.Table]:
    """The ``metrics`` and ``series`` tables of some metrics of one job, rows in the order given
    (metrics sorted by name for a whole job), built in one go: Arrow costs about as much per
    call as per thousand rows, and a job has a few dozen small metrics tables."""
    blocks = [(metric, scope, scopes[scope]) for metric, scopes in metrics for scope in sorted(scopes)
              if scopes[scope].num_series]
    lengths = [np.asarray(b.lengths, dtype=np.int64).reshape(b.num_series) for _, _, b in blocks]
    flat = np.empty(int(sum(int(ln.sum()) for ln in lengths)), dtype=np.float32)
    hostnames: list[str] = []
    ids: list[str | None] = []
    stats: list[np.ndarray] = []
    pos = 0
    for (_, _, b), ln in zip(blocks, lengths, strict=True):
        n = b.num_series
        hostnames += b.hostnames
        ids += b.ids
        has = np.ones(n, dtype=bool) if b.has_statistics is None else np.asarray(b.has_statistics, dtype=bool)
        stats.append(np.full((n, 3), np.nan) if b.statistics is None else np.where(has[:, None], b.statistics, np.nan))
        width = b.data.shape[1]
        if int(ln.min()) == width:  # float32 straight into the flat array: one copy
            flat[pos:pos + n * width].reshape(n, width)[...] = b.data
            pos += n * width
        else:
            for i, length in enumerate(ln.tolist()):
                flat[pos:pos + length] = b.data[i, :length]
                pos += length
    # per-block values repeated for the block's rows by one take, not a Python object per row
    counts = np.array([b.num_series for _, _, b in blocks], dtype=np.int64)
    block = np.repeat(np.arange(len(blocks)), counts)
    per_block = {"metric": [m for m, _, _ in blocks], "scope": [sc for _, sc, _ in blocks],
                 "unit": [b.unit.prefix + b.unit.base for _, _, b in blocks],
                 "timestep": [b.timestep for _, _, b in blocks]}
    n = len(block)
    cols: dict[str, Any] = {k: pa.array(v, SERIES.field(k).type).take(block) for k, v in per_block.items()}
    cols["job_id"] = pa.array(np.full(n, job.job_id, dtype=np.int64))
    cols["start_time"] = pa.array(np.full(n, job.start_time, dtype=np.int64))
    cols["series"] = pa.array((np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32))
    cols["hostname"] = pa.array(hostnames, _S)
    cols["id"] = pa.array(ids, _S)
    st = np.concatenate(stats) if stats else np.zeros((0, 3))
    for k, name in enumerate(("min", "avg", "max")):
        v = np.ascontiguousarray(st[:, k])
        cols[name] = pa.array(v, type=_F64, mask=np.isnan(v))
    offsets = np.zeros(n + 1, dtype=np.int32)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    cols["data"] = pa.ListArray.from_arrays(pa.array(offsets), float32_values(flat))
    cols["batch"] = pa.array([batch], _S).take(np.zeros(n, dtype=np.int64))
    return _metrics_table(job, metrics, batch), pa.table([cols[f.name] for f in SERIES], schema=SERIES)


def metric_rows(job: Job, metric: str, scopes: dict[str, JobMetric], batch: str) -> tuple[pa.Table, pa.Table]:
    """The ``metrics`` and ``series`` tables of one metric of one job: what the streamed writer
    adds as soon as the metric is archived, so the job's float64 arrays can go."""
    return data_rows(job, [(metric, scopes)], batch)


def build_tables(items: list[tuple[Job, JobData]], batch: str, archived_at: int) -> dict[str, pa.Table]:
    """The jobs / metrics / series tables of one partition of one batch."""
    jobs = [job_row(j) for j, _ in items]
    for r in jobs:
        r["archived_at"], r["batch"] = archived_at, batch
    metrics: list[pa.Table] = []
    series: list[pa.Table] = []
    for job, data in items:
        m, t = data_rows(job, [(metric, data[metric]) for metric in sorted(data)], batch)
        metrics.append(m)
        series.append(t)
    return {"jobs": jobs_file_table(jobs, [j for j, _ in items], Layout.of([j for j, _ in items])),
            "metrics": pa.concat_tables(metrics) if metrics else METRICS.empty_table(),
            "series": pa.concat_tables(series) if series else SERIES.empty_table()}


def _rows_per_group(table: pa.Table, row_group_bytes: int) -> int:
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    return int(min(1 << 20, max(1, row_group_bytes // per_row)))


def writer_pool() -> pa.MemoryPool:
    """jemalloc where pyarrow has it: the default pool (mimalloc) keeps several times a row
    group's size resident after each write (measured: +55 MiB vs +21 MiB for 7.5 MB row groups),
    and faults in fresh, zeroed pages for much of what is allocated again and again."""
    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return pa.system_memory_pool()


def parquet_writer(table_name: str, where: Any, schema: pa.Schema | None = None) -> pq.ParquetWriter:
    """A Parquet writer for one table's file (``where``: path, Arrow stream or Python file):
    zstd, dictionary-encoded strings (not the samples: floats rarely repeat), statistics, page
    index, declared sort by job.  ``schema``: the table's own (``jobs`` files add flat columns).

    The samples (``series.data``) get no min/max statistics: no engine prunes on the elements
    of a list, and computing them was a sixth of the time spent writing a series file.  They are
    stored byte-stream-split (each float's bytes in four streams): zstd then writes a series file
    about a third faster, and no larger (smaller for real, smooth series)."""
    schema = schema or SCHEMAS[table_name]
    dictionary: bool | list[str] = True
    if table_name != "jobs":  # series samples and statisticsSeries are floats: no dictionary
        dictionary = [f.name for f in schema if pa.types.is_string(f.type)]
    statistics: bool | list[str] = True
    encoding: dict[str, str] | None = None
    if table_name == "series":
        statistics = [f.name for f in schema if f.name != "data"]
        encoding = {"data.list.element": "BYTE_STREAM_SPLIT"}
    return pq.ParquetWriter(where, schema, compression="zstd", compression_level=ZSTD_LEVEL,
                            write_statistics=statistics, write_page_index=True, use_dictionary=dictionary,
                            column_encoding=encoding,
                            memory_pool=writer_pool(),
                            sorting_columns=[pq.SortingColumn(schema.get_field_index(k))
                                             for k in _SORT[table_name][:2]])


def is_sorted(table: pa.Table, keys: list[str]) -> bool:
    """True when the rows are already in ascending order of ``keys`` (no nulls in them): a few
    vectorised comparisons instead of the full copy a sort makes of every column."""
    n = table.num_rows
    if n < 2:
        return True
    tied: Any = None  # rows equal to their predecessor in every key so far
    for k in keys:
        col = table[k]
        if col.null_count:
            return False
        prev, cur = col.slice(0, n - 1), col.slice(1)
        before = pc.less(cur, prev)
        if pc.any(before if tied is None else pc.and_(tied, before)).as_py():
            return False
        equal = pc.equal(cur, prev)
        tied = equal if tied is None else pc.and_(tied, equal)
        if not pc.any(tied).as_py():
            return True
    return True


def sorted_for(table_name: str, table: pa.Table) -> pa.Table:
    """Rows in the file order of ``table_name`` (by job, then metric and scope).  Rows that come
    in that order already (jobs added by job id, as ``convert`` does) are kept as they are:
    sorting is stable, so the result is the same."""
    keys = _SORT[table_name]
    return table if is_sorted(table, keys) else table.sort_by([(k, "ascending") for k in keys])


def write_row_groups(writer: pq.ParquetWriter, table: pa.Table, row_group_bytes: int) -> None:
    """Append ``table`` as row groups of about ``row_group_bytes`` uncompressed."""
    if table.num_rows:
        writer.write_table(table, row_group_size=_rows_per_group(table, row_group_bytes))


def parquet_bytes(table_name: str, table: pa.Table, row_group_bytes: int) -> bytes:
    """One whole Parquet file in memory (the small jobs / metrics files), rows sorted by job."""
    sink = pa.BufferOutputStream()
    with parquet_writer(table_name, sink, table.schema) as writer:
        write_row_groups(writer, sorted_for(table_name, table), row_group_bytes)
    return sink.getvalue().to_pybytes()
