"""Plots of archived jobs: metrics over time and rooflines (needs the ``plot`` extra, matplotlib).

Why these two: they are the views scientists know from cc-backend's job page - a grid of the job's
metrics over real time, one line per node (or, when there are too many series to tell apart, the
min/median/max band), and the roofline, which says at a glance whether a job was limited by memory
bandwidth or by the flop rate and how far from either peak it ran.

Figures are built on :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: nothing
needs a display, no global figure state leaks between calls, and a notebook still shows the
returned figure.  Gaps in the data (NaN) stay gaps: lines break there instead of bridging them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .cluster import Cluster, SubCluster
from .errors import InputError
from .model import Job, JobData, JobMetric, Unit
from .summary import SI_PREFIXES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Above this many series a panel shows the min/median/max band instead of one line per series
#: (cc-backend switches to its statistics band at a similar count).
BAND_ABOVE = 24
FORMATS = (".png", ".svg", ".pdf")
#: Metrics shown first, in this order; the rest follow alphabetically.
PREFERRED = ("cpu_load", "cpu_user", "mem_used", "flops_any", "flops_dp", "flops_sp", "mem_bw",
             "acc_utilization", "acc_mem_used", "acc_power", "cpu_power", "ib_recv", "ib_xmit")
_LEGEND_MAX = 8


def plot_job(job: Job, data: JobData, metrics: Sequence[str] | None = None, scope: str | None = None, *,
             cluster: Cluster | None = None, band_above: int = BAND_ABOVE, ncols: int = 2,
             panel_size: tuple[float, float] = (6.0, 2.6)) -> Figure:
    """A grid with one panel per metric over the job's run time (UTC).

    ``metrics``: names to show (default: all, common ones first); ``scope``: the scope to draw
    (default per metric: node, else the coarsest archived); with ``cluster`` the node-scope
    panels show the metric's peak as a dashed line.  Unknown metrics or a scope no chosen metric
    has raise :class:`~ccarchive.errors.InputError`.
    """
    chosen = _choose(data, metrics, scope)
    n = len(chosen)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = _figure((panel_size[0] * ncols, panel_size[1] * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for k, (metric, sc_name) in enumerate(chosen):
        peak = _node_peak(cluster, job, metric) if sc_name == "node" else None
        _panel(axes[k // ncols][k % ncols], job, metric, sc_name, data[metric][sc_name], band_above, peak)
    _legends(fig, [axes[k // ncols][k % ncols] for k in range(n)])
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    for k in range(n):
        ax = axes[k // ncols][k % ncols]
        if k + ncols >= n:  # the lowest visible panel of each column carries the time labels
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("time (UTC)", fontsize=8)
    fig.suptitle(_title(job), fontsize=10)
    return fig


def plot_roofline(jobs: Any, data: JobData | None = None, cluster: Cluster | dict[str, Cluster] | None = None, *,
                  size: tuple[float, float] = (7.0, 5.0)) -> Figure:
    """Arithmetic intensity (flops_any / mem_bw) against flops_any, under the subcluster's roofs.

    ``jobs`` is one :class:`~ccarchive.model.Job` with its ``data`` (a point per node and time
    step, coloured by time) or a table with ``flops_any_avg``, ``mem_bw_avg``, ``cluster`` and
    ``subcluster`` (or ``sub_cluster``, as ``archive.jobs_table()`` has it) columns (a pyarrow
    Table, a pandas DataFrame or a dict of columns; a point per job, coloured by subcluster).
    ``cluster``: the Cluster, or name -> Cluster for a table of several clusters; the roofs come
    from its subclusters' ``flopRateSimd``, ``flopRateScalar`` and ``memoryBandwidth``.
    """
    clusters = _cluster_map(cluster)
    fig = _figure(size)
    ax = fig.subplots()
    if isinstance(jobs, Job):
        if data is None:
            raise InputError(f"{jobs.label}: a roofline of one job needs its data")
        sc = _sub_cluster(clusters.get(jobs.cluster), jobs.sub_cluster)
        ai, perf, t = _job_points(jobs, data)
        points = ax.scatter(ai, perf, c=t / 3600.0, s=9, cmap="viridis", alpha=0.7, linewidths=0)
        fig.colorbar(points, ax=ax, label="hours since start")
        roofs = {(jobs.cluster, sc.name): sc} if sc is not None else {}
        title = _title(jobs)
    else:
        cols = _columns(jobs)
        roofs = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for i, key in enumerate(zip(cols["cluster"], cols["subcluster"], strict=True)):
            groups.setdefault((str(key[0]), str(key[1])), []).append(i)
        flops, bw = (np.asarray(cols[c], dtype=np.float64) for c in ("flops_any_avg", "mem_bw_avg"))
        with np.errstate(divide="ignore", invalid="ignore"):
            intensity = flops / bw
        ok = np.isfinite(intensity) & (intensity > 0) & (flops > 0)
        for key, rows in sorted(groups.items()):
            sel = np.asarray(rows)[ok[rows]]
            if not len(sel):
                continue
            f_unit, b_unit = _units(clusters.get(key[0]))
            ax.scatter(intensity[sel] * f_unit / b_unit, flops[sel] * f_unit, s=14, alpha=0.75, linewidths=0,
                       label=f"{key[0]}/{key[1]}")
            sc = _sub_cluster(clusters.get(key[0]), key[1])
            if sc is not None:
                roofs[key] = sc
        title = f"roofline of {int(ok.sum())} jobs" + (f" ({len(ok) - int(ok.sum())} without flops or bandwidth)"
                                                      if not ok.all() else "")
        if groups:
            ax.legend(fontsize=7, loc="lower right", title="cluster/subcluster", title_fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _roofs(ax, roofs)
    ax.set_xlabel("arithmetic intensity [flop/byte]  (flops_any / mem_bw)")
    ax.set_ylabel("flops_any [GFlop/s]")
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.set_title(title, fontsize=8)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG, SVG or PDF (from the file name's extension); the figure is closed."""
    path = Path(path)
    check_format(path)
    try:
        fig.savefig(path, dpi=dpi, format=path.suffix[1:].lower())
    except OSError as e:
        raise InputError(f"{path}: cannot write the plot: {e.strerror or e}") from None
    return path


