"""The scope plan: which series of which metric at which scope a job's archive holds.

Why a separate, data-only step: the plan is the contract between the metric source (which fetches
native-scope series), the kernels (which aggregate them element-wise) and the writer (which needs
a deterministic series order).  Computing it once, as plain data, keeps all three simple and lets
the tests check the scope rules without any I/O.

Rules (docs/format.md, "Scopes"): requested scopes are ``node``, ``core`` for jobs
with at most ``core_scope_max_nodes`` nodes, ``accelerator`` for jobs with accelerators.  A metric
gets the coarser of its native and each requested scope, each at most once.  Deliberate
deviations from cc-backend:

- the accelerator request applies only to accelerator-native metrics (Go also archives hwthread
  data of every hwthread-native metric of GPU jobs);
- hwthread -> core aggregates the job's hwthreads of each core, not all of the core's (Go sums them
  all, also another job's on a shared node);
- ids and series are sorted (Go iterates maps), so output is deterministic.

A :class:`PlannedSeries` names the native ids (``members``) whose element-wise sum/avg (the
metric's ``aggregation``) forms it; ``members`` is None for node-native series.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .cluster import Cluster, MetricConfig, SubCluster, Topology, coarser
from .errors import InputError
from .model import Job, Resource
from .sources.base import SeriesRequest


@dataclass(frozen=True)
class PlannedSeries:
    hostname: str
    id: str | None
    members: tuple[str, ...] | None


@dataclass
class ScopePlan:
    """All series of one metric at one effective scope."""

    metric: MetricConfig
    scope: str
    native_scope: str
    series: list[PlannedSeries]

    @property
    def aggregated(self) -> bool:
        """True if series are aggregates of several native series (scope coarser than native)."""
        return self.scope != self.native_scope


def requested_scopes(job: Job, core_scope_max_nodes: int = 8) -> list[str]:
    """``node``, plus ``core`` for small jobs, plus ``accelerator`` for jobs with accelerators."""
    scopes = ["node"]
    if job.num_nodes <= core_scope_max_nodes:
        scopes.append("core")
    if job.num_acc > 0:
        scopes.append("accelerator")
    return scopes


def job_sub_cluster(job: Job, cluster: Cluster) -> SubCluster:
    """The job's subcluster; assigned from its first host if the job has none (AssignSubCluster)."""
    if job.sub_cluster:
        return cluster.sub_cluster(job.sub_cluster)
    if not job.resources:
        raise InputError(f"{job.label} has neither a subcluster nor resources")
    return cluster.sub_cluster_for_host(job.resources[0].hostname)


def plan_job(job: Job, cluster: Cluster, *, core_scope_max_nodes: int = 8) -> list[ScopePlan]:
    """One :class:`ScopePlan` per (metric, effective scope) with at least one series, in
    metricConfig order, scopes in request order (node first)."""
    sc = job_sub_cluster(job, cluster)
    requested = requested_scopes(job, core_scope_max_nodes)
    plans: list[ScopePlan] = []
    shared: dict[tuple[str, str], list[PlannedSeries]] = {}
    for metric in cluster.metrics_for(sc.name):
        native = metric.scope
        if native == "accelerator" and job.num_acc <= 0:
            continue
        done: set[str] = set()
        for req in requested:
            if req == "accelerator" and native != "accelerator":
                continue  # ccarchive: no hwthread/core/... data for GPU jobs (Go adds it)
            if native == "accelerator" and req not in ("node", "accelerator"):
                continue  # an accelerator has no cores or sockets
            scope = coarser(native, req)
            if scope in done:
                continue
            done.add(scope)
            # the metrics of one native scope share their series (19 metrics, 5 layouts on fritz)
            series = shared.get((native, scope))
            if series is None:
                series = shared[native, scope] = [
                    PlannedSeries(r.hostname, i, m)
                    for r in job.resources for i, m in _host_layout(r, sc.topology, native, scope)]
            if series:
                plans.append(ScopePlan(metric, scope, native, list(series)))
    return plans


def _job_hwthreads(resource: Resource, topo: Topology) -> list[int]:
    hws = resource.hwthreads if resource.hwthreads is not None else (topo.node or [])
    return sorted(set(hws))


