"""The archive replay source: re-archive, recompute statistics, migrate between backends."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from ccms_server import run_pipeline

from ccarchive.archive import open_archive
from ccarchive.core import archive_job
from ccarchive.demo import embedded_cluster
from ccarchive.errors import NoDataError, TransientError
from ccarchive.sources.registry import source_from_spec
from ccarchive.sources.replay import ReplaySource
from ccarchive.sources.synthetic import SyntheticSource, synthetic_job
from ccarchive.worker import is_transient
from conftest import EMMY_JOB

START = 1_767_225_600


@pytest.fixture(scope="module")
def clusters():
    return {"fritz": embedded_cluster("fritz"), "alex": embedded_cluster("alex")}


def jobs_of(clusters):
    return [
        synthetic_job(clusters["fritz"], "main", 100, START, 2, 3600, hwthreads=8),
        synthetic_job(clusters["fritz"], "main", 101, START + 60, 9, 3600, first_node=2),  # node scope only
        synthetic_job(clusters["alex"], "a40", 102, START + 120, 1, 1800, num_acc=4, hwthreads=4),
    ]


def make_source_archive(url: str, clusters, jobs, **synthetic) -> object:
    arch = open_archive(url, create=True)
    src = SyntheticSource(seed=7, nan_gap_probability=0.01, **synthetic)
    for job in jobs:
        archive_job(job, source=src, archive=arch, cluster=clusters[job.cluster])
    return arch


def test_replay_keeps_the_data_and_is_a_fixpoint(tmp_path: Path, clusters):
    """Replayed samples equal the stored ones; statistics are recomputed from the stored (2-decimal)
    samples, so they may move by 0.01 once, and a second replay is byte-identical."""
    jobs = jobs_of(clusters)
    a = make_source_archive(f"file://{tmp_path}/a", clusters, jobs)
    b = open_archive(str(tmp_path / "b"), create=True)
    c = open_archive(str(tmp_path / "c"), create=True)
    from_a = source_from_spec({"kind": "replay", "archive": f"file://{tmp_path}/a"})
    from_b = source_from_spec({"kind": "replay", "archive": str(tmp_path / "b")})
    for key in a.iter_job_keys():
        job = a.load_meta(key)
        cluster = clusters[job.cluster]
        assert archive_job(job, source=from_a, archive=b, cluster=cluster).warnings == []
        old, new = a.load_data(key), b.load_data(key)
        assert sorted((m, s) for m in old for s in old[m]) == sorted((m, s) for m in new for s in new[m])
        for metric, scopes in old.items():
            for scope, blk in scopes.items():
                rep = new[metric][scope]
                assert (rep.hostnames, rep.ids) == (blk.hostnames, blk.ids)
                np.testing.assert_array_equal(rep.data, blk.data)
                assert np.allclose(rep.statistics, blk.statistics, rtol=2**-23, atol=0.0100001)  # float32 data
        archive_job(b.load_meta(key), source=from_b, archive=c, cluster=cluster)
        assert c.load_data_bytes(key) == b.load_data_bytes(key)
        assert c.load_meta_bytes(key) == b.load_meta_bytes(key)
    assert len(list(c.iter_job_keys())) == 3


def test_replay_recomputes_statistics_of_a_legacy_entry(tmp_path: Path, fixture_archive: Path):
    """cc-backend's emmy test job: pretty-printed legacy JSON, a metric not in the cluster config."""
    a = open_archive(str(fixture_archive))
    key = next(iter(a.iter_job_keys("emmy")))
    assert EMMY_JOB.name == str(key[2])
    job, cluster, before = a.load_meta(key), a.load_cluster("emmy"), a.load_data(key)
    b = open_archive(f"file://{tmp_path}/b", create=True)
    result = archive_job(job, source=ReplaySource(str(fixture_archive)), archive=b, cluster=cluster)
    after = b.load_data(key)
    assert sorted(after) == sorted(before)
    for metric, scopes in before.items():
        for scope, old in scopes.items():
            new = after[metric][scope]
            assert new.hostnames == old.hostnames and new.ids == old.ids
            np.testing.assert_allclose(new.data, old.data, rtol=2**-23, atol=0.0051)  # float32, 2 decimals
            for n in range(new.num_series):
                x = new.series(n)[~np.isnan(new.series(n))]
                want = np.round([x.min(), x.mean(), x.max()], 2) if x.size else np.zeros(3)
                assert np.allclose(new.statistics[n], want, atol=0.011), (metric, scope, n)
    assert any("rapl_power" in w for w in result.warnings)  # kept, reported: not in cluster.json
    assert any("vectorization_ratio: no data" in w for w in result.warnings)  # configured, not stored
    assert b.load_meta(key).monitoring_status == 3