def check_format(path: str | Path) -> None:
    """Refuse a file name without a supported extension, before any work is done."""
    if Path(path).suffix.lower() not in FORMATS:
        raise InputError(f"{path}: unsupported plot format {Path(path).suffix or '(no extension)'!r}: "
                         f"use {', '.join(FORMATS)}")


def save_job_plot(path: str | Path, job: Job, data: JobData, **kwargs: Any) -> Path:
    """:func:`plot_job` straight into a file."""
    dpi = kwargs.pop("dpi", 100)
    return save_figure(plot_job(job, data, **kwargs), path, dpi=dpi)


def save_roofline(path: str | Path, jobs: Any, data: JobData | None = None, **kwargs: Any) -> Path:
    """:func:`plot_roofline` straight into a file."""
    dpi = kwargs.pop("dpi", 100)
    return save_figure(plot_roofline(jobs, data, **kwargs), path, dpi=dpi)


# ---- panels


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def _choose(data: JobData, metrics: Sequence[str] | None, scope: str | None) -> list[tuple[str, str]]:
    if not data:
        raise InputError("the job has no metric data to plot")
    if metrics:
        unknown = [m for m in metrics if m not in data]
        if unknown:
            raise InputError(f"unknown metric {unknown[0]!r} (the job has: {', '.join(sorted(data))})")
        names = list(dict.fromkeys(metrics))
    else:
        names = sorted(data, key=lambda m: (PREFERRED.index(m) if m in PREFERRED else len(PREFERRED), m))
    chosen = []
    for m in names:
        if scope is not None:
            if scope in data[m]:
                chosen.append((m, scope))
            elif metrics:
                raise InputError(f"metric {m!r} has no scope {scope!r} (it has: {', '.join(sorted(data[m]))})")
        else:
            chosen.append((m, "node" if "node" in data[m] else min(data[m], key=lambda s: data[m][s].num_series)))
    if not chosen:
        have = sorted({s for m in names for s in data[m]})
        raise InputError(f"no metric has scope {scope!r} (scopes: {', '.join(have)})")
    return chosen


