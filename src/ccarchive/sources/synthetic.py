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

Every metric of a job derives from a few shared signals, so the demo data adds up: a per-host
activity (the busy share of the job's cores: ramp up, steady, checkpoint dips) drives ``cpu_load``
(~ busy hwthreads of the job on the host), ``cpu_user``, flops, ``mem_bw`` (which follows the
compute phases) and power; a per-device activity drives every accelerator metric (utilization,
power, temperature, clock, memory); ``flops_any = flops_sp + 2 flops_dp`` and ``X_total = X_read
+ X_write`` hold exactly when those metrics exist; node totals of flops and memory bandwidth stay
below the metric's peak and the subcluster's ``flopRateSimd`` / ``memoryBandwidth``.  Each job
draws its own busy share, flop rate, intensity and dp/sp split, so jobs differ on a roofline.
Gaps are collector outages: every metric and series of a host misses the same samples.  Values
are rounded to 2 decimals and lie in [0, peak]; for ``sum`` metrics below node scope the
per-series ceiling is the node peak divided by the number of such units per node.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from ..cluster import Cluster, MetricConfig, SubCluster
from ..model import Job, JobMetric, Resource
from ..summary import SI_PREFIXES
from .base import FetchResult, SeriesRequest

_U64 = npt.NDArray[np.uint64]
_F64 = npt.NDArray[np.float64]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S11, _S27, _S30, _S31 = (np.uint64(k) for k in (11, 27, 30, 31))
_NETWORK = ("ib_", "net_", "eth_", "nfs", "lustre", "gpfs", "beegfs", "io_", "disk")


def _stable_seed(key: str) -> np.uint64:
    """64 stable bits from a string (two CRC32s; Python's hash() is salted per process)."""
    raw = key.encode("utf-8", "surrogatepass")
    return np.uint64((zlib.crc32(raw) << 32) | zlib.crc32(raw[::-1] + b"#"))


def _mix(x: _U64) -> _U64:
    """splitmix64 finaliser, element-wise (uint64 array arithmetic wraps silently, as intended)."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def _uniform(seeds: _U64, n: int, stream: int, start: int = 0) -> _F64:
    """(len(seeds), n) uniforms in [0, 1) for sample indices ``start .. start + n - 1``: a pure
    function of (seed, sample index, stream), so any stretch can be computed on its own."""
    t = np.arange(start, start + n, dtype=np.uint64)
    salt = np.uint64((stream * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
    x = _mix(seeds[:, None] ^ salt) + t[None, :] * _GOLDEN
    return (_mix(x) >> _S11).astype(np.float64) * (1.0 / (1 << 53))


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
        data = self._generate(job, cluster, sc, metric, scope, hostnames, ids, n)
        block = JobMetric(metric.unit, metric.timestep, hostnames, ids, data,
                          np.full(len(hostnames), n, dtype=np.int64))
        return FetchResult(block, missing)

    # ---- generation

    def _generate(self, job: Job, cluster: Cluster, sc: SubCluster | None, metric: MetricConfig, scope: str,
                  hostnames: list[str], ids: list[str | None], n: int) -> _F64:
        ctx = _Context(self.seed, job, cluster, sc, scope, hostnames, ids, n)
        values = ctx.values(metric)
        if self.nan_gap_probability > 0:  # a collector outage: every series of the host, every metric
            _punch_gaps(values, ctx.job_seed, ctx.host_offsets, self.nan_gap_probability, self.max_gap)
        return values


_WINDOW = 4099  # table slack: distinct per-series offsets


class _Context:
    """One fetch: the job-wide signals every metric of the job is derived from.

    Physical consistency comes from sharing, not from coincidence: a host's activity drives its
    ``cpu_load``, ``cpu_user``, flops, memory bandwidth and power; an accelerator's activity drives
    all of its metrics; ``flops_sp``/``flops_dp``/``flops_any`` split one floating-point work
    signal (``any = sp + 2 dp``); ``X_total`` is ``X_read + X_write``.  Each signal is keyed by
    (job, host[, id]) only, so it is the same whichever metric asks for it.
    """

    def __init__(self, seed: int, job: Job, cluster: Cluster, sc: SubCluster | None, scope: str,
                 hostnames: list[str], ids: list[str | None], n: int) -> None:
        self.key = f"{seed}/{job.cluster}/{job.job_id}/{job.start_time}"
        self.job, self.cluster, self.sc, self.scope, self.n = job, cluster, sc, scope, n
        self.hostnames, self.ids = hostnames, ids
        self.job_seed = _seeds([self.key])
        self.env = _envelope(self.job_seed, n)
        job_u = _uniform(self.job_seed, 6, 41)[0]
        # memory- or compute-bound, efficient or not: flop rates and intensities differ by job
        self.bw_factor = 0.25 + 1.75 * float(job_u[4])
        self.flops_factor = math.exp(-2.3 + 2.7 * float(job_u[5]))
        self.busy = 0.9 + 0.09 * float(job_u[0])  # share of the allocated cores kept busy
        self.dp_share = 0.85 + 0.15 * float(job_u[1]) if job_u[2] < 0.7 else 0.1 * float(job_u[1])
        self.gpu_busy = 0.7 + 0.28 * float(job_u[3])
        self.host_offsets = _offsets([f"{self.key}/host/{h}" for h in hostnames])
        hosts = list(dict.fromkeys(hostnames))
        self.host_index = np.array([hosts.index(h) for h in hostnames] if len(hosts) > 1 else [0] * len(hostnames))
        self._hosts = hosts
        self._activity: _F64 | None = None

    def seeds(self, family: str) -> _U64:
        return _seeds([f"{self.key}/{family}/{h}/{i}" for h, i in zip(self.hostnames, self.ids, strict=True)])

    def noise(self, family: str, stream: int = 1, normal: bool = True) -> _F64:
        """(series, n) noise of a metric family: a window of a per-(job, family) table."""
        return _windows(_seeds([f"{self.key}/{family}"]), self.n, stream, _offsets_of(self.seeds(family)), normal)

    def row_factor(self, family: str) -> _F64:
        """Per-series level factor in [0.8, 1.1), (series, 1)."""
        return 0.8 + 0.3 * _uniform(self.seeds(family), 1, 11)

    def host_activity(self) -> _F64:
        """(hosts, n): the busy fraction of the job's cores on each host, in [0, 1]."""
        if self._activity is None:
            offsets = _offsets([f"{self.key}/host/{h}" for h in self._hosts])
            a = _windows(_seeds([f"{self.key}/host"]), self.n, 1, offsets, normal=True)
            self._activity = np.clip(_scaled(a, 0.01, 1.0, self.busy, self.env), 0.0, 1.0, out=a)
        return self._activity

    def by_host(self, values: _F64, factor: Callable[[_F64, slice], Any] = lambda a, rows: a) -> _F64:
        """``values *= factor(activity of the host, rows)`` in place, one run of a host's rows at a
        time (requests come grouped by host): no (series x samples) temporary."""
        act, idx = self.host_activity(), self.host_index
        cuts = (np.flatnonzero(np.diff(idx)) + 1).tolist()
        for lo, hi in zip([0, *cuts], [*cuts, len(idx)], strict=True):
            values[lo:hi] *= factor(act[idx[lo] : idx[lo] + 1], slice(lo, hi))
        return values

    def gpu_activity(self) -> _F64:
        """(series, n): each accelerator's busy fraction, in [0, 1]."""
        g = _windows(_seeds([f"{self.key}/gpu"]), self.n, 1, _offsets_of(self.seeds("gpu")), normal=True)
        level = self.gpu_busy * (0.93 + 0.07 * _uniform(self.seeds("gpu"), 1, 12))
        np.clip(_scaled(g, 0.03, 1.0, level, self.env), 0.0, 1.0, out=g)
        return g

    def config(self, name: str) -> MetricConfig | None:
        """The effective config of a sibling metric at this fetch's scope (None if absent)."""
        mc = self.cluster.metric(name, self.sc.name) if self.sc is not None else self.cluster.metric(name)
        return mc if mc is not None and mc.scope == self.scope else None

    def cap(self, metric: MetricConfig) -> float:
        return _unit_peak(metric, self.scope, self.sc)

    # -- values of one metric (rounded to 2 decimals, in [0, cap])

    def values(self, metric: MetricConfig) -> _F64:
        name = metric.name.lower()
        if name in ("flops_any", "flops_sp", "flops_dp"):
            return self.flops(name, metric)
        if name.endswith("_total"):
            parts = [self.config(metric.name[:-6] + s) for s in ("_read", "_write")]
            if parts[0] is not None and parts[1] is not None:
                total = self.values(parts[0])
                total += self.values(parts[1])
                return _round(total, None)
        return _round(self.raw(metric, name), self.cap(metric))

    def flops(self, name: str, metric: MetricConfig) -> _F64:
        sp, dp, any_ = (self.config(m) for m in ("flops_sp", "flops_dp", "flops_any"))
        if sp is None or dp is None:  # no split to keep consistent
            return _round(self.raw(metric, name), self.cap(metric))
        s = self.dp_share
        limit = min(self.cap(any_) if any_ is not None else math.inf,
                    self.cap(sp) / (1.0 - s) if s < 1 else math.inf, 2.0 * self.cap(dp) / s if s > 0 else math.inf)
        work = self.raw(any_ if any_ is not None else sp, "flops_any")  # flops_any-equivalent Flop/s
        np.minimum(work, 0.99 * limit, out=work)
        work *= 100.0  # hundredths: sp and dp come out of the same operations in every path
        if name == "flops_dp":
            work *= s / 2.0
            return _hundredths(work)
        twice_dp = None
        if name == "flops_any":
            twice_dp = work * (s / 2.0)
            np.rint(twice_dp, out=twice_dp)
            twice_dp *= 2.0
        work *= 1.0 - s
        np.rint(work, out=work)  # flops_sp
        if twice_dp is not None:  # flops_any = sp + 2 dp
            work += twice_dp
        work /= 100.0
        return work

    def raw(self, metric: MetricConfig, name: str) -> _F64:
        n, cap = self.n, self.cap(metric)
        typical = min(max(metric.normal / metric.peak, 0.05), 0.95) if metric.peak > 0 else 0.5
        if self.scope == "accelerator":
            return self.accelerator(metric, name, cap, typical)
        if name == "cpu_load" and self.scope == "node":
            hw = np.array([_host_hwthreads(self.job, self.sc, h) for h in self.hostnames], dtype=np.float64)
            return self.by_host(_scaled(self.noise("cpu_load"), 0.01, 1.0, hw[:, None], 1.0))
        if "mem_used" in name:
            growth = 0.25 + 0.75 * (1.0 - np.exp(-4.0 * np.arange(n) / max(n - 1, 1)))[None, :]
            return _scaled(self.noise(name), 0.005, 1.0, cap * typical * self.row_factor(name), growth)
        if "util" in name or name == "cpu_user" or metric.unit.base == "%":
            top = min(cap, 100.0) if cap > 0 else 100.0
            level = top * (0.97 + 0.03 * _uniform(self.seeds(name), 1, 11))
            return self.by_host(_scaled(self.noise(name), 0.02, 1.0, level, 1.0))
        if "flops" in name:
            level = cap * min(typical * self.flops_factor, 0.9) * self.row_factor("flops")
            values = _scaled(self.noise("flops"), 0.08, 1.0, level,
                             _compute_phases(self.job_seed, n))
            return self.by_host(values)
        if "mem_bw" in name:
            shape = 0.3 + 0.7 * _compute_phases(self.job_seed, n)  # traffic follows the compute phases
            level = cap * min(typical * 1.4 * self.bw_factor, 0.9) * self.row_factor(name)
            return self.by_host(_scaled(self.noise(name), 0.08, 1.0, level, shape))
        if "power" in name:  # an idle floor plus a share that follows the activity
            load = max(typical - 0.3, 0.05) * self.row_factor(name)
            return self.by_host(_scaled(self.noise(name), 0.02, 1.0, cap, 1.0), lambda a, rows: 0.3 + load[rows] * a)
        if "temp" in name or "clock" in name:
            level = cap * min(typical * 1.1, 0.97) * (0.95 + 0.04 * self.row_factor(name))
            values = _scaled(self.noise(name), 0.01 * cap / level, 1.0, level, 1.0)
            return self.by_host(values, lambda a, rows: 1.0 - 0.05 * (a < 0.5))
        if name.startswith(_NETWORK) or ("_bw" in name and "mem" not in name):
            total = self.config(name.rsplit("_", 1)[0] + "_total") if name.endswith(("_read", "_write")) else None
            if total is not None:  # read + write must stay below the total's peak
                cap = min(cap, self.cap(total) / 2.0)
            values = self.noise(name, 3, normal=False)  # cap * (0.3 typical row u^3 + burst), in place
            burst = self.noise(name, 4, normal=False)
            burst *= values < 0.03
            values **= 3
            values *= typical * 0.3 * self.row_factor(name)
            values += burst
            values *= cap
            return np.minimum(values, cap, out=values)
        return self.by_host(_scaled(self.noise(name), 0.05, 1.0, cap * typical * self.row_factor(name), 1.0))

    def accelerator(self, metric: MetricConfig, name: str, cap: float, typical: float) -> _F64:
        """Every accelerator metric follows the device's activity ``g`` in [0, 1]."""
        g = self.gpu_activity()
        noise = self.noise(name)
        noise *= 0.01
        noise += 1.0
        if "mem_used" in name:
            growth = 0.3 + 0.7 * (1.0 - np.exp(-6.0 * np.arange(self.n) / max(self.n - 1, 1)))[None, :]
            g = (g > 0.05) * growth * (cap * min(typical * 1.2, 0.9) * self.row_factor(name))
        elif "util" in name and "mem" in name:  # memory-controller busy share: below the SM share
            g *= 100.0 * (0.4 + 0.3 * _uniform(self.job_seed, 1, 51)[0, 0])
        elif "util" in name:
            g *= 100.0
        elif "power" in name:
            g = cap * (0.15 + 0.75 * g)
        elif "temp" in name:
            g = cap * (0.55 + 0.4 * g)
        elif "clock" in name:
            g = cap * (0.7 + 0.25 * g)
        else:
            g *= cap * typical * self.row_factor(name)
        g *= noise
        return g


def _seeds(keys: Iterable[str]) -> _U64:
    return np.array([_stable_seed(k) for k in keys], dtype=np.uint64)


def _offsets_of(seeds: _U64) -> npt.NDArray[np.intp]:
    return (seeds % np.uint64(_WINDOW)).astype(np.intp)


def _offsets(keys: Iterable[str]) -> npt.NDArray[np.intp]:
    return _offsets_of(_seeds(keys))


def _hundredths(values: _F64) -> _F64:
    """Values given in hundredths, rounded and scaled back, in place."""
    np.rint(values, out=values)
    values /= 100.0
    return values


def _round(values: _F64, cap: float | None) -> _F64:
    """Round to 2 decimals and clip to [0, cap], in place."""
    values *= 100.0
    np.rint(values, out=values)
    values /= 100.0
    np.clip(values, 0.0, cap if cap is not None and cap > 0 else None, out=values)
    return values


def _table(seed: _U64, length: int, stream: int, normal: bool, start: int = 0) -> _F64:
    """Entries ``start .. start + length - 1`` of a seed's uniform (or normal) table."""
    if not normal:
        return _uniform(seed, length, stream, start)[0]
    u1 = 1.0 - _uniform(seed, length, stream, start)[0]  # Box-Muller
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * _uniform(seed, length, stream + 100, start)[0])


