"""The Arrow/Parquet dataset: exact round trips, layout and schema, append-only batches with
unique file names, crash safety of a flush, and analysis queries in DuckDB and pyarrow that
match the JSON archive."""

from __future__ import annotations

import json
import math
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from backend_fixtures import fixture_clusters, fixture_jobs

from ccarchive.archive import open_archive
from ccarchive.backends import parquet_schema as S
from ccarchive.backends.parquet import MARKER, ParquetArchive
from ccarchive.formats.data import decode_job_data, encode_job_data
from ccarchive.formats.meta import decode_job_meta, encode_job_meta
from ccarchive.model import Tag


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.parquet")}


def _filled(root: Path) -> ParquetArchive:
    arch = open_archive(f"parquet+file://{root}", create=True)
    assert isinstance(arch, ParquetArchive)
    for c in fixture_clusters():
        arch.store_cluster(c)
    with arch.sink() as sink:
        for j in fixture_jobs():
            sink.add(decode_job_meta(j.meta), decode_job_data(j.data))
    return arch


def test_fixtures_round_trip_exactly(tmp_path: Path):
    arch = _filled(tmp_path / "ds")
    jobs = fixture_jobs()
    assert list(arch.iter_job_keys()) == [j.key for j in jobs]
    assert [j.key for j in arch.iter_jobs()] == [j.key for j in jobs]
    for j in jobs:
        assert arch.exists(j.key)
        assert encode_job_meta(arch.load_meta(j.key)) == encode_job_meta(decode_job_meta(j.meta))
        assert arch.load_data_bytes(j.key) == encode_job_data(decode_job_data(j.data))
    legacy = arch.load_data(jobs[0].key)  # emmy: ipc series were stored without statistics
    assert not legacy["ipc"]["node"].has_statistics.any() and legacy["cpu_load"]["node"].has_statistics.all()
    assert arch.clusters() == ["alex", "emmy", "fritz"]
    assert arch.load_cluster("emmy").name == "emmy"
    assert not arch.exists(("emmy", 1, 2)) and arch.temporary_files() == []


def test_layout_schema_and_encoding(tmp_path: Path):
    root = tmp_path / "ds"
    _filled(root)
    assert json.loads((root / MARKER).read_text())["format"] == "ccarchive-parquet"
    parts = sorted(str(p.parent.relative_to(root)) for p in root.rglob("*.parquet"))
    assert parts == sorted(f"{t}/{p}" for t in ("jobs", "metrics", "series")
                           for p in ("cluster=emmy/start_month=2020-12", "cluster=fritz/start_month=2023-02"))
    for path in root.rglob("*.parquet"):
        table = path.parts[len(root.parts)]
        f = pq.ParquetFile(path)
        schema = f.schema_arrow.remove_metadata()
        if table == "jobs":  # the fixed columns, then the flat statistics columns (test_jobs_table.py)
            schema = pa.schema(list(schema)[:len(S.JOBS)])
        assert schema.equals(S.SCHEMAS[table]), path
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
        # min/max statistics on every column but the samples (nothing prunes on list elements)
        chunks = {c.path_in_schema: c for c in map(f.metadata.row_group(0).column, range(f.metadata.num_columns))}
        assert chunks["job_id"].is_stats_set and chunks["job_id"].statistics.min > 0
        if table == "series":
            assert not chunks["data.list.element"].is_stats_set and chunks["avg"].is_stats_set
    assert S.SERIES.field("data").type == pa.list_(pa.float32())
    # a plain path to the dataset is recognised by its marker
    assert isinstance(open_archive(str(root)), ParquetArchive)
    t = ds.dataset(root / "series", format="parquet", partitioning="hive").to_table(
        filter=(pc.field("cluster") == "emmy") & (pc.field("metric") == "cpu_load"))
    assert t.num_rows == 32 and set(t["start_month"].to_pylist()) == {"2020-12"}


def test_append_only_batches_and_latest_version_wins(tmp_path: Path):
    root = tmp_path / "ds"
    arch = _filled(root)
    before = _files(root)
    j = fixture_jobs()[1]
    job = decode_job_meta(j.meta)
    job.tags = [Tag("app", "gromacs")]
    extra = decode_job_meta(j.meta)
    extra.job_id += 1
    with arch.sink() as sink:
        sink.add(job, decode_job_data(j.data))
        sink.add(extra, decode_job_data(j.data))
    after = _files(root)
    assert all(after[p] == b for p, b in before.items())  # no old file rewritten or removed
    assert len(after) == len(before) + 3  # one new file per table (one partition)
    assert arch.load_meta(job.key).tags == [Tag("app", "gromacs")]
    assert arch.load_data_bytes(job.key) == encode_job_data(decode_job_data(j.data))
    assert list(arch.iter_job_keys("fritz")) == sorted([j.key, extra.key, fixture_jobs()[2].key])
    raw = arch.dataset("jobs").to_table(filter=pc.field("job_id") == job.job_id)
    assert raw.num_rows == 2  # both versions stay in the files; readers take the latest


