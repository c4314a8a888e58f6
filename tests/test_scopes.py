"""Scope plans (spec §3): requested and effective scopes, series, members, order, fetch grouping."""

from __future__ import annotations

import numpy as np

from ccarchive.cluster import load_cluster
from ccarchive.model import Job, Resource
from ccarchive.scopes import group_index, plan_job, plan_requests, requested_scopes
from ccarchive.sources.base import SeriesRequest

A40_GPUS = ["00000000:01:00.0", "00000000:25:00.0", "00000000:41:00.0", "00000000:61:00.0"]


def job(cluster, sub, hosts, num_acc=0, **kw):
    resources = [h if isinstance(h, Resource) else Resource(h) for h in hosts]
    return Job(cluster=cluster, sub_cluster=sub, job_id=1, start_time=1_700_000_000, duration=600,
               resources=resources, num_nodes=len(resources), num_acc=num_acc, **kw)


def by_key(plans):
    out = {(p.metric.name, p.scope): p for p in plans}
    assert len(out) == len(plans), "each effective scope at most once per metric"
    return out


def test_requested_scopes():
    assert requested_scopes(job("f", "main", ["a"] * 8)) == ["node", "core"]
    assert requested_scopes(job("f", "main", ["a"] * 9)) == ["node"]
    assert requested_scopes(job("f", "main", ["a"] * 9), core_scope_max_nodes=16) == ["node", "core"]
    assert requested_scopes(job("f", "main", ["a"], num_acc=2)) == ["node", "core", "accelerator"]


def test_fritz_one_node_job(fritz):
    plans = by_key(plan_job(job("fritz", "main", ["f0649"]), fritz))
    assert set(plans) == {(m.name, s) for m in fritz.metric_config
                          for s in ({"node": ["node"], "hwthread": ["node", "core"],
                                     "socket": ["node", "socket"]}[m.scope])}
    load = plans["cpu_load", "node"]
    assert (load.native_scope, load.aggregated) == ("node", False)
    assert [(s.hostname, s.id, s.members) for s in load.series] == [("f0649", None, None)]

    node = plans["cpu_user", "node"]
    assert node.native_scope == "hwthread" and node.aggregated and len(node.series) == 1
    assert node.series[0].id == "0" and node.series[0].members == tuple(str(i) for i in range(72))
    core = plans["cpu_user", "core"]
    assert [s.id for s in core.series] == [str(i) for i in range(72)]
    assert all(s.members == (s.id,) and s.hostname == "f0649" for s in core.series)

    bw = plans["mem_bw", "node"]
    assert [(s.id, s.members) for s in bw.series] == [("0", ("0", "1"))]
    sockets = plans["mem_bw", "socket"]
    assert [(s.id, s.members) for s in sockets.series] == [("0", ("0",)), ("1", ("1",))]
    assert ("mem_bw", "core") not in plans

    assert plan_requests(core) == [SeriesRequest("f0649", tuple(str(i) for i in range(72)))]
    assert plan_requests(load) == [SeriesRequest("f0649", None)]
    assert plan_requests(sockets) == plan_requests(bw) == [SeriesRequest("f0649", ("0", "1"))]


def test_removed_metrics_skipped(fritz):
    names = {p.metric.name for p in plan_job(job("fritz", "spr2tb", ["f2281"]), fritz)}
    assert "cpu_load" in names and not names & {"flops_any", "flops_sp", "mem_bw", "clock"}
    plans = by_key(plan_job(job("fritz", "spr2tb", ["f2281"]), fritz))
    assert plans["cpu_load", "node"].metric.peak == 104.0  # effective (overridden) config


def test_shared_node_job_uses_own_hwthreads(fritz):
    j = job("fritz", "main", [Resource("f0101", hwthreads=[40, 2, 3])])
    plans = by_key(plan_job(j, fritz))
    assert plans["cpu_user", "node"].series[0].members == ("2", "3", "40")
    assert [s.id for s in plans["cpu_user", "core"].series] == ["2", "3", "40"]
    assert [s.members for s in plans["mem_bw", "node"].series] == [("0", "1")]
    assert [s.id for s in plans["mem_bw", "socket"].series] == ["0", "1"]


def test_smt_topology_core_aggregation(fritz):
    """hwthread -> core aggregates only the job's hwthreads of each core (Go bug B12 fixed);
    core- and memoryDomain-native metrics map to their own scope and to node."""
    doc = {"name": "tiny", "metricConfig": [
        {"name": "hw", "unit": {"base": ""}, "scope": "hwthread", "aggregation": "sum", "timestep": 10,
         "peak": 1, "normal": 1, "caution": 1, "alert": 1},
        {"name": "co", "unit": {"base": ""}, "scope": "core", "aggregation": "avg", "timestep": 10,
         "peak": 1, "normal": 1, "caution": 1, "alert": 1},
        {"name": "md", "unit": {"base": ""}, "scope": "memoryDomain", "aggregation": "sum", "timestep": 10,
         "peak": 1, "normal": 1, "caution": 1, "alert": 1}],
        "subClusters": [{"name": "s", "nodes": "n[01-04]", "topology": {
            "node": list(range(8)), "socket": [[0, 1, 4, 5], [2, 3, 6, 7]],
            "memoryDomain": [[0, 4], [1, 5], [2, 6], [3, 7]], "core": [[0, 4], [1, 5], [2, 6], [3, 7]]}}]}
    c = load_cluster(doc)
    j = Job(cluster="tiny", sub_cluster="s", job_id=1, start_time=0, num_nodes=2, resources=[
        Resource("n02", hwthreads=[5, 0, 4, 1]), Resource("n01", hwthreads=[6])])
    plans = by_key(plan_job(j, c))
    assert [(s.hostname, s.id, s.members) for s in plans["hw", "core"].series] == [
        ("n02", "0", ("0", "4")), ("n02", "1", ("1", "5")), ("n01", "6", ("6",))]
    assert [(s.hostname, s.id, s.members) for s in plans["hw", "node"].series] == [
        ("n02", "0", ("0", "1", "4", "5")), ("n01", "6", ("6",))]
    assert [(s.hostname, s.id) for s in plans["co", "core"].series] == [
        ("n02", "0"), ("n02", "1"), ("n01", "2")]
    assert plans["co", "node"].series[0].members == ("0", "1")
    assert [s.id for s in plans["md", "memoryDomain"].series] == ["0", "1", "2"]
    assert plan_requests(plans["hw", "core"]) == [SeriesRequest("n02", ("0", "1", "4", "5")),
                                                  SeriesRequest("n01", ("6",))]


