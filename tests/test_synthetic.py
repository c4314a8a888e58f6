"""The synthetic metric source and synthetic jobs: determinism, shapes, ranges, gaps, missing data."""

from __future__ import annotations

import numpy as np
import pytest

from ccarchive.model import Resource
from ccarchive.scopes import group_index, plan_job, plan_requests
from ccarchive.sources import MetricSource, SeriesRequest, SyntheticSource, synthetic_job


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


# ---- physical consistency (the demo data must not contradict itself)

def _per_node(res):
    """{hostname: (series, samples) block} of a fetch result."""
    b = res.block
    hosts = np.array(b.hostnames)
    return {h: b.data[hosts == h] for h in dict.fromkeys(b.hostnames)}


@pytest.fixture(scope="module")
def fritz_fetched(fritz):
    job = synthetic_job(fritz, "main", 21, 1_700_000_000, 3, 6 * 3600, seed=2)
    return job, fetch_all(SyntheticSource(seed=5, nan_gap_probability=0.01), job, fritz)


def test_flops_any_is_sp_plus_twice_dp(fritz_fetched):
    _, f = fritz_fetched
    any_, sp, dp = (f[m][1].block for m in ("flops_any", "flops_sp", "flops_dp"))
    assert any_.hostnames == sp.hostnames == dp.hostnames and any_.ids == sp.ids == dp.ids
    assert np.isnan(any_.data).any()  # gaps exist, and hit all three metrics at the same samples
    assert np.array_equal(np.isnan(any_.data), np.isnan(sp.data) | np.isnan(dp.data))
    assert np.allclose(any_.data, sp.data + 2 * dp.data, atol=1e-9, rtol=0, equal_nan=True)
    assert np.nanmax(any_.data) > 0 and np.nanmax(dp.data) > 0


def test_flops_split_differs_between_jobs(fritz):
    """Some jobs compute in double, some in single precision: the share of dp work varies."""
    src = SyntheticSource(nan_gap_probability=0)
    shares = []
    for jid in range(12):
        job = synthetic_job(fritz, "main", 300 + jid, 1_700_000_000, 1, 3600)
        reqs = [SeriesRequest(job.hostnames[0], ("0", "1"))]
        sp = src.fetch(job, fritz, fritz.metric("flops_sp", "main"), "hwthread", reqs).block.data
        dp = src.fetch(job, fritz, fritz.metric("flops_dp", "main"), "hwthread", reqs).block.data
        shares.append(2 * dp.sum() / (sp.sum() + 2 * dp.sum()))
    assert min(shares) < 0.2 and max(shares) > 0.8


def test_nfs_total_is_read_plus_write(fritz_fetched):
    _, f = fritz_fetched
    tot, rd, wr = (f[m][1].block.data for m in ("nfs4_total", "nfs4_read", "nfs4_write"))
    assert np.allclose(tot, rd + wr, atol=1e-9, rtol=0, equal_nan=True)
    assert np.nanmax(tot) <= f["nfs4_total"][0].metric.peak and np.nanmax(tot) > 0


def test_node_totals_below_subcluster_peaks(fritz, fritz_fetched):
    _, f = fritz_fetched
    sc = fritz.sub_cluster("main")
    for metric, limit in (("flops_any", min(sc.flop_rate_simd.value, fritz.metric("flops_any").peak)),
                          ("flops_dp", fritz.metric("flops_dp").peak), ("flops_sp", fritz.metric("flops_sp").peak),
                          ("mem_bw", min(sc.memory_bandwidth.value, fritz.metric("mem_bw").peak))):
        for host, block in _per_node(f[metric][1]).items():
            node_total = np.nansum(block, axis=0)
            assert node_total.max() <= limit, (metric, host)
            if metric in ("flops_any", "mem_bw"):
                assert node_total.max() > 0.01 * limit, (metric, host)  # and not trivially so


def test_load_matches_busy_hwthreads(fritz):
    """cpu_load ~ the sum of the busy shares of the job's hwthreads on the host (cpu_user / 100)."""
    src = SyntheticSource(nan_gap_probability=0.01)
    for hw in (8, None):
        job = synthetic_job(fritz, "main", 22, 1_700_000_000, 2, 4 * 3600, hwthreads=hw)
        load = src.fetch(job, fritz, fritz.metric("cpu_load"), "node",
                         [SeriesRequest(h, None) for h in job.hostnames]).block
        ids = tuple(str(i) for i in job.resources[0].hwthreads)
        user = src.fetch(job, fritz, fritz.metric("cpu_user"), "hwthread",
                         [SeriesRequest(h, ids) for h in job.hostnames])
        n = len(ids)
        for i, (host, block) in enumerate(_per_node(user).items()):
            assert block.shape[0] == n and load.hostnames[i] == host
            busy = block.sum(axis=0) / 100.0  # NaN where the host had a gap: load has it too
            assert np.array_equal(np.isnan(busy), np.isnan(load.data[i]))
            assert np.nanmax(np.abs(load.data[i] - busy)) <= 0.05 * n + 0.1
            assert np.nanmax(load.data[i]) <= n and np.nanmedian(load.data[i]) > 0.85 * n
            assert np.nanmax(block) <= 100.0


def test_gpu_metrics_follow_utilization(alex):
    job = synthetic_job(alex, "a100", 23, 1_700_000_000, 2, 3 * 3600, num_acc=6)
    f = fetch_all(SyntheticSource(seed=2, nan_gap_probability=0), job, alex)
    util, power, mem_util, mem, temp = (f[m][1].block for m in ("acc_utilization", "acc_power", "nv_mem_util",
                                                               "acc_mem_used", "nv_temp"))
    assert util.num_series == 6 and util.ids == power.ids == mem.ids  # only the allocated devices
    assert np.corrcoef(util.data.ravel(), power.data.ravel())[0, 1] > 0.9
    assert np.corrcoef(util.data.ravel(), temp.data.ravel())[0, 1] > 0.9
    assert (mem_util.data <= util.data + 1.0).all()  # memory controller busy <= SMs busy (+ noise)
    peak = alex.metric("acc_power", "a100").peak
    assert power.data.max() <= peak and power.data.min() > 0.1 * peak  # an idle floor, never above the peak
    assert mem.data.max() <= alex.metric("acc_mem_used", "a100").peak and mem.data[:, -1].min() > 0


def test_flops_without_split_stay_below_peak(fritz):
    """spr1tb has no flops_sp/flops_dp: flops_any is generated directly, still below the peaks."""
    job = synthetic_job(fritz, "spr1tb", 24, 1_700_000_000, 2, 3600)
    f = fetch_all(SyntheticSource(), job, fritz)
    assert "flops_sp" not in f
    limit = min(fritz.metric("flops_any", "spr1tb").peak, fritz.sub_cluster("spr1tb").flop_rate_simd.value)
    for block in _per_node(f["flops_any"][1]).values():
        assert 0 < np.nansum(block, axis=0).max() <= limit