def test_concurrent_writers_never_collide(tmp_path: Path):
    root = tmp_path / "ds"
    open_archive(f"parquet+{root}", create=True)
    j = fixture_jobs()[2]
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            arch = ParquetArchive(str(root))  # its own instance, as another process would have
            for b in range(5):
                with arch.sink() as sink:
                    job = decode_job_meta(j.meta)
                    job.job_id = 10_000 * w + b
                    sink.add(job, decode_job_data(j.data))
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(_files(root)) == 3 * 5 * 3
    arch = ParquetArchive(str(root))
    assert len(list(arch.iter_job_keys())) == 15
    assert arch.load_meta(("fritz", 20_004, j.key[2])).user == decode_job_meta(j.meta).user


def test_failed_flush_shows_no_job_and_can_be_retried(tmp_path: Path):
    root = tmp_path / "ds"
    arch = open_archive(f"parquet+{root}", create=True)
    j = fixture_jobs()[2]
    real_put = arch.put

    def failing_put(path: str, payload: bytes) -> None:
        if "/jobs/" in path:
            raise OSError(5, "disk went away")
        real_put(path, payload)

    arch.put = failing_put  # type: ignore[method-assign]
    sink = arch.sink()
    sink.add(decode_job_meta(j.meta), decode_job_data(j.data))
    with pytest.raises(OSError, match="disk went away"):
        sink.flush()
    assert len(_files(root)) == 2  # series + metrics of the failed batch, but no jobs file
    assert not arch.exists(j.key) and list(arch.iter_job_keys()) == []
    assert sink.pending == 1  # kept for a retry
    arch.put = real_put  # type: ignore[method-assign]
    sink.flush()
    assert arch.load_data_bytes(j.key) == encode_job_data(decode_job_data(j.data))
    assert len(_files(root)) == 3  # the retry did not write the series and metrics rows again


# -- a few hundred synthetic jobs: the analysis queries ----------------------------------------------------

N_JOBS = 240


@pytest.fixture(scope="module")
def twin_archives(tmp_path_factory: pytest.TempPathFactory):
    """The same synthetic jobs archived by the archiver as JSON (v3 tree) and as Parquet."""
    pytest.importorskip("ccarchive.kernels.aggregate")
    from backend_fixtures import synthetic_results

    root = tmp_path_factory.mktemp("twins")
    json_arch = open_archive(str(root / "json"), create=True)
    pq_arch = open_archive(f"parquet+{root / 'pq'}", create=True)
    results = synthetic_results(N_JOBS, archive=json_arch)
    with pq_arch.sink(max_jobs=100) as sink:  # three batches
        for _, r in results:
            sink.add(r.job, r.data)
    return json_arch, pq_arch, root / "pq"


def _mean_flops_per_user_from_json(json_arch) -> dict[str, float]:
    per_user: dict[str, list[float]] = defaultdict(list)
    for job in json_arch.iter_jobs():
        if job.statistics and "flops_any" in job.statistics:
            per_user[job.user].append(job.statistics["flops_any"].avg)
    return {u: sum(v) / len(v) for u, v in per_user.items()}


def test_duckdb_mean_flops_any_per_user_matches_json(twin_archives):
    duckdb = pytest.importorskip("duckdb")
    json_arch, _, root = twin_archives
    expected = _mean_flops_per_user_from_json(json_arch)
    assert len(expected) > 10
    con = duckdb.connect()
    rows = con.execute(f"""
        SELECT "user", avg(statistics['flops_any'].avg) AS mean_flops_any, count(*) AS jobs
        FROM read_parquet('{root}/jobs/**/*.parquet', hive_partitioning = true)
        WHERE statistics['flops_any'] IS NOT NULL
        GROUP BY "user" ORDER BY "user"
    """).fetchall()
    assert {u for u, _, _ in rows} == set(expected)
    for user, mean, _ in rows:
        assert math.isclose(mean, expected[user], rel_tol=1e-12), user
    (n,) = con.execute(f"SELECT count(*) FROM read_parquet('{root}/jobs/**/*.parquet')").fetchone()
    assert n == N_JOBS == len(list(json_arch.iter_job_keys()))
    (months,) = con.execute(f"SELECT count(DISTINCT start_month) FROM read_parquet("
                            f"'{root}/jobs/**/*.parquet', hive_partitioning = true)").fetchone()
    assert months >= 3


