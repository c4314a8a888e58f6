"""A job's resource use against what it was given, with plain-language notes (like Princeton's jobstats).

Why a separate summary: the statistics in meta.json are per metric and say nothing about whether
the numbers are good.  A scientist asks "did my job use its cores, its memory, its GPUs?", so each
measure here is set against a capacity - the allocated hwthreads, the allocated memory, the
subcluster's peak memory bandwidth and flop rate, 100 % per GPU - per node and for the whole job,
and the obvious problems (idle GPUs, one busy node of many, memory far below the allocation, cores
mostly idle) become one-line notes.  Everything is computed from the job's samples, so it works on
any archive, old or new.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .cluster import Cluster, SubCluster
from .model import Job, JobData, JobMetric, Unit

#: SI prefix -> factor, for comparing a metric's unit with a subcluster peak's unit.
SI_PREFIXES = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}

# Thresholds of the notes (percent).
IDLE_GPU = 5.0  # a GPU below this mean utilization did nothing useful
LOW_GPU = 30.0
IDLE_NODE = 10.0  # a node whose allocated cores were busy below this share
BUSY_NODE = 50.0
LOW_CPU = 50.0
LOW_MEMORY = 20.0  # peak memory below this share of the allocation
HIGH_MEMORY = 90.0
MIN_DURATION = 300  # notes need a job that ran long enough to judge


@dataclass
class Measure:
    """One resource: the job's value, its capacity per node and the per-node (or per-GPU) values.

    ``value`` is a mean over time (a maximum for memory); ``per_node`` holds the node values, for
    GPU measures ``per_device`` the values per ``host:id``.  ``percent`` = value / capacity.
    """

    name: str
    label: str
    unit: str
    value: float
    capacity: float | None = None
    per_node: dict[str, float] = field(default_factory=dict)
    per_device: dict[str, float] = field(default_factory=dict)

    @property
    def percent(self) -> float | None:
        if self.capacity is None or self.capacity <= 0 or not np.isfinite(self.value):
            return None
        return 100.0 * self.value / self.capacity


@dataclass
class JobSummary:
    job: str
    user: str
    num_nodes: int
    duration: int
    measures: list[Measure]
    notes: list[str]

    def measure(self, name: str) -> Measure | None:
        return next((m for m in self.measures if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None."""
        out = asdict(self)
        out["measures"] = [{**asdict(m), "percent": m.percent} for m in self.measures]
        return _finite(out)


def summarize(job: Job, data: JobData, cluster: Cluster | None = None) -> JobSummary:
    """CPU, memory, GPU, memory bandwidth and flops of ``job`` against its allocation and the
    subcluster's peaks (``cluster`` may be None: measures without a known capacity stay bare)."""
    sc = _sub_cluster(job, cluster)
    hosts = job.hostnames or sorted({h for s in data.values() for b in s.values() for h in b.hostnames})
    measures = [m for m in (_cpu(job, data, sc, hosts), _memory(job, data, cluster, sc, hosts),
                            _node_rate(data, "mem_bw", "memory bandwidth", sc.memory_bandwidth if sc else None, hosts),
                            _node_rate(data, "flops_any", "flop rate", sc.flop_rate_simd if sc else None, hosts),
                            _gpu(data, "acc_utilization", "GPU utilization", 100.0),
                            _gpu_memory(data, cluster, sc)) if m is not None]
    summary = JobSummary(job.label.removeprefix("job "), job.user, job.num_nodes or len(hosts), job.duration,
                         measures, [])
    summary.notes = _notes(job, summary)
    return summary


# ---- measures


def _cpu(job: Job, data: JobData, sc: SubCluster | None, hosts: list[str]) -> Measure | None:
    """Busy share of the allocated hwthreads: cpu_user (percent per hwthread), else cpu_load /
    allocated hwthreads (the whole node's when the job does not list them)."""
    if "cpu_user" in data:
        per_node = _per_node(_block(data["cpu_user"]), "avg", hosts)
    elif "cpu_load" in data:
        load = _per_node(_block(data["cpu_load"]), "avg", hosts)
        whole = len(sc.topology.node or []) if sc is not None else 0
        alloc = {r.hostname: len(r.hwthreads) if r.hwthreads else whole for r in job.resources}
        per_node = {h: 100.0 * v / alloc[h] for h, v in load.items() if alloc.get(h)}
    else:
        return None
    if not per_node:
        return None
    return Measure("cpu", "CPU utilization", "%", _mean(per_node.values()), 100.0, per_node)


