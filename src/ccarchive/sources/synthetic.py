"""A deterministic synthetic metric source, for the demo, the benchmarks and the tests.

Why synthetic data has to be this careful: benchmarks and end-to-end tests need series that look
like a real job (levels relative to the cluster's thresholds, phases, noise, gaps) for any cluster
configuration, and the same request must give the same bytes on every run and in every process.
So all randomness comes from a counter-based hash (splitmix64) of stable keys (CRC32 of seed, job,
metric, host, native id), never from Python's salted ``hash()`` or a shared generator whose state
would depend on which other series were requested: per-sample noise is a window of a per-(job,
metric) hashed table at a per-series offset.  Generation is vectorised over whole (series x
samples) blocks in a few in-place passes: 64 nodes x 10080 samples of a node metric take a few
milliseconds, 64 x 72 hwthreads x 10080 samples about 0.15 s on the development machine.

Shapes per metric name (the obvious ones; anything else follows ``normal``): ``cpu_load`` ~ the
job's hwthreads on the host, ``mem_used`` grows slowly, ``*util*``/``cpu_user`` are percentages,
``flops*`` alternate compute and communication phases, ``*power*`` is an idle floor plus load
with noise, ``*temp*``/``*clock*`` stay near their level, network and file-system metrics are
bursty.  A job-wide envelope (ramp up, steady, occasional dips) is shared by all metrics and hosts
of a job.  Values are rounded to 2 decimals and lie in [0, peak]; for ``sum`` metrics below node
scope the per-series level is the node peak divided by the number of such units per node.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from ..cluster import Cluster, MetricConfig, SubCluster
from ..model import Job, JobMetric, Resource
from .base import FetchResult, SeriesRequest

_U64 = npt.NDArray[np.uint64]
_F64 = npt.NDArray[np.float64]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NETWORK = ("ib_", "net_", "eth_", "nfs", "lustre", "gpfs", "beegfs", "io_", "disk")


def _stable_seed(key: str) -> np.uint64:
    """64 stable bits from a string (two CRC32s; Python's hash() is salted per process)."""
    raw = key.encode("utf-8", "surrogatepass")
    return np.uint64((zlib.crc32(raw) << 32) | zlib.crc32(raw[::-1] + b"#"))


def _mix(x: _U64) -> _U64:
    """splitmix64 finaliser, element-wise (uint64 arithmetic wraps, as intended)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _uniform(seeds: _U64, n: int, stream: int) -> _F64:
    """(len(seeds), n) uniforms in [0, 1): a pure function of (seed, sample index, stream)."""
    t = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        salt = np.uint64((stream * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
        x = _mix(seeds[:, None] ^ salt) + t[None, :] * _GOLDEN
    return (_mix(x) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _runs(starts: npt.NDArray[np.bool_], lengths: _F64) -> npt.NDArray[np.bool_]:
    """Mark runs of ``lengths`` samples beginning where ``starts`` is set (row-wise, vectorised)."""
    t = np.arange(starts.shape[-1], dtype=np.float64)
    ends = np.where(starts, t + lengths, 0.0)
    return t < np.maximum.accumulate(ends, axis=-1)


class SyntheticSource:
    """Deterministic, realistic-looking data for any cluster configuration (a ``MetricSource``).

    ``nan_gap_probability`` is the chance per sample that a gap of 1..``max_gap`` missing samples
    starts (0 disables gaps).  ``missing_hosts`` / ``missing_metrics`` have no data at all and are
    reported in :attr:`FetchResult.missing`, to exercise partial-data handling.
    """

    def __init__(self, seed: int = 0, nan_gap_probability: float = 0.002, *, max_gap: int = 8,
                 missing_hosts: Iterable[str] = (), missing_metrics: Iterable[str] = ()) -> None:
        self.seed = seed
        self.nan_gap_probability = nan_gap_probability
        self.max_gap = max(1, max_gap)
        self.missing_hosts = frozenset(missing_hosts)
        self.missing_metrics = frozenset(missing_metrics)

    def fetch(self, job: Job, cluster: Cluster, metric: MetricConfig, scope: str,
              requests: list[SeriesRequest]) -> FetchResult:
        """Native-scope series of ``metric`` for ``requests``, in request order."""
        hostnames: list[str] = []
        ids: list[str | None] = []
        missing: list[tuple[str, str | None, str]] = []
        for req in requests:
            for i in req.ids if req.ids is not None else (None,):
                if metric.name in self.missing_metrics:
                    missing.append((req.hostname, i, f"synthetic: no data for metric {metric.name}"))
                elif req.hostname in self.missing_hosts:
                    missing.append((req.hostname, i, f"synthetic: no data for host {req.hostname}"))
                else:
                    hostnames.append(req.hostname)
                    ids.append(i)
        if not hostnames:
            return FetchResult(None, missing)
        timestep = max(1, metric.timestep)
        n = max(1, job.duration // timestep + 1)
        sc = _sub_cluster(job, cluster)
        data = self._generate(job, sc, metric, scope, hostnames, ids, n)
        block = JobMetric(metric.unit, metric.timestep, hostnames, ids, data,
                          np.full(len(hostnames), n, dtype=np.int64))
        return FetchResult(block, missing)

    # ---- generation

    def _generate(self, job: Job, sc: SubCluster | None, metric: MetricConfig, scope: str,
                  hostnames: list[str], ids: list[str | None], n: int) -> _F64:
        job_key = f"{self.seed}/{job.cluster}/{job.job_id}/{job.start_time}"
        metric_seed = np.array([_stable_seed(f"{job_key}/{metric.name}")], dtype=np.uint64)
        keys = (f"{job_key}/{metric.name}/{h}/{i}" for h, i in zip(hostnames, ids, strict=True))
        seeds = np.array([_stable_seed(k) for k in keys], dtype=np.uint64)
        # Per-sample randomness is a window of a per-(job, metric) table at a per-series offset:
        # one memory pass per (series x samples) block instead of hashing every sample.
        offsets = (seeds % np.uint64(_WINDOW)).astype(np.intp)
        job_seed = np.array([_stable_seed(job_key)], dtype=np.uint64)
        env = _envelope(job_seed, n)
        cap = _unit_peak(metric, scope, sc)
        typical = min(max(metric.normal / metric.peak, 0.05), 0.95) if metric.peak > 0 else 0.5
        row = 0.8 + 0.3 * _uniform(seeds, 1, 11)  # per-series level factor, (R, 1)
        name = metric.name.lower()

        if name == "cpu_load" and scope == "node":
            hw = np.array([_host_hwthreads(job, sc, h) for h in hostnames], dtype=np.float64)[:, None]
            values = _scaled(_windows(metric_seed, n, 1, offsets, normal=True), 0.02, 0.97,
                             hw, np.where(env < 0.5, 0.5, 1.0))
        elif "mem_used" in name:
            growth = 0.25 + 0.75 * (1.0 - np.exp(-4.0 * np.arange(n) / max(n - 1, 1)))[None, :]
            values = _scaled(_windows(metric_seed, n, 1, offsets, normal=True), 0.005, 1.0,
                             cap * typical * row, growth)
        elif "util" in name or name == "cpu_user" or metric.unit.base == "%":
            cap = min(cap, 100.0) if cap > 0 else 100.0
            level = cap * (0.6 + 0.3 * row / 1.1)
            values = _scaled(_windows(metric_seed, n, 1, offsets, normal=True), 3.0 / level, 1.0, level, env)
        elif "flops" in name:
            values = _scaled(_windows(metric_seed, n, 1, offsets, normal=True), 0.08, 1.0,
                             cap * typical * row, env * _compute_phases(job_seed, n))
        elif "power" in name:
            load = max(typical - 0.3, 0.05) * row
            values = _windows(metric_seed, n, 1, offsets, normal=True)
            values *= 0.02 * cap
            for r in range(values.shape[0]):  # += cap * (0.3 + load * env), a row at a time: no block temporary
                values[r : r + 1] += cap * (0.3 + load[r : r + 1] * env)
        elif "temp" in name or "clock" in name:
            level = cap * min(typical * 1.1, 0.97) * (0.95 + 0.04 * row)
            values = _scaled(_windows(metric_seed, n, 1, offsets, normal=True), 0.01 * cap / level, 1.0,
                             level, 1.0 - 0.05 * (env < 0.5))
        elif name.startswith(_NETWORK) or ("_bw" in name and "mem" not in name):
            values = _windows(metric_seed, n, 3, offsets)  # cap * (0.3 typical row u^3 + burst), in place
            burst = _windows(metric_seed, n, 4, offsets)
            burst *= values < 0.03
            values **= 3
            values *= typical * 0.3 * row
            values += burst
            values *= cap
            del burst
        else:
            values = _scaled(_windows(metric_seed, n, 1, offsets, normal=True), 0.05, 1.0,
                             cap * typical * row, env)

        values *= 100.0  # round to 2 decimals and clip to [0, cap], in place
        np.rint(values, out=values)
        values /= 100.0
        np.clip(values, 0.0, cap if cap > 0 else None, out=values)
        if self.nan_gap_probability > 0:
            _punch_gaps(values, metric_seed, offsets, self.nan_gap_probability, self.max_gap)
        return values


_WINDOW = 4099  # table slack: distinct per-series offsets


def _table(seed: _U64, length: int, stream: int, normal: bool) -> _F64:
    if not normal:
        return _uniform(seed, length, stream)[0]
    u1 = 1.0 - _uniform(seed, length, stream)[0]  # Box-Muller
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * _uniform(seed, length, stream + 100)[0])


def _windows(seed: _U64, n: int, stream: int, offsets: npt.NDArray[np.intp], normal: bool = False) -> _F64:
    """(series, n) block: row r is table[offsets[r] : offsets[r] + n] (a fresh C-contiguous copy)."""
    table = _table(seed, n + _WINDOW, stream, normal)
    return np.lib.stride_tricks.sliding_window_view(table, n)[offsets]


def _scaled(noise: _F64, rel: float | _F64, base: float, level: float | _F64,
            shape: float | npt.NDArray[np.floating]) -> _F64:
    """``level * shape * (base + rel * noise)`` computed in place in ``noise``."""
    noise *= rel
    noise += base
    noise *= shape
    noise *= level
    return noise


def _punch_gaps(values: _F64, seed: _U64, offsets: npt.NDArray[np.intp], p: float, max_gap: int) -> None:
    """NaN runs of 1..max_gap samples, starting with probability ``p`` per sample (sparse)."""
    n = values.shape[1]
    starts = np.flatnonzero(_table(seed, n + _WINDOW, 7, False) < p)
    lengths = 1 + (_table(seed, n + _WINDOW, 8, False)[starts] * max_gap).astype(np.intp)
    pos = starts[None, :] - offsets[:, None]  # (series, starts): position of each start in each row
    rows, k = np.nonzero((pos >= 0) & (pos < n))
    pos, lengths = pos[rows, k], lengths[k]
    for step in range(max_gap):
        sel = (step < lengths) & (pos + step < n)
        values[rows[sel], pos[sel] + step] = np.nan


def _envelope(job_seed: _U64, n: int) -> _F64:
    """Job-wide activity in [0, 1]: ramp up, steady, occasional dips (I/O, checkpoints), tail."""
    env = np.ones(n)
    ramp = max(1, min(n // 20, 10))
    env[:ramp] = np.linspace(0.2, 1.0, ramp + 1)[1:] if n > 1 else 1.0
    u = _uniform(job_seed, n, 21)[0]
    dips = _runs(u < 0.01, 2.0 + np.floor(_uniform(job_seed, n, 22)[0] * 5))
    dips[:ramp] = False
    env[dips] = 0.35
    if n > 4:
        env[-1] = 0.6
    return env[None, :]


def _compute_phases(job_seed: _U64, n: int) -> _F64:
    """Compute (1.0) and communication (0.15) phases with a job-specific period."""
    u = _uniform(job_seed, 2, 31)[0]
    period = 8 + int(u[0] * 32)
    offset = int(u[1] * period)
    return np.where((np.arange(n) + offset) % period < 0.75 * period, 1.0, 0.15)[None, :]


def _sub_cluster(job: Job, cluster: Cluster) -> SubCluster | None:
    try:
        if job.sub_cluster:
            return cluster.sub_cluster(job.sub_cluster)
        return cluster.sub_cluster_for_host(job.resources[0].hostname) if job.resources else None
    except Exception:  # noqa: BLE001 - synthetic data works without a topology too
        return None


def _unit_peak(metric: MetricConfig, scope: str, sc: SubCluster | None) -> float:
    """The ceiling of one native series: the node peak, split over the node's units for ``sum``
    metrics below node scope (accelerator thresholds are per device already)."""
    peak = metric.peak if metric.peak > 0 else max(metric.normal, 1.0)
    if metric.aggregation != "sum" or scope in ("node", "accelerator") or sc is None:
        return peak
    topo = sc.topology
    units = len(topo.node or []) if scope == "hwthread" else len(topo.groups(scope))
    return peak / units if units > 0 else peak


def _host_hwthreads(job: Job, sc: SubCluster | None, hostname: str) -> int:
    for r in job.resources:
        if r.hostname == hostname:
            if r.hwthreads is not None:
                return len(r.hwthreads)
            break
    return len(sc.topology.node or []) if sc is not None else 1


# ---- synthetic jobs


def synthetic_job(cluster: Cluster, sub_cluster: str | SubCluster, job_id: int, start_time: int,
                  num_nodes: int, duration: int, num_acc: int = 0, *, first_node: int = 0,
                  hwthreads: int | list[int] | None = None, user: str | None = None,
                  project: str | None = None, walltime: int | None = None,
                  partition: str | None = None, seed: int = 0) -> Job:
    """A valid finished job on ``num_nodes`` consecutive hosts of a subcluster's node list.

    ``hwthreads``: None = whole nodes, an int = the first n hwthreads of each node, or a list.
    ``num_acc`` accelerators are spread over the nodes from the topology (ceil per node).
    ``seed`` varies the generated user, project and submit time.
    """
    sc = sub_cluster if isinstance(sub_cluster, SubCluster) else cluster.sub_cluster(sub_cluster)
    topo = sc.topology
    if sc.hostlist is None:
        hosts = [f"{cluster.name}{i:04d}" for i in range(first_node, first_node + num_nodes)]
    else:
        hosts = sc.hostlist.expand()[first_node:first_node + num_nodes]
    if num_nodes < 1 or len(hosts) < num_nodes:
        raise ValueError(f"subcluster {sc.name!r} of {cluster.name!r} has no {num_nodes} nodes "
                         f"from #{first_node}")
    hw = list(topo.node or [])
    if hwthreads is not None:
        hw = hw[:hwthreads] if isinstance(hwthreads, int) else list(hwthreads)
    accs = topo.accelerator_ids()
    per_node = -(-num_acc // num_nodes) if num_acc > 0 else 0
    if per_node > len(accs):
        raise ValueError(f"subcluster {sc.name!r} has {len(accs)} accelerators per node, not {per_node}")
    resources = []
    for k, host in enumerate(hosts):
        take = max(0, min(per_node, num_acc - k * per_node))
        resources.append(Resource(hostname=host, hwthreads=list(hw), accelerators=accs[:take] or None))
    tag = zlib.crc32(f"{seed}/{cluster.name}/{job_id}/{start_time}".encode())
    return Job(
        cluster=cluster.name, sub_cluster=sc.name, job_id=job_id, start_time=start_time,
        user=user or f"user{tag % 40:02d}", project=project or f"proj{(tag >> 8) % 12:02d}",
        resources=resources, num_nodes=num_nodes, partition=partition if partition is not None else sc.name,
        job_state="completed", meta_data={"jobName": f"synthetic-{job_id}"},
        walltime=walltime if walltime is not None else max(3600, -(-duration // 3600) * 3600),
        duration=duration, smt=1, monitoring_status=1, num_acc=num_acc,
        num_hwthreads=len(hw) * num_nodes, submit_time=max(0, start_time - 60 - tag % 3600),
    )
