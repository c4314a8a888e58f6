"""The statistics rules (docs/format.md, "Statistics"): per-series statistics, statisticsSeries, job statistics,
footprint and energy.

Per-series and per-time-step work runs in the numba kernels over whole (metric, scope) blocks;
what remains here are the rules (rounding, zero-for-empty, which metrics count) applied to a
handful of numbers per metric.  Nothing here does I/O.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .kernels.reduce import block_statistics, round2, round2_scalar
from .kernels.timestep import statistics_series
from .model import (
    MONITORING_ARCHIVED,
    Job,
    JobData,
    JobMetric,
    JobStatistics,
    StatsSeries,
    iter_metrics,
)

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger(__name__)

#: statisticsSeries is added for every (metric, scope) with at least this many series.
STATS_SERIES_MIN_SERIES = 8


@dataclass
class StatisticsReport:
    """What the statistics step noticed; logged and counted, never fatal."""

    masked_samples: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def compute_block_statistics(block: JobMetric) -> int:
    """Fill ``block.statistics`` (min, avg, max per series, rounded half away from zero to two
    decimals, all three 0 for a series without samples) and, for blocks of at least 8 series,
    ``block.statistics_series``.  Samples outside the float32 range become NaN first (they
    cannot be encoded); returns how many were masked."""
    data = np.ascontiguousarray(block.data, dtype=np.float64)
    block.data = data
    lengths = np.ascontiguousarray(block.lengths, dtype=np.int64)
    masked, block.statistics = block_statistics(data, lengths)
    block.has_statistics = np.ones(block.num_series, dtype=np.bool_)
    if block.num_series >= STATS_SERIES_MIN_SERIES:
        smin, smedian, smax, smean = statistics_series(data, lengths)
        block.statistics_series = StatsSeries(min=smin, median=smedian, max=smax, mean=smean)
    else:
        block.statistics_series = None
    return int(masked)


def compute_data_statistics(data: JobData, report: StatisticsReport | None = None) -> StatisticsReport:
    """Per-series statistics and statisticsSeries for every block of a job."""
    report = report if report is not None else StatisticsReport()
    for metric, scope, block in iter_metrics(data):
        masked = compute_block_statistics(block)
        if masked:
            report.masked_samples[f"{metric}/{scope}"] = masked
            report.warnings.append(
                f"{metric} ({scope}): {masked} samples outside the float32 range treated as missing"
            )
    return report


def _go_min(a: float, b: float) -> float:
    """Go's math.Min: -0 wins over +0."""
    if a == b == 0.0:
        return a if math.copysign(1.0, a) < 0 else b
    return a if a < b else b


def _go_max(a: float, b: float) -> float:
    """Go's math.Max: +0 wins over -0."""
    if a == b == 0.0:
        return a if math.copysign(1.0, a) > 0 else b
    return a if a > b else b


def job_statistics(
    job: Job, data: JobData, cluster: Cluster | None, report: StatisticsReport | None = None
) -> dict[str, JobStatistics]:
    """meta.json statistics: for each metric with node-scope series,
    avg = round2(sum of node-series avgs / numNodes), min/max over the node-series min/max."""
    out: dict[str, JobStatistics] = {}
    nodes = max(job.num_nodes, 1)
    for metric in sorted(data):
        block = data[metric].get("node")
        if block is None or block.num_series == 0:
            continue
        if block.statistics is None:
            compute_block_statistics(block)
        assert block.statistics is not None
        total = 0.0
        vmin = 3.4028234663852886e38  # Go starts at math.MaxFloat32
        vmax = -3.4028234663852886e38
        for s_min, s_avg, s_max in block.statistics.tolist():
            total += s_avg
            vmin = _go_min(vmin, s_min)
            vmax = _go_max(vmax, s_max)
        mc = cluster.metric(metric) if cluster is not None else None
        if mc is None and report is not None:
            report.warnings.append(
                f"{metric}: not in the cluster config of {job.cluster!r}; kept with the unit of its data"
            )
        unit = mc.unit if mc is not None else block.unit
        out[metric] = JobStatistics(unit=unit, avg=round2_scalar(total / nodes), min=vmin, max=vmax)
    return out


def _stat_value(stats: JobStatistics | None, which: str) -> float:
    if stats is None:
        return 0.0
    return float({"avg": stats.avg, "min": stats.min, "max": stats.max}[which])


def footprint(job: Job, cluster: Cluster, stats: dict[str, JobStatistics]) -> dict[str, float]:
    """``<metric>_<avg|min|max>`` for every metric with a footprint setting in the job's
    subcluster (a subcluster override wins); 0 when the metric has no statistics."""
    out: dict[str, float] = {}
    for mc in cluster.metrics_for(job.sub_cluster):
        kind = mc.footprint
        if not kind:
            continue
        if kind not in ("avg", "min", "max"):
            log.warning("%s: footprint %r of metric %s is not avg|min|max; skipped", job.label, kind, mc.name)
            continue
        out[f"{mc.name}_{kind}"] = _stat_value(stats.get(mc.name), kind)
    return out


def energy(
    job: Job, cluster: Cluster, stats: dict[str, JobStatistics], report: StatisticsReport | None = None
) -> tuple[dict[str, float], float]:
    """Energy in kWh per metric with ``energy: power`` (avg W x nodes x hours / 1000, rounded to
    two decimals) and their rounded sum; ``energy: energy`` metrics count 0 with a warning, as in
    cc-backend."""
    per_metric: dict[str, float] = {}
    total = 0.0
    for mc in cluster.metrics_for(job.sub_cluster):
        if not mc.energy:
            continue
        if mc.energy == "power":
            avg = _stat_value(stats.get(mc.name), "avg")
            kwh = round2_scalar(((avg * job.num_nodes) * (job.duration / 3600.0)) / 1000.0)
        else:
            kwh = 0.0
            if report is not None:
                report.warnings.append(f"{mc.name}: energy kind {mc.energy!r} is not supported; counted as 0")
        per_metric[mc.name] = kwh
        total += kwh
    return per_metric, round2_scalar(total)


def finalize_job(
    job: Job, data: JobData, cluster: Cluster, report: StatisticsReport | None = None
) -> Job:
    """The job as it goes into meta.json and the job DB: statistics, footprint, energy, status 3."""
    stats = job_statistics(job, data, cluster, report)
    fp = footprint(job, cluster, stats)
    efp, total = energy(job, cluster, stats, report)
    return replace(
        job,
        statistics=stats,
        footprint=fp,
        energy_footprint=efp,
        energy=total,
        monitoring_status=MONITORING_ARCHIVED,
    )


__all__ = [
    "STATS_SERIES_MIN_SERIES",
    "StatisticsReport",
    "compute_block_statistics",
    "compute_data_statistics",
    "energy",
    "finalize_job",
    "footprint",
    "job_statistics",
    "round2",
]