def _memory(job: Job, data: JobData, cluster: Cluster | None, sc: SubCluster | None,
            hosts: list[str]) -> Measure | None:
    """Peak memory per node against the allocation: requestedMemory (MB per node, as Slurm's
    --mem), else the node's memory (the mem_used peak) times the share of hwthreads allocated."""
    if "mem_used" not in data:
        return None
    block = _block(data["mem_used"])
    per_node = _per_node(block, "max", hosts)
    unit = _unit(block.unit)
    capacity = None
    if job.requested_memory > 0:
        capacity = job.requested_memory * 1e6 / SI_PREFIXES.get(block.unit.prefix, 1.0)
    elif cluster is not None and sc is not None and (mc := cluster.metric("mem_used", sc.name)) and mc.peak > 0:
        share = 1.0
        node_hw = len(sc.topology.node or [])
        if node_hw and job.resources and job.resources[0].hwthreads:
            share = min(1.0, len(job.resources[0].hwthreads) / node_hw)
        capacity = mc.peak * share
    return Measure("memory", "memory used (peak)", unit, max(per_node.values(), default=float("nan")),
                   capacity, per_node)


def _node_rate(data: JobData, metric: str, label: str, peak: Any, hosts: list[str]) -> Measure | None:
    if metric not in data:
        return None
    block = _block(data[metric])
    per_node = _per_node(block, "avg", hosts, total=True)
    capacity = None
    if peak is not None and peak.value > 0:
        capacity = peak.value * SI_PREFIXES.get(peak.unit.prefix, 1.0) / SI_PREFIXES.get(block.unit.prefix, 1.0)
    return Measure(metric, label, _unit(block.unit), _mean(per_node.values()), capacity, per_node)


def _gpu(data: JobData, metric: str, label: str, capacity: float) -> Measure | None:
    if metric not in data or "accelerator" not in data[metric]:
        return None
    block = data[metric]["accelerator"]
    values = [_nanmean(block.series(k)) for k in range(block.num_series)]
    per_node = {h: _mean(v for v, hh in zip(values, block.hostnames, strict=True) if hh == h)
                for h in dict.fromkeys(block.hostnames)}
    per_device = dict(zip(_device_names(block), values, strict=True))
    return Measure("gpu", label, "%", _mean(per_device.values()), capacity, per_node, per_device)


def _gpu_memory(data: JobData, cluster: Cluster | None, sc: SubCluster | None) -> Measure | None:
    if "acc_mem_used" not in data or "accelerator" not in data["acc_mem_used"]:
        return None
    block = data["acc_mem_used"]["accelerator"]
    values = [_nanmax(block.series(k)) for k in range(block.num_series)]
    per_device = dict(zip(_device_names(block), values, strict=True))
    mc = cluster.metric("acc_mem_used", sc.name if sc else None) if cluster is not None else None
    per_node = {h: _nanmax(np.array([v for v, hh in zip(values, block.hostnames, strict=True) if hh == h]))
                for h in dict.fromkeys(block.hostnames)}
    return Measure("gpu_memory", "GPU memory used (peak)", _unit(block.unit),
                   max(per_device.values(), default=float("nan")), mc.peak if mc and mc.peak > 0 else None,
                   per_node, per_device)


# ---- notes