def test_missing_metric_and_host_are_reported_not_fatal(tmp_path: Path, clusters):
    fritz = clusters["fritz"]
    job = synthetic_job(fritz, "main", 200, START, 2, 1800, hwthreads=4)
    make_source_archive(str(tmp_path / "a"), clusters, [job], missing_metrics=["ib_xmit"])
    grown = synthetic_job(fritz, "main", 200, START, 3, 1800, hwthreads=4)  # the DB knows one more host
    result = archive_job(grown, source=ReplaySource(str(tmp_path / "a")), archive=None, cluster=fritz)
    text = "\n".join(result.warnings)
    assert "ib_xmit: no data" in text and f"no data for host {grown.hostnames[2]}" in text
    assert "ib_xmit" not in result.data and result.data["cpu_load"]["node"].num_series == 2


def test_job_not_in_archive_fails_and_unreachable_archive_is_transient(tmp_path: Path, clusters):
    fritz = clusters["fritz"]
    job = synthetic_job(fritz, "main", 300, START, 1, 600)
    open_archive(str(tmp_path / "empty"), create=True)
    with pytest.raises(NoDataError, match="not in the replay archive") as e:
        archive_job(job, source=ReplaySource(str(tmp_path / "empty")), archive=None, cluster=fritz)
    assert not is_transient(e.value) and job.label in str(e.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientError, match="unreachable") as e:
        archive_job(job, source=ReplaySource(f"http://127.0.0.1:{port}/archive"), archive=None, cluster=fritz)
    assert is_transient(e.value)


def test_fetch_returns_stored_native_series(tmp_path: Path, clusters):
    fritz = clusters["fritz"]
    job = jobs_of(clusters)[0]
    a = make_source_archive(str(tmp_path / "a"), clusters, [job])
    from ccarchive.sources.base import SeriesRequest

    src = ReplaySource(str(tmp_path / "a"))
    got = src.fetch(job, fritz, fritz.metric("cpu_load", "main"), "node",
                    [SeriesRequest(h) for h in job.hostnames] + [SeriesRequest("nohost")])
    stored = a.load_data(job)["cpu_load"]["node"]
    np.testing.assert_array_equal(got.block.data, stored.data)
    assert [m[0] for m in got.missing] == ["nohost"]


def test_pipeline_migrates_jobs_from_sqlite_archive_through_router(tmp_path: Path, clusters):
    """Jobs stored in cc-backend's SQLite archive, replayed through a router into a file:// archive."""
    jobs = [j for j in jobs_of(clusters) if j.cluster == "fritz"]
    src_url = f"sqlite://{tmp_path}/source-archive.db"
    a = make_source_archive(src_url, clusters, jobs)
    tree = tmp_path / "tree"
    tree.mkdir()
    spec = {"kind": "router", "routes": {"fritz": {"kind": "replay", "archive": src_url}}}
    db, b, ids, messages = run_pipeline(tree, clusters["fritz"], jobs, spec)
    assert [db.get_job(i).monitoring_status for i in ids] == [3, 3]
    for job in jobs:
        old, new = a.load_data(job), b.load_data(job)
        for metric, scopes in old.items():
            for scope, blk in scopes.items():
                np.testing.assert_array_equal(new[metric][scope].data, blk.data)
    assert all(m.kind == "done" for m in messages)