def _native_ids(resource: Resource, topo: Topology, native: str) -> list[int] | list[str]:
    """The native ids of the job on one host: hwthreads, touched groups or accelerators."""
    if native == "accelerator":
        return list(dict.fromkeys(resource.accelerators or []))
    hws = _job_hwthreads(resource, topo)
    return hws if native == "hwthread" else topo.groups_of(native, hws)


@functools.lru_cache(maxsize=1024)
def _names(ids: tuple[int | str, ...]) -> tuple[str, ...]:
    """Native ids as strings, one shared tuple per id set: a 64-node job plans 64 hosts x 72
    hwthreads for each of its hwthread metrics, the same few tuples over and over."""
    return tuple(str(i) for i in ids)


#: (id, members) of each planned series of one host; ``None, None`` for node-native metrics
Layout = tuple[tuple[str | None, tuple[str, ...] | None], ...]
_NODE_LAYOUT: Layout = ((None, None),)
#: host layouts by (id of the topology, native scope, scope, the host's hwthreads or accelerators):
#: the jobs of a cluster repeat a few layouts on different hosts.  Each entry keeps its topology
#: alive, so its id cannot be reused while the entry exists.
_LAYOUTS: dict[tuple[int, str, str, tuple[int, ...] | tuple[str, ...] | None], tuple[Topology, Layout]] = {}
#: the cache is emptied when it grows beyond this (shared nodes give many hwthread sets)
_LAYOUTS_MAX = 4096


def _host_layout(resource: Resource, topo: Topology, native: str, scope: str) -> Layout:
    """The planned series of the job on one host, without the hostname (cached)."""
    if native == "node":
        return _NODE_LAYOUT
    if native == "accelerator":
        own: tuple[int, ...] | tuple[str, ...] | None = tuple(resource.accelerators or ())
    else:
        own = None if resource.hwthreads is None else tuple(resource.hwthreads)
    key = (id(topo), native, scope, own)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is topo:
        return hit[1]
    layout = _make_layout(resource, topo, native, scope)
    if len(_LAYOUTS) >= _LAYOUTS_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[key] = (topo, layout)
    return layout


def _make_layout(resource: Resource, topo: Topology, native: str, scope: str) -> Layout:
    ids = _native_ids(resource, topo, native)
    if not ids:
        return ()
    names = _names(tuple(ids))
    if scope == "node":
        return ((names[0], names),)
    if scope == native:
        return tuple((n, (n,)) for n in names)
    # a CPU scope coarser than the native one: each container (core, socket, domain) gathers the
    # job's native ids whose hwthreads it overlaps - for hwthread -> core the job's hwthreads of it
    containers: dict[int, list[str]] = {}
    for i in ids:
        for c in topo.groups_of(scope, topo.members(native, int(i))):
            containers.setdefault(c, []).append(str(i))
    return tuple((m[0], tuple(m)) for _, m in sorted(containers.items()))


def plan_requests(plan: ScopePlan) -> list[SeriesRequest]:
    """What to fetch for a plan: one request per host (resources order), the union of its members
    (numeric ids ascending, accelerator ids in resource order); ids None for node-native."""
    by_host: dict[str, dict[str, None]] = {}
    for s in plan.series:
        ids = by_host.setdefault(s.hostname, {})
        for m in s.members or ():
            ids[m] = None
    out = []
    for host, ids in by_host.items():
        if plan.native_scope == "node":
            out.append(SeriesRequest(host, None))
            continue
        keys = list(ids)
        if plan.native_scope != "accelerator" and all(k.isdigit() for k in keys):
            keys.sort(key=int)
        out.append(SeriesRequest(host, tuple(keys)))
    return out


def group_index(plan: ScopePlan, fetched_hostnames: list[str],
                fetched_ids: list[str | None]) -> tuple[npt.NDArray[np.int64], int]:
    """Map each fetched native row to the index of the planned series it belongs to (-1: not
    needed).  Rows of node-native metrics match by hostname alone.  Returns (groups, n_groups)."""
    lookup: dict[tuple[str, str | None], int] = {}
    for k, s in enumerate(plan.series):
        for m in s.members if s.members is not None else (None,):
            lookup.setdefault((s.hostname, m), k)
    node_native = plan.native_scope == "node"
    rows = zip(fetched_hostnames, fetched_ids, strict=True)
    groups = np.fromiter((lookup.get((h, None if node_native else i), -1) for h, i in rows),
                         dtype=np.int64, count=len(fetched_hostnames))
    return groups, len(plan.series)
