"""The synthetic metric source and synthetic jobs: determinism, shapes, ranges, gaps, missing data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ccarchive.cluster import load_cluster
from ccarchive.model import Resource
from ccarchive.scopes import group_index, plan_job, plan_requests
from ccarchive.sources import MetricSource, SeriesRequest, SyntheticSource, synthetic_job

ARCHIVE = Path(__file__).parent / "fixtures" / "cc-backend" / "archive"


@pytest.fixture(scope="module")
def fritz():
    return load_cluster(ARCHIVE / "fritz" / "cluster.json")


@pytest.fixture(scope="module")
def alex():
    return load_cluster(ARCHIVE / "alex" / "cluster.json")


def fetch_all(src, job, cluster):
    """Native blocks of every planned metric: {metric: (plan, result)}."""
    out = {}
    for p in plan_job(job, cluster):
        if p.metric.name not in out:
            out[p.metric.name] = (p, src.fetch(job, cluster, p.metric, p.native_scope, plan_requests(p)))
    return out


def test_is_a_metric_source():
    assert isinstance(SyntheticSource(), MetricSource)


def test_shapes_and_request_order(fritz):
    job = synthetic_job(fritz, "main", 7, 1_700_000_000, 2, 3599)
    mc = fritz.metric("cpu_user", "main")
    h0, h1 = job.hostnames
    reqs = [SeriesRequest(h1, ("5", "1")), SeriesRequest(h0, ("0",))]
    res = SyntheticSource().fetch(job, fritz, mc, "hwthread", reqs)
    b = res.block
    assert b.data.shape == (3, 3599 // 60 + 1) and b.data.flags["C_CONTIGUOUS"] and b.data.dtype == np.float64
    assert b.hostnames == [reqs[0].hostname] * 2 + [reqs[1].hostname] and b.ids == ["5", "1", "0"]
    assert b.lengths.tolist() == [60, 60, 60] and b.unit == mc.unit and b.timestep == 60 and not res.missing
    node = SyntheticSource().fetch(job, fritz, fritz.metric("mem_used"), "node",
                                   [SeriesRequest(h, None) for h in job.hostnames])
    assert node.block.ids == [None, None] and node.block.hostnames == job.hostnames
    job.duration = 0
    assert SyntheticSource().fetch(job, fritz, mc, "hwthread", reqs).block.data.shape == (3, 1)


def test_deterministic(fritz):
    job = synthetic_job(fritz, "main", 7, 1_700_000_000, 4, 7200)
    mc = fritz.metric("flops_any", "main")
    reqs = [SeriesRequest(h, tuple(str(i) for i in range(72))) for h in job.hostnames]
    a = SyntheticSource(seed=3).fetch(job, fritz, mc, "hwthread", reqs).block.data
    b = SyntheticSource(seed=3).fetch(job, fritz, mc, "hwthread", reqs).block.data
    assert np.array_equal(a, b, equal_nan=True)
    # a series does not depend on which other series were requested with it
    single = [SeriesRequest(job.hostnames[2], ("17",))]
    one = SyntheticSource(seed=3).fetch(job, fritz, mc, "hwthread", single)
    assert np.array_equal(one.block.data[0], a[2 * 72 + 17], equal_nan=True)
    c = SyntheticSource(seed=4).fetch(job, fritz, mc, "hwthread", reqs).block.data
    assert not np.array_equal(a, c, equal_nan=True)
    assert not np.array_equal(a[0], a[1], equal_nan=True)  # series differ from each other


@pytest.mark.parametrize(("cluster", "sub", "num_acc"), [("fritz", "main", 0), ("fritz", "spr1tb", 0),
                                                         ("alex", "a100", 16)])
def test_values_within_zero_and_peak(request, cluster, sub, num_acc):
    c = request.getfixturevalue(cluster)
    job = synthetic_job(c, sub, 11, 1_700_000_000, 2, 4 * 3600, num_acc=num_acc)
    fetched = fetch_all(SyntheticSource(seed=1, nan_gap_probability=0.01), job, c)
    assert len(fetched) == len(c.metrics_for(sub))
    for name, (plan, res) in fetched.items():
        d = res.block.data
        assert np.isfinite(d).any(), name
        assert np.nanmin(d) >= 0 and np.nanmax(d) <= plan.metric.peak, name
        assert np.nanstd(d) > 0, name
        assert np.array_equal(np.round(d, 2), d, equal_nan=True)
        groups, n = group_index(plan, res.block.hostnames, res.block.ids)
        assert (groups >= 0).all() and n == len(plan.series)


def test_plausible_shapes(fritz, alex):
    job = synthetic_job(fritz, "main", 12, 1_700_000_000, 1, 24 * 3600, hwthreads=8)
    src = SyntheticSource(nan_gap_probability=0)
    node = [SeriesRequest(job.hostnames[0], None)]
    load = src.fetch(job, fritz, fritz.metric("cpu_load"), "node", node).block.data[0]
    assert 7.0 <= np.median(load) <= 8.0  # ~ the job's 8 hwthreads
    mem = src.fetch(job, fritz, fritz.metric("mem_used"), "node", node).block.data[0]
    assert mem[-360:].mean() > mem[:360].mean() * 1.5  # grows slowly
    gjob = synthetic_job(alex, "a40", 12, 1_700_000_000, 1, 3600, num_acc=8)
    util = src.fetch(gjob, alex, alex.metric("acc_utilization"), "accelerator",
                     [SeriesRequest(gjob.hostnames[0], tuple(gjob.resources[0].accelerators))]).block
    assert util.data.shape[0] == 8 and util.data.min() >= 0 and util.data.max() <= 100
    assert util.ids == alex.sub_cluster("a40").topology.accelerator_ids()


def test_nan_gaps(fritz):
    job = synthetic_job(fritz, "main", 13, 1_700_000_000, 8, 24 * 3600)
    mc = fritz.metric("cpu_load")
    reqs = [SeriesRequest(h, None) for h in job.hostnames]
    src = SyntheticSource(nan_gap_probability=0.01, max_gap=5)
    gappy = src.fetch(job, fritz, mc, "node", reqs).block.data
    frac = np.isnan(gappy).mean()
    assert 0.005 < frac < 0.1
    isnan = np.isnan(gappy[0]).astype(np.int8)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, isnan, 0])))[::2]
    assert runs.max() <= 5 and runs.min() >= 1
    clean = SyntheticSource(nan_gap_probability=0).fetch(job, fritz, mc, "node", reqs).block.data
    assert not np.isnan(clean).any()
    assert np.array_equal(clean[~np.isnan(gappy)], gappy[~np.isnan(gappy)])


def test_missing_hosts_and_metrics(fritz):
    job = synthetic_job(fritz, "main", 14, 1_700_000_000, 3, 600)
    reqs = [SeriesRequest(h, ("0", "1")) for h in job.hostnames]
    mc = fritz.metric("cpu_user")
    res = SyntheticSource(missing_hosts=[job.hostnames[1]]).fetch(job, fritz, mc, "hwthread", reqs)
    assert res.block.hostnames == [job.hostnames[0]] * 2 + [job.hostnames[2]] * 2
    assert [(h, i) for h, i, _ in res.missing] == [(job.hostnames[1], "0"), (job.hostnames[1], "1")]
    res = SyntheticSource(missing_metrics=["cpu_user"]).fetch(job, fritz, mc, "hwthread", reqs)
    assert res.block is None and len(res.missing) == 6 and "cpu_user" in res.missing[0][2]


def test_synthetic_job(fritz, alex):
    job = synthetic_job(fritz, "main", 1001, 1_700_000_000, 4, 5000, first_node=86)
    assert job.hostnames == ["f0187", "f0188", "f0201", "f0202"]
    assert all(fritz.sub_cluster_for_host(h).name == "main" for h in job.hostnames)
    assert job.resources[0].hwthreads == list(range(72)) and job.num_hwthreads == 4 * 72
    assert (job.job_state, job.monitoring_status, job.num_nodes, job.num_acc) == ("completed", 1, 4, 0)
    assert job.walltime >= job.duration and job.user and job.project and job.submit_time <= job.start_time
    assert job.resources[0].accelerators is None
    assert synthetic_job(fritz, "main", 1001, 1_700_000_000, 4, 5000, first_node=86) == job
    gpu = synthetic_job(alex, "a100m80", 5, 1_700_000_000, 2, 600, num_acc=3, hwthreads=16)
    assert gpu.hostnames == ["a0531", "a0532"] and gpu.num_hwthreads == 32
    ids = alex.sub_cluster("a100m80").topology.accelerator_ids()
    assert [r.accelerators for r in gpu.resources] == [ids[:2], ids[:1]]
    one = synthetic_job(alex, "a40", 5, 1_700_000_000, 1, 600, hwthreads=[3, 4])
    assert one.resources == [Resource("a0121", hwthreads=[3, 4])]
    with pytest.raises(ValueError, match="accelerators per node"):
        synthetic_job(alex, "a40", 5, 0, 1, 600, num_acc=9)
    with pytest.raises(ValueError, match="nodes"):
        synthetic_job(fritz, "spr2tb", 5, 0, 17, 600)


def test_large_job_node_scope(fritz):
    """64 nodes x 7 days at 60 s: shapes only (speed is measured by bench/, not here)."""
    job = synthetic_job(fritz, "main", 99, 1_700_000_000, 64, 7 * 86400)
    res = SyntheticSource().fetch(job, fritz, fritz.metric("mem_used"), "node",
                                  [SeriesRequest(h, None) for h in job.hostnames])
    assert res.block.data.shape == (64, 7 * 1440 + 1)