def test_alex_gpu_job(alex):
    j = job("alex", "a40", [Resource("a0121", hwthreads=list(range(16)), accelerators=A40_GPUS[:2]),
                            Resource("a0122", hwthreads=list(range(16)), accelerators=A40_GPUS[2:])],
            num_acc=4)
    plans = by_key(plan_job(j, alex))
    assert not any(s == "hwthread" for _, s in plans), "ccarchive adds no hwthread scope for GPU jobs"
    assert set(s for m, s in plans if m == "cpu_user") == {"node", "core"}
    assert set(s for m, s in plans if m == "mem_bw") == {"node", "socket"}
    util = plans["acc_utilization", "accelerator"]
    assert [(s.hostname, s.id, s.members) for s in util.series] == [
        ("a0121", A40_GPUS[0], (A40_GPUS[0],)), ("a0121", A40_GPUS[1], (A40_GPUS[1],)),
        ("a0122", A40_GPUS[2], (A40_GPUS[2],)), ("a0122", A40_GPUS[3], (A40_GPUS[3],))]
    node = plans["acc_utilization", "node"]
    assert [(s.hostname, s.id, s.members) for s in node.series] == [
        ("a0121", A40_GPUS[0], tuple(A40_GPUS[:2])), ("a0122", A40_GPUS[2], tuple(A40_GPUS[2:]))]
    assert ("acc_utilization", "core") not in plans
    assert plan_requests(util)[1] == SeriesRequest("a0122", tuple(A40_GPUS[2:]))
    assert len(plans["cpu_user", "core"].series) == 32


def test_accelerator_ids_keep_resource_order(alex):
    gpus = [A40_GPUS[3], A40_GPUS[0]]
    j = job("alex", "a40", [Resource("a0121", accelerators=gpus)], num_acc=2)
    plans = by_key(plan_job(j, alex))
    assert [s.id for s in plans["acc_power", "accelerator"].series] == gpus
    assert plans["acc_power", "node"].series[0].members == tuple(gpus)
    assert plan_requests(plans["acc_power", "node"]) == [SeriesRequest("a0121", tuple(gpus))]


def test_accelerators_absent(alex):
    names = {p.metric.name for p in plan_job(job("alex", "a40", ["a0121"]), alex)}
    assert not any(n.startswith(("acc_", "nv_")) for n in names)
    # a GPU job whose second host lists no accelerators: no accelerator series there
    j = job("alex", "a40", [Resource("a0121", accelerators=A40_GPUS[:1]), Resource("a0122")], num_acc=1)
    plans = by_key(plan_job(j, alex))
    assert [s.hostname for s in plans["nv_temp", "node"].series] == ["a0121"]


def test_sixteen_node_job_has_no_core_scope(fritz):
    hosts = [f"f01{i:02d}" for i in range(16, 0, -1)]  # resources order is kept, not sorted
    plans = by_key(plan_job(job("fritz", "main", hosts), fritz))
    assert {s for _, s in plans} == {"node"}
    assert [s.hostname for s in plans["cpu_user", "node"].series] == hosts
    assert [s.hostname for s in plans["cpu_load", "node"].series] == hosts
    assert all(s.id == "0" for s in plans["flops_any", "node"].series)
    with_core = by_key(plan_job(job("fritz", "main", hosts), fritz, core_scope_max_nodes=16))
    assert len(with_core["cpu_user", "core"].series) == 16 * 72
    assert [s.hostname for s in with_core["cpu_user", "core"].series[70:74]] == hosts[:1] * 2 + hosts[1:2] * 2


def test_subcluster_assigned_from_host(fritz):
    plans = plan_job(job("fritz", "", ["f2281"]), fritz)
    assert plans[0].metric.peak == 104.0  # spr1tb override of cpu_load


def test_group_index(fritz):
    j = job("fritz", "main", [Resource("f0101", hwthreads=[0, 1]), Resource("f0102", hwthreads=[36])])
    plans = by_key(plan_job(j, fritz))
    node = plans["cpu_user", "node"]
    groups, n = group_index(node, ["f0102", "f0101", "f0101", "f0101", "f0103"], ["36", "1", "0", "5", "0"])
    assert n == 2 and groups.dtype == np.int64
    assert groups.tolist() == [1, 0, 0, -1, -1]
    core = plans["cpu_user", "core"]
    groups, n = group_index(core, ["f0101", "f0102", "f0101"], ["1", "36", "0"])
    assert (n, groups.tolist()) == (3, [1, 2, 0])
    load = plans["cpu_load", "node"]
    groups, n = group_index(load, ["f0102", "f0101", "f0109"], [None, None, None])
    assert (n, groups.tolist()) == (2, [1, 0, -1])
    assert group_index(load, [], [])[0].shape == (0,)