def _notes(job: Job, s: JobSummary) -> list[str]:
    notes: list[str] = []
    if job.duration < MIN_DURATION:
        return notes
    gpu, cpu, mem = s.measure("gpu"), s.measure("cpu"), s.measure("memory")
    if gpu is not None and gpu.per_device:
        idle = [d for d, v in gpu.per_device.items() if v < IDLE_GPU]
        if len(idle) == len(gpu.per_device):
            notes.append(f"All {len(idle)} GPUs were idle (mean utilization below {IDLE_GPU:.0f} %): "
                         "the program did not use them; run on CPU nodes or check that it finds the GPUs.")
        elif idle:
            notes.append(f"{len(idle)} of {len(gpu.per_device)} GPUs were idle ({_few(idle)}): "
                         "request only the GPUs the program uses.")
        elif gpu.value < LOW_GPU:
            notes.append(f"GPU utilization was low ({gpu.value:.0f} % on average): larger batches or fewer "
                         "GPUs would use them better.")
    if cpu is not None and len(cpu.per_node) > 1:
        idle_nodes = [h for h, v in cpu.per_node.items() if v < IDLE_NODE]
        busy = [h for h, v in cpu.per_node.items() if v >= BUSY_NODE]
        if idle_nodes and busy:
            who = f"only {busy[0]} was busy" if len(busy) == 1 else f"{len(busy)} nodes were busy"
            notes.append(f"{who}; {len(idle_nodes)} of {len(cpu.per_node)} nodes were idle ({_few(idle_nodes)}): "
                         "check that the program runs across nodes (srun, MPI) or request fewer nodes.")
    if cpu is not None and np.isfinite(cpu.value) and cpu.value < LOW_CPU and not (gpu and gpu.per_device):
        notes.append(f"The allocated CPU cores were busy {cpu.value:.0f} % of the time: request fewer cores "
                     "or check the program's parallelism (threads, ranks).")
    if mem is not None and (pct := mem.percent) is not None:
        if pct < LOW_MEMORY:
            notes.append(f"Memory use peaked at {mem.value:.1f} {mem.unit} of {mem.capacity:.0f} {mem.unit} "
                         f"allocated per node ({pct:.0f} %): a smaller memory request would start sooner.")
        elif pct > HIGH_MEMORY:
            notes.append(f"Memory use came close to the allocation ({pct:.0f} % of {mem.capacity:.0f} "
                         f"{mem.unit} per node): request more to avoid running out.")
    return notes


# ---- helpers


def _sub_cluster(job: Job, cluster: Cluster | None) -> SubCluster | None:
    if cluster is None or not job.sub_cluster:
        return None
    try:
        return cluster.sub_cluster(job.sub_cluster)
    except Exception:  # noqa: BLE001 - an unknown subcluster only means no peaks to compare with
        return None


def _block(scopes: dict[str, JobMetric]) -> JobMetric:
    """The node-scope block, else the coarsest one archived (fewest series to reduce)."""
    if "node" in scopes:
        return scopes["node"]
    return scopes[min(scopes, key=lambda s: scopes[s].num_series)]


def _per_node(block: JobMetric, reduce: str, hosts: list[str], total: bool | None = None) -> dict[str, float]:
    """Per host: the node series (``sum`` of the host's series per step for rate metrics, else
    their mean), reduced over time by ``avg`` or ``max``; hosts without samples are left out."""
    names = np.asarray(block.hostnames)
    out: dict[str, float] = {}
    for h in hosts:
        rows = block.data[names == h]
        if rows.size == 0:
            continue
        valid = ~np.isnan(rows)
        seen = valid.any(axis=0)
        if not seen.any():
            continue
        if total:
            node = np.where(seen, np.nansum(rows, axis=0), np.nan)
        else:
            node = np.where(seen, np.nansum(rows, axis=0) / np.maximum(valid.sum(axis=0), 1), np.nan)
        out[h] = _nanmax(node) if reduce == "max" else _nanmean(node)
    return out


def _device_names(block: JobMetric) -> list[str]:
    return [f"{h}:{i}" for h, i in zip(block.hostnames, block.ids, strict=True)]


def _nanmean(a: npt.NDArray[np.float64]) -> float:
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def _nanmax(a: npt.NDArray[np.float64]) -> float:
    return float(np.nanmax(a)) if np.isfinite(a).any() else float("nan")


def _mean(values: Any) -> float:
    v = [x for x in values if np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _unit(u: Unit) -> str:
    return f"{u.prefix}{u.base}".strip() or "1"


def _few(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
