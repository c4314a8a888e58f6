"""Load a job's metric data at the effective scopes of spec §3.

For each metric the scope plan (``ccarchive.scopes``) says which series the archive gets and
which native series make up each of them.  The source is asked once per metric for the union of
the native series; the aggregation kernel then sums or averages the members of every planned
series.  Missing hosts and metrics are collected as warnings; only a job without any data fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import NoDataError
from .kernels.aggregate import aggregate
from .model import Job, JobData, JobMetric
from .scopes import ScopePlan, plan_job
from .sources.base import SeriesRequest

if TYPE_CHECKING:
    from .cluster import Cluster
    from .sources.base import MetricSource

log = logging.getLogger(__name__)

_AGG_MODE = {"sum": 0, "avg": 1}


@dataclass
class LoadReport:
    """Missing series and metrics, one line each."""

    missing: list[str] = field(default_factory=list)


def _id_order(i: str) -> tuple[int, int, str]:
    return (0, int(i), "") if i.isdigit() else (1, 0, i)


def native_requests(plans: list[ScopePlan]) -> list[SeriesRequest]:
    """One request per host (first-seen order) with the union of the native ids all plans need."""
    wanted: dict[str, set[str] | None] = {}
    for plan in plans:
        for ps in plan.series:
            if ps.members is None:
                wanted.setdefault(ps.hostname, None)
            else:
                got = wanted.setdefault(ps.hostname, set())
                if got is not None:
                    got.update(ps.members)
    return [
        SeriesRequest(h, None if ids is None else tuple(sorted(ids, key=_id_order)))
        for h, ids in wanted.items()
    ]


def _aggregate_plan(plan: ScopePlan, native: JobMetric) -> JobMetric | None:
    """Build the planned series of one (metric, effective scope) from fetched native rows."""
    row_of = {(h, i): r for r, (h, i) in enumerate(zip(native.hostnames, native.ids, strict=True))}
    member_rows: list[int] = []
    groups: list[int] = []
    hostnames: list[str] = []
    ids: list[str | None] = []
    for ps in plan.series:
        keys = [(ps.hostname, None)] if ps.members is None else [(ps.hostname, m) for m in ps.members]
        rows = [row_of[k] for k in keys if k in row_of]
        if not rows:
            continue
        g = len(hostnames)
        hostnames.append(ps.hostname)
        ids.append(ps.id)
        member_rows.extend(rows)
        groups.extend([g] * len(rows))
    if not hostnames:
        return None
    rows_arr = np.asarray(member_rows, dtype=np.int64)
    if len(rows_arr) == len(hostnames):  # one member each: a reordering, no arithmetic
        data = np.ascontiguousarray(native.data[rows_arr])
        lengths = np.ascontiguousarray(native.lengths[rows_arr])
    else:
        data, lengths = aggregate(
            np.ascontiguousarray(native.data[rows_arr]),
            np.ascontiguousarray(native.lengths[rows_arr]),
            np.asarray(groups, dtype=np.int64),
            len(hostnames),
            _AGG_MODE.get(plan.metric.aggregation, 0),
        )
    return JobMetric(native.unit, native.timestep, hostnames, ids, data, lengths)


def load_job_data(
    job: Job,
    cluster: Cluster,
    source: MetricSource,
    *,
    core_scope_max_nodes: int = 8,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[JobData, LoadReport]:
    """Fetch and aggregate all metrics of a job; raises NoDataError when nothing came back."""
    report = LoadReport()
    # -- whole-job sources (issue 4): a source whose stored data is already at the effective
    # scopes (the archive replay) may offer load_job(job, cluster, core_scope_max_nodes=...)
    # -> (JobData, missing lines) or None (= load through fetch as below).
    load_whole = getattr(source, "load_job", None)
    whole = load_whole(job, cluster, core_scope_max_nodes=core_scope_max_nodes) if load_whole else None
    if whole is not None:
        report.missing.extend(whole[1])
        for line in report.missing:
            log.warning("%s: %s", job.label, line)
        if not whole[0]:
            raise NoDataError(f"{job.label}: the metric source returned no data for any metric")
        return whole[0], report
    # -- end of whole-job sources
    plans = plan_job(job, cluster, core_scope_max_nodes=core_scope_max_nodes)
    by_metric: dict[str, list[ScopePlan]] = {}
    for p in plans:
        by_metric.setdefault(p.metric.name, []).append(p)
    data: JobData = {}
    for name, mplans in by_metric.items():
        if cancelled is not None and cancelled():
            from .errors import CancelledError

            raise CancelledError(f"{job.label}: cancelled while loading {name}")
        # One fetch per (metric, native scope): all plans of a metric share the native scope.
        native_scope = mplans[0].native_scope
        requests = native_requests(mplans)
        result = source.fetch(job, cluster, mplans[0].metric, native_scope, requests)
        for host, sid, reason in result.missing:
            where = host if sid is None else f"{host} id {sid}"
            report.missing.append(f"{name}: no data for {where}: {reason}")
        if result.block is None or result.block.num_series == 0:
            if not result.missing:
                report.missing.append(f"{name}: no data")
            continue
        for plan in mplans:
            block = _aggregate_plan(plan, result.block)
            if block is not None:
                data.setdefault(name, {})[plan.scope] = block
    if not data:
        raise NoDataError(f"{job.label}: the metric source returned no data for any metric")
    for line in report.missing:
        log.warning("%s: %s", job.label, line)
    return data, report