def _windows(seed: _U64, n: int, stream: int, offsets: npt.NDArray[np.intp], normal: bool = False) -> _F64:
    """(series, n) block: row r is table[offsets[r] : offsets[r] + n] (a fresh C-contiguous copy).
    Only the stretch of the table the rows cover is computed (a short job of one series needs
    ``n`` entries, not ``n`` + the table's slack)."""
    if offsets.size == 0:
        return np.empty((0, n), dtype=np.float64)
    lo = int(offsets.min())
    table = _table(seed, int(offsets.max()) - lo + n, stream, normal, lo)
    return np.lib.stride_tricks.sliding_window_view(table, n)[offsets - lo]


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
    keep, free = np.ones(len(starts), dtype=bool), -1  # gaps never touch: each is one outage
    for j, (at, length) in enumerate(zip(starts.tolist(), lengths.tolist(), strict=True)):
        keep[j] = at > free
        free = at + length if keep[j] else free
    starts, lengths = starts[keep], lengths[keep]
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
    """The ceiling of one native series: the node peak (for flops and memory bandwidth at most
    the subcluster's ``flopRateSimd`` / ``memoryBandwidth``), split over the node's units for
    ``sum`` metrics below node scope (accelerator thresholds are per device already)."""
    peak = metric.peak if metric.peak > 0 else max(metric.normal, 1.0)
    if sc is not None:
        name = metric.name.lower()
        hw = sc.flop_rate_simd if "flops" in name else sc.memory_bandwidth if "mem_bw" in name else None
        if hw is not None and hw.value > 0:
            ratio = SI_PREFIXES.get(hw.unit.prefix, 1.0) / SI_PREFIXES.get(metric.unit.prefix, 1.0)
            peak = min(peak, hw.value * ratio)
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