def _legends(fig: Figure, axes: list[Axes]) -> None:
    """One legend below the grid when every panel shows the same series (the usual case: the
    job's nodes or devices); otherwise a legend in each panel that has few enough lines."""
    entries = [ax.get_legend_handles_labels() for ax in axes]
    labels = [[lb for lb in e[1] if lb != "peak"] for e in entries]
    if all(lb == labels[0] for lb in labels):
        handles, names = max(entries, key=lambda e: len(e[1]))
        if 1 < len(names) <= 4 * _LEGEND_MAX:
            per_row = int(fig.get_figwidth() * 11 / (max(map(len, names)) + 6))  # ~11 characters per inch
            fig.legend(handles, names, loc="outside lower center", ncol=max(1, min(8, per_row, len(names))),
                       fontsize=7, frameon=False)
        return
    for ax, (_, names) in zip(axes, entries, strict=True):
        if 1 < len(names) <= _LEGEND_MAX:
            ax.legend(fontsize=6, loc="best", framealpha=0.7)


def _panel(ax: Axes, job: Job, metric: str, scope: str, block: JobMetric, band_above: int,
           peak: float | None) -> None:
    """One metric: a line per series, or the min/median/max band."""
    import matplotlib.dates as mdates

    n = int(block.lengths.max()) if block.num_series else 0
    times = _times(job, block.timestep, n)
    unit, scale = _display_unit(block.unit, max(_finite_max(block.data), peak or 0.0))
    if block.num_series > band_above:
        low, mid, high = _band(block, n)
        ax.fill_between(times, low * scale, high * scale, color="tab:blue", alpha=0.3, linewidth=0,
                        label="min - max")
        ax.plot(times, mid * scale, color="tab:blue", linewidth=1.0, label="median")
        what = f"{block.num_series} series: min / median / max"
    else:
        for i in range(block.num_series):
            label = block.hostnames[i] if scope == "node" else f"{block.hostnames[i]} {block.ids[i]}"
            ax.plot(times[: block.lengths[i]], block.series(i) * scale, linewidth=0.9, label=label,
                    color=f"C{i % 10}")
        what = f"{block.num_series} series"
    top = max(_finite_max(block.data), peak or 0.0) * scale
    if peak is not None:
        ax.axhline(peak * scale, color="0.4", linestyle="--", linewidth=0.8, label="peak")
    ax.set_title(f"{metric}   ({scope}, {what}{', dashed: peak' if peak is not None else ''})",
                 fontsize=8, loc="left")
    ax.set_ylabel(f"{metric} [{unit}]" if unit else metric, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if n:
        ax.set_xlim(times[0], times[-1])


def _finite_max(a: npt.NDArray[np.float64]) -> float:
    return float(np.nanmax(a)) if a.size and np.isfinite(a).any() else 0.0


def _display_unit(u: Unit, top: float) -> tuple[str, float]:
    """The unit to label the axis with and the factor to it: values up to 1e4 as stored, larger
    ones in the next SI prefixes (1.2e6 B/s is shown as 1.2 MB/s)."""
    prefixes = list(SI_PREFIXES)
    k = prefixes.index(u.prefix) if u.prefix in SI_PREFIXES else 0
    scale = 1.0
    while top * scale >= 1e4 and k + 1 < len(prefixes) and u.base:
        k, scale = k + 1, scale / 1000.0
    return (f"{prefixes[k]}{u.base}".strip() if u.prefix in SI_PREFIXES else _unit(u)), scale


def _band(block: JobMetric, n: int) -> tuple[npt.NDArray[np.float64], ...]:
    """min/median/max per time step: the archived statisticsSeries when present, else computed."""
    st = block.statistics_series
    if st is not None and len(st.min) >= n:
        return st.min[:n], st.median[:n], st.max[:n]
    d = block.data[:, :n]
    seen = ~np.isnan(d).all(axis=0)
    out = []
    for f in (np.nanmin, np.nanmedian, np.nanmax):
        v = np.full(n, np.nan)
        if seen.any():
            v[seen] = f(d[:, seen], axis=0)
        out.append(v)
    return tuple(out)


def _times(job: Job, timestep: int, n: int) -> npt.NDArray[np.datetime64]:
    return (np.datetime64(job.start_time, "s") + np.arange(n) * np.timedelta64(max(1, timestep), "s"))


def _title(job: Job) -> str:
    hosts = job.hostnames
    shown = ", ".join(hosts[:3]) + (f" ... ({len(hosts)})" if len(hosts) > 3 else "")
    h, rest = divmod(job.duration, 3600)
    start = np.datetime_as_string(np.datetime64(job.start_time, "s"), unit="m").replace("T", " ")
    gpus = f", {job.num_acc} GPUs" if job.num_acc else ""
    return (f"{job.cluster} job {job.job_id}  ·  user {job.user}  ·  {job.num_nodes or len(hosts)} nodes{gpus} "
            f"[{shown}]  ·  {h}:{rest // 60:02d} h from {start} UTC")


def _node_peak(cluster: Cluster | None, job: Job, metric: str) -> float | None:
    if cluster is None:
        return None
    try:
        mc = cluster.metric(metric, job.sub_cluster or None)
    except Exception:  # noqa: BLE001 - an unknown subcluster only means no peak line
        mc = cluster.metric(metric)
    return mc.peak if mc is not None and mc.peak > 0 else None


def _unit(u: Unit) -> str:
    return f"{u.prefix}{u.base}".strip()


# ---- roofline


def _cluster_map(cluster: Cluster | dict[str, Cluster] | None) -> dict[str, Cluster]:
    if cluster is None:
        return {}
    return dict(cluster) if isinstance(cluster, dict) else {cluster.name: cluster}


def _sub_cluster(cluster: Cluster | None, name: str) -> SubCluster | None:
    if cluster is None:
        return None
    return next((s for s in cluster.sub_clusters if s.name == name), None)


def _columns(table: Any) -> dict[str, list[Any]]:
    if hasattr(table, "to_pydict"):  # pyarrow
        cols = table.to_pydict()
    elif hasattr(table, "to_dict") and hasattr(table, "columns"):  # pandas
        cols = {c: list(table[c]) for c in table.columns}
    else:
        cols = dict(table)
    if "subcluster" not in cols and "sub_cluster" in cols:  # archive.jobs_table() spells it so
        cols["subcluster"] = cols["sub_cluster"]
    missing = [c for c in ("flops_any_avg", "mem_bw_avg", "cluster", "subcluster") if c not in cols]
    if missing:
        raise InputError(f"a roofline table needs the columns flops_any_avg, mem_bw_avg, cluster, subcluster "
                         f"(missing: {', '.join(missing)})")
    return cols


def _node_series(block: JobMetric, n: int) -> dict[str, npt.NDArray[np.float64]]:
    """host -> the node total per time step (series of a host summed; NaN where none has data)."""
    names = np.asarray(block.hostnames)
    out = {}
    for h in dict.fromkeys(block.hostnames):
        rows = block.data[names == h, :n]
        seen = ~np.isnan(rows).all(axis=0)
        out[h] = np.where(seen, np.nansum(rows, axis=0), np.nan)
    return out


def _pick(scopes: dict[str, JobMetric]) -> JobMetric:
    return scopes["node"] if "node" in scopes else min(scopes.values(), key=lambda b: b.num_series)


def _job_points(job: Job, data: JobData) -> tuple[npt.NDArray[np.float64], ...]:
    missing = [m for m in ("flops_any", "mem_bw") if m not in data]
    if missing:
        raise InputError(f"{job.label}: a roofline needs flops_any and mem_bw (missing: {', '.join(missing)})")
    fb, bb = _pick(data["flops_any"]), _pick(data["mem_bw"])
    n = min(int(fb.lengths.max()), int(bb.lengths.max()))
    scale = _giga(fb.unit) / _giga(bb.unit)  # flops in GFlop/s, intensity in flop/byte
    flops, bw = _node_series(fb, n), _node_series(bb, n)
    ai, perf, t = [], [], []
    for h in flops:
        if h in bw:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = flops[h] * scale / bw[h]
            ok = np.isfinite(x) & (x > 0) & (flops[h] > 0)
            ai.append(x[ok])
            perf.append(flops[h][ok] * _giga(fb.unit))
            t.append(np.arange(n)[ok] * float(fb.timestep))
    if not ai or not sum(len(a) for a in ai):
        raise InputError(f"{job.label}: no time step has both flops_any and mem_bw above zero")
    return np.concatenate(ai), np.concatenate(perf), np.concatenate(t)


def _units(cluster: Cluster | None) -> tuple[float, float]:
    """Factors to GFlop/s and GB/s of a table's flops_any and mem_bw columns (the cluster's
    metric units; G when the cluster is not known)."""
    out = []
    for name in ("flops_any", "mem_bw"):
        mc = cluster.metric(name) if cluster is not None else None
        out.append(_giga(mc.unit) if mc is not None else 1.0)
    return out[0], out[1]


def _giga(u: Unit) -> float:
    """The factor from a unit's prefix to G (GFlop/s, GB/s)."""
    return SI_PREFIXES.get(u.prefix, 1.0) / 1e9


def _roofs(ax: Axes, roofs: dict[tuple[str, str], SubCluster]) -> None:
    """The memory roof (peak bandwidth x intensity) up to the SIMD and scalar flop roofs."""
    xs = np.concatenate([np.asarray(c.get_offsets())[:, 0] for c in ax.collections] or [np.empty(0)])
    xs = xs[np.isfinite(xs) & (xs > 0)]
    lo = min(0.01, float(xs.min()) / 2) if xs.size else 0.01
    hi = max(100.0, float(xs.max()) * 2) if xs.size else 100.0
    x = np.logspace(math.log10(lo), math.log10(hi), 200)
    for k, ((cl, name), sc) in enumerate(sorted(roofs.items())):
        bw = sc.memory_bandwidth.value * _giga(sc.memory_bandwidth.unit)
        simd = sc.flop_rate_simd.value * _giga(sc.flop_rate_simd.unit)
        scalar = sc.flop_rate_scalar.value * _giga(sc.flop_rate_scalar.unit)
        if bw <= 0 or simd <= 0:
            continue
        color = f"C{k}" if len(roofs) > 1 else "black"
        ax.plot(x, np.minimum(simd, bw * x), color=color, linewidth=1.4,
                label=f"{cl}/{name} roof" if len(roofs) > 1 else None)
        if 0 < scalar < simd:
            ax.plot(x[bw * x > scalar], np.full(int((bw * x > scalar).sum()), scalar), color=color,
                    linewidth=0.9, linestyle=":")
        if k == 0:
            ax.annotate(f"{simd:,.0f} GFlop/s (SIMD peak)", (hi, simd), ha="right", va="bottom", fontsize=7)
            if 0 < scalar < simd:
                ax.annotate(f"{scalar:,.0f} GFlop/s (scalar)", (scalar / bw * 1.2, scalar), ha="left", va="bottom",
                            fontsize=7)
            ax.set_ylim(min(ax.get_ylim()[0], bw * lo), simd * 3)
            p0, p1 = ax.transData.transform([(lo * 3, bw * lo * 3), (lo * 30, bw * lo * 30)])
            angle = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
            ax.annotate(f"{bw:,.0f} GB/s (memory bandwidth)", (lo * 3, bw * lo * 3 * 1.3), ha="left", va="bottom",
                        fontsize=7, rotation=angle, rotation_mode="anchor")
    ax.set_xlim(lo, hi)