def test_pyarrow_mean_flops_any_per_user_matches_json(twin_archives):
    json_arch, pq_arch, _ = twin_archives
    expected = _mean_flops_per_user_from_json(json_arch)
    t = pq_arch.dataset("jobs").to_table(columns=["user", "statistics"])
    flops = pc.struct_field(pc.map_lookup(t["statistics"], "flops_any", "first"), "avg")
    got = pa.table({"user": t["user"], "flops": flops}).filter(pc.is_valid(flops)) \
        .group_by("user").aggregate([("flops", "mean")])
    means = dict(zip(got["user"].to_pylist(), got["flops_mean"].to_pylist(), strict=True))
    assert means == pytest.approx(expected, rel=1e-12)


def test_series_of_one_job_matches_json(twin_archives):
    duckdb = pytest.importorskip("duckdb")
    json_arch, pq_arch, root = twin_archives
    keys = list(json_arch.iter_job_keys())
    key = max(keys, key=lambda k: json_arch.load_meta(k).num_nodes)  # a multi-node job
    _, job_id, start = key
    block = json_arch.load_data(key)["flops_any"]["node"]
    rows = duckdb.connect().execute(f"""
        SELECT hostname, id, "min", "avg", "max", data
        FROM read_parquet('{root}/series/**/*.parquet', hive_partitioning = true)
        WHERE job_id = ? AND start_time = ? AND metric = 'flops_any' AND scope = 'node'
        ORDER BY series
    """, [job_id, start]).fetchall()
    assert [r[0] for r in rows] == block.hostnames and [r[1] for r in rows] == block.ids
    assert len(rows) == block.num_series > 1
    for i, (_, _, mn, av, mx, data) in enumerate(rows):
        assert [mn, av, mx] == block.statistics[i].tolist()
        want = block.series(i).astype(np.float32)
        got = np.array([np.nan if v is None else v for v in data], dtype=np.float32)
        np.testing.assert_array_equal(got, want)
    # the samples are stored byte-stream-split: polars reads them too
    pl = pytest.importorskip("polars")
    frame = pl.scan_parquet(f"{root}/series/**/*.parquet", hive_partitioning=True).filter(
        (pl.col("job_id") == job_id) & (pl.col("start_time") == start) & (pl.col("metric") == "flops_any")
        & (pl.col("scope") == "node")).sort("series").collect()
    assert frame.height == block.num_series
    for i, data in enumerate(frame["data"].to_list()):
        got = np.array([np.nan if v is None else v for v in data], dtype=np.float32)
        np.testing.assert_array_equal(got, block.series(i).astype(np.float32))
    # and the library reader gives back the same bytes as the JSON archive for a sample of jobs
    for k in keys[:: len(keys) // 8]:
        assert pq_arch.load_meta_bytes(k) == json_arch.load_meta_bytes(k)
        assert pq_arch.load_data_bytes(k) == json_arch.load_data_bytes(k)


# -- the streamed writer: large jobs row group by row group, failed jobs leave nothing -----------------
def test_large_job_streams_into_its_own_series_file(tmp_path: Path):
    from ccarchive.core import archive_job
    from ccarchive.demo import embedded_cluster
    from ccarchive.sources.synthetic import SyntheticSource, synthetic_job

    fritz = embedded_cluster("fritz")
    job = synthetic_job(fritz, "main", 4711, 1_767_225_600, 4, 6 * 3600, seed=3)
    expected = archive_job(job, source=SyntheticSource(seed=3), archive=None, cluster=fritz)
    root = tmp_path / "ds"
    arch = open_archive(f"parquet+{root}", create=True)
    sink = arch.sink(stream_job_bytes=64 << 10)
    res = archive_job(job, source=SyntheticSource(seed=3), archive=None, cluster=fritz, sink=sink, keep_data=False)
    own = [p for p in _files(root) if p.startswith("series/") and p.endswith(f"-{job.job_id}-{job.start_time}.parquet")]
    assert len(own) == 1 and sink.pending == 1 and not arch.exists(job)  # data first, job row at the flush
    assert pq.ParquetFile(root / own[0]).metadata.num_row_groups > 1
    sink.flush()
    assert sorted(p.split("/")[0] for p in _files(root)) == ["jobs", "metrics", "series"]
    assert arch.load_data_bytes(job) == encode_job_data(expected.data)
    assert arch.load_meta(job).statistics == res.job.statistics == expected.job.statistics
    assert arch.temporary_files() == []


def test_job_failing_mid_stream_leaves_no_rows(tmp_path: Path):
    from ccarchive.core import archive_job
    from ccarchive.demo import embedded_cluster
    from ccarchive.errors import TransientError
    from ccarchive.sources.synthetic import SyntheticSource, synthetic_job

    class FailsLate(SyntheticSource):
        def fetch(self, job, cluster, metric, scope, requests):
            if metric.name > "mem":
                raise TransientError(f"{job.label}: metric store went away at {metric.name}")
            return super().fetch(job, cluster, metric, scope, requests)

    fritz = embedded_cluster("fritz")
    bad = synthetic_job(fritz, "main", 1, 1_767_225_600, 4, 6 * 3600, seed=1)
    good = synthetic_job(fritz, "main", 2, 1_767_225_600, 1, 3600, seed=2)
    root = tmp_path / "ds"
    arch = open_archive(f"parquet+{root}", create=True)
    with arch.sink(stream_job_bytes=64 << 10) as sink:
        for stream in (True, False):  # spilled to its own file already, or still in memory
            sink.stream_job_bytes = 64 << 10 if stream else 1 << 40
            with pytest.raises(TransientError):
                archive_job(bad, source=FailsLate(seed=1), archive=None, cluster=fritz, sink=sink, keep_data=False)
            assert _files(root) == {} and arch.temporary_files() == []
        res = archive_job(good, source=SyntheticSource(seed=2), archive=None, cluster=fritz, sink=sink)
    assert list(arch.iter_job_keys()) == [good.key] and arch.load_data_bytes(good) == encode_job_data(res.data)
    series = pq.read_table(root / "series").num_rows
    assert series == sum(b.num_series for scopes in res.data.values() for b in scopes.values())


def test_killed_streaming_writer_leaves_nothing_readers_see(tmp_path: Path):
    """A worker killed while a large job streams into its own series file leaves a hidden temporary
    file that neither a ``*.parquet`` glob (DuckDB) nor the dataset readers pick up."""
    from ccarchive.core import archive_job
    from ccarchive.demo import embedded_cluster
    from ccarchive.errors import InputError
    from ccarchive.loading import JobLoader
    from ccarchive.sources.synthetic import SyntheticSource, synthetic_job
    from ccarchive.statistics import compute_block_statistics

    fritz = embedded_cluster("fritz")
    big = synthetic_job(fritz, "main", 1, 1_767_225_600, 4, 6 * 3600, seed=1)
    root = tmp_path / "ds"
    arch = open_archive(f"parquet+{root}", create=True)
    dying = arch.sink(stream_job_bytes=64 << 10)
    for n, (name, scopes) in enumerate(JobLoader(big, fritz, SyntheticSource(seed=1))):
        for block in scopes.values():
            compute_block_statistics(block)
        dying.add_metric(big, name, scopes)
        if n == 3:
            break  # "killed": no add(), no abandon()
    with pytest.raises(InputError, match="flush while job fritz/1/"):
        dying.flush()
    assert len(arch.temporary_files()) == 1 and list(root.rglob("*.parquet")) == []
    good = synthetic_job(fritz, "main", 2, 1_767_225_600, 1, 3600, seed=2)
    with arch.sink() as sink:
        res = archive_job(good, source=SyntheticSource(seed=2), archive=None, cluster=fritz, sink=sink)
    assert list(arch.iter_job_keys()) == [good.key] and arch.load_data_bytes(good) == encode_job_data(res.data)
    assert pq.read_table(root / "series").num_rows == sum(b.num_series for s in res.data.values() for b in s.values())


def test_rows_already_in_file_order_are_recognised_without_sorting():
    """``sorted_for`` keeps rows that are in order (no copy) and sorts the rest; either way the
    rows come out as a stable sort would put them (ties, strings, a null key)."""
    rng = np.random.default_rng(3)
    keys = S._SORT["series"]
    for trial in range(60):
        n = int(rng.integers(0, 40))
        table = pa.table({"job_id": rng.integers(0, 3, n), "start_time": rng.integers(0, 2, n),
                          "metric": rng.choice(["cpu_load", "flops_any", "mem_bw"], n),
                          "scope": rng.choice(["core", "node"], n), "series": rng.integers(0, 3, n),
                          "row": np.arange(n)})
        if trial % 2:
            table = table.sort_by([(k, "ascending") for k in keys])
        if trial % 7 == 3 and n:
            table = table.set_column(2, "metric", pa.array([None] + table["metric"].to_pylist()[1:], pa.string()))
        expected = table.sort_by([(k, "ascending") for k in keys])
        assert S.is_sorted(table, keys) == table.equals(expected) or (n > 1 and table["metric"].null_count)
        got = S.sorted_for("series", table)
        assert got.equals(expected)
        if S.is_sorted(table, keys):
            assert got is table
