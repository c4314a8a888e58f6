"""Prometheus source: per-metric PromQL templates, samples placed on the job's grid by timestamp.

Why raw samples instead of ``query_range``: ``query_range`` repeats the previous value for up to
the lookback delta (5 min) into every gap and past a series' end, and Prometheus 2.42 ignores the
per-query ``lookback_delta``.  An archive must keep a missing sample
missing, so a template that renders to a plain vector selector is read as a range vector
(instant query ``SELECTOR[Ws]`` at the window's end), which returns the stored samples with their
own timestamps; each sample goes to the nearest grid point ``start + k * timestep`` (jittered
scrape times are fine), of two on one point the first wins.  Raw reads are not subject to the
11,000-points limit, but they are still cut into windows of at most ``max-points-per-request``
samples.

A template that is an expression (``rate(...)``, ``sum by (...)``, arithmetic) cannot be read
raw; it is evaluated with ``query_range`` at ``step = timestep`` in chunks of at most 11,000
points (consecutive chunks never repeat the boundary step).  Such a template must avoid lookback
filling itself, e.g. ``rate(x[2m])`` has no value in a gap, or ``x and (time() - timestamp(x) <
60)`` drops repeated values.  ``{"query": ..., "mode": "range" | "raw"}`` forces a mode.

Templates use ``string.Template`` placeholders (PromQL needs its braces): ``${metric}``,
``${cluster}``, ``${hosts}`` (regex alternation of the host patterns), ``${host_label}``,
``${ids}``, ``${id_label}``, ``${step}`` (e.g. ``60s``), ``${step_seconds}`` (``60``); the two
regexes are escaped for use inside a double-quoted PromQL string.  Lookup:
``templates["<cluster>/<metric>"]``, then ``templates["<metric>"]``, then the default
``${metric}{${host_label}=~"${hosts}"}`` (plus ``,${id_label}=~"${ids}"`` below node scope),
which fits node_exporter-style ``instance`` labels (``host`` or ``host:port``) and DCGM's ``gpu``
index label.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError, InputError
from ..model import JobMetric
from .base import FetchResult, SeriesRequest
from .http import (
    HttpClient,
    HttpStatusError,
    JobGrid,
    TimeoutPolicy,
    check_http_spec,
    pack_requests,
    place,
    run_bounded,
)

if TYPE_CHECKING:
    from ..cluster import Cluster, MetricConfig
    from ..model import Job

#: Prometheus refuses query_range with more than this many steps per series.
MAX_STEPS = 11_000
#: Use the compact-output fast path of :func:`parse_matrix` (``bench/`` turns it off for its baseline).
FAST_PARSE = True
_SELECTOR = re.compile(r'^\s*(?:[A-Za-z_:][A-Za-z0-9_:]*\s*)?(?:\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\})?\s*$')
_PORT = re.compile(r":[0-9]+$")
_FAST_HEAD = '{"status":"success","data":{"resultType":"matrix","result":['
_DEFAULT_NODE = '${metric}{${host_label}=~"${hosts}"}'
_DEFAULT_IDS = '${metric}{${host_label}=~"${hosts}",${id_label}=~"${ids}"}'
_OPTIONS = {"kind", "url", "templates", "host-label", "id-labels", "host-pattern", "accelerator-ids",
            "token", "token-env", "timeout-s", "timeout-per-million-points-s", "max-timeout-s",
            "max-concurrency", "max-points-per-request"}

Series = tuple[dict[str, str], np.ndarray, np.ndarray]  # labels, times (s), values


@dataclass(frozen=True)
class _Window:
    hosts: tuple[SeriesRequest, ...]
    k0: int
    k1: int


class PrometheusSource:
    """A :class:`~ccarchive.sources.base.MetricSource` reading a Prometheus server."""

    def __init__(self, url: str, *, templates: dict[str, Any] | None = None, host_label: str = "instance",
                 id_labels: dict[str, str] | None = None, host_pattern: str = "${host}(:[0-9]+)?",
                 accelerator_ids: str = "index", token: str = "", timeout: TimeoutPolicy | None = None,
                 max_concurrency: int = 4, max_points_per_request: int = 250_000) -> None:
        if accelerator_ids not in ("index", "id"):
            raise InputError(f"prometheus source: accelerator-ids must be \"index\" or \"id\", got {accelerator_ids!r}")
        self.url = url.rstrip("/")
        self.templates = dict(templates or {})
        for key, t in self.templates.items():
            _template_text(key, t)
        self.host_label = host_label
        self.id_labels = {"hwthread": "cpu", "accelerator": "gpu", **(id_labels or {})}
        self.host_pattern = string.Template(host_pattern)
        self.accelerator_ids = accelerator_ids
        self.timeout = timeout or TimeoutPolicy()
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_points = max(1, int(max_points_per_request))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = HttpClient(self.url, headers=headers, pool_size=self.max_concurrency)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> PrometheusSource:
        """Build from a ``{"kind": "prometheus", ...}`` spec (kebab-case keys, see docs/sources.md)."""
        url, token = check_http_spec(spec, _OPTIONS, "prometheus")
        return cls(url, templates=spec.get("templates"), host_label=spec.get("host-label", "instance"),
                   id_labels=spec.get("id-labels"), host_pattern=spec.get("host-pattern", "${host}(:[0-9]+)?"),
                   accelerator_ids=spec.get("accelerator-ids", "index"), token=str(token),
                   timeout=TimeoutPolicy.from_options(spec), max_concurrency=int(spec.get("max-concurrency", 4)),
                   max_points_per_request=int(spec.get("max-points-per-request", 250_000)))

    # ---- MetricSource

    def fetch(self, job: Job, cluster: Cluster, metric: MetricConfig, scope: str,
              requests: list[SeriesRequest]) -> FetchResult:
        """Native-scope series of ``metric`` on the job's grid; missing ones in ``missing``."""
        grid = JobGrid.for_job(job.start_time, job.duration, metric.timestep)
        id_label = self.id_labels.get(scope, scope)
        label_of = self._id_label_values(job, cluster, scope)
        keys = [(r.hostname, i) for r in requests for i in (r.ids if r.ids is not None else (None,))]
        row_of = {k: n for n, k in enumerate(keys)}
        data = np.full((len(keys), grid.n), np.nan)
        query, raw = self._query(job.cluster, metric, scope)
        known_hosts = {r.hostname: r.hostname for r in requests}
        id_of = {(r.hostname, label_of(i)): i for r in requests for i in (r.ids or ())}

        # windows: whole job per host group if it fits, else time windows (<= 11,000 steps for range)
        window, groups = pack_requests(requests, grid.n, self.max_points, None if raw else MAX_STEPS)
        work = [_Window(tuple(g), k0, k1) for k0, k1 in grid.windows(window) for g in groups]
        what = f"{job.label}: metric {metric.name}"

        def one(w: _Window) -> None:
            hosts = ", ".join(r.hostname for r in w.hosts)
            rendered = self._render(query, job.cluster, metric, w.hosts, label_of, id_label, grid.step)
            params = _params(rendered, raw, grid, w.k0, w.k1)
            n_series = sum(len(r.ids) if r.ids is not None else 1 for r in w.hosts)
            where = f"{what}, hosts {hosts}"
            try:
                body = self.client.request(
                    "GET", "/api/v1/query" if raw else "/api/v1/query_range", params=params,
                    timeout=self.timeout.for_points(n_series * (w.k1 - w.k0 + 1)), what=where)
            except HttpStatusError as e:
                raise InputError(f"{where}: Prometheus refused the query {rendered!r}: "
                                 f"{_prom_error(e.body) or e}; check the template", reason="source-refused") from None
            seen: set[tuple[str, str | None]] = set()
            for labels, times, values in parse_matrix(body, where, self.host_label):
                host = _host_of(labels.get(self.host_label), known_hosts)
                if host is None:
                    continue
                sid = None if scope == "node" else id_of.get((host, labels.get(id_label, "")))
                key = (host, sid)
                if key not in row_of or (scope != "node" and sid is None):
                    continue
                if key in seen:
                    at = host if sid is None else f"{host} {scope} {sid}"
                    raise FormatError(f"{what}, host {at}: the query returns several series "
                                      f"({labels}); aggregate them in the template, e.g. sum by "
                                      f"({self.host_label}{', ' + id_label if sid else ''}) (...)")
                seen.add(key)
                place(data[row_of[key]], grid, times, values, w.k0, w.k1)

        run_bounded(one, work, self.max_concurrency)
        missing: list[tuple[str, str | None, str]] = []
        keep = []
        for n, (host, sid) in enumerate(keys):
            if np.isnan(data[n]).all():
                missing.append((host, sid, "no samples in Prometheus for the job's time range"))
            else:
                keep.append(n)
        if not keep:
            return FetchResult(None, missing)
        block = JobMetric(metric.unit, grid.step, [keys[n][0] for n in keep], [keys[n][1] for n in keep],
                          np.ascontiguousarray(data[np.asarray(keep)]), np.full(len(keep), grid.n, dtype=np.int64))
        return FetchResult(block, missing)

    # ---- queries

    def _query(self, cluster: str, metric: MetricConfig, scope: str) -> tuple[str, bool]:
        """(template text, raw mode?) for a metric."""
        t = self.templates.get(f"{cluster}/{metric.name}", self.templates.get(metric.name))
        if t is None:
            return (_DEFAULT_NODE if scope == "node" else _DEFAULT_IDS), True
        text = _template_text(metric.name, t)
        mode = t.get("mode") if isinstance(t, dict) else None
        return text, (mode == "raw") if mode else _SELECTOR.match(text) is not None

    def _render(self, template: str, cluster: str, metric: MetricConfig, hosts: tuple[SeriesRequest, ...],
                label_of: Any, id_label: str, step: int) -> str:
        patterns = [self.host_pattern.safe_substitute(host=re.escape(r.hostname)) for r in hosts]
        ids = sorted({label_of(i) for r in hosts for i in (r.ids or ())})
        try:
            return string.Template(template).substitute(
                metric=metric.name, cluster=cluster, hosts=_quoted("|".join(patterns)), host_label=self.host_label,
                ids=_quoted("|".join(re.escape(i) for i in ids)), id_label=id_label, step=f"{step}s",
                step_seconds=str(step))
        except (KeyError, ValueError) as e:
            raise InputError(f"prometheus source: template for {metric.name} has an unknown or bad "
                             f"placeholder ({e}); known: metric, cluster, hosts, host_label, ids, "
                             f"id_label, step, step_seconds") from None

    def _id_label_values(self, job: Job, cluster: Cluster, scope: str) -> Any:
        """Native id -> label value: the id itself, or for accelerators by default its index in
        the subcluster's accelerator list (DCGM's ``gpu`` label)."""
        if scope != "accelerator" or self.accelerator_ids == "id":
            return lambda i: i
        try:
            from ..scopes import job_sub_cluster

            order = {a: str(n) for n, a in enumerate(job_sub_cluster(job, cluster).topology.accelerator_ids())}
        except Exception:  # noqa: BLE001 - without a topology the ids are used as they are
            order = {}
        return lambda i: order.get(i, i)


def _quoted(regex: str) -> str:
    """A regex for use inside a double-quoted PromQL string (which has Go escapes: ``\\.``)."""
    return regex.replace("\\", "\\\\").replace('"', '\\"')


def _template_text(name: str, t: Any) -> str:
    text = t.get("query") if isinstance(t, dict) else t
    mode = t.get("mode") if isinstance(t, dict) else None
    if not isinstance(text, str) or not text.strip() or mode not in (None, "raw", "range"):
        raise InputError(f"prometheus source: template {name!r} must be a PromQL string or "
                         f"{{\"query\": ..., \"mode\": \"raw\"|\"range\"}}, got {t!r}")
    return text


def _params(query: str, raw: bool, grid: JobGrid, k0: int, k1: int) -> dict[str, str]:
    """Request parameters for grid indices ``[k0, k1)``.

    raw: the range ends half a step after the last point and starts one and a half steps before
    the first, so jittered samples are caught; samples outside ``[k0, k1)`` are dropped on placement,
    so windows never share a sample, whichever end of the range the server treats as closed."""
    step = grid.step
    if raw:
        end = grid.start + (k1 - 1) * step + step / 2
        return {"query": f"{query}[{(k1 - k0 + 1) * step * 1000}ms]", "time": f"{end:.3f}"}
    return {"query": query, "start": str(grid.start + k0 * step), "end": str(grid.start + (k1 - 1) * step),
            "step": str(step)}


def _host_of(label: str | None, hosts: dict[str, str]) -> str | None:
    if label is None:
        return None
    return hosts.get(label) or hosts.get(_PORT.sub("", label))


def _prom_error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        return ""


# ---- answers


def parse_matrix(body: bytes, where: str, host_label: str = "instance") -> list[Series]:
    """The series of a ``matrix`` answer as (labels, times, values) arrays.

    The fast path reads Prometheus' compact output with one ``np.fromstring`` per series (about
    10x faster than ``json.loads`` plus per-sample conversion); anything unexpected falls back to
    ``json.loads``, which also produces the error messages."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{where}: Prometheus answer is not UTF-8 ({e})") from None
    if FAST_PARSE and text.startswith(_FAST_HEAD):
        fast = _parse_fast(text)
        if fast is not None:
            return fast
    return _parse_slow(text, where, host_label)


def _parse_fast(text: str) -> list[Series] | None:
    dec = json.JSONDecoder()
    pos = len(_FAST_HEAD)
    out: list[Series] = []
    if text.startswith("]", pos):
        return out
    while True:
        if not text.startswith('{"metric":', pos):
            return None
        try:
            labels, pos = dec.raw_decode(text, pos + len('{"metric":'))
        except ValueError:
            return None
        if not isinstance(labels, dict) or not text.startswith(',"values":[', pos):
            return None
        pos += len(',"values":[')
        end = text.find("]]", pos)
        if end < 0 or text.startswith("]", pos):
            return None
        segment = text[pos:end + 1]
        try:
            flat = np.fromstring(segment.translate(_STRIP), sep=",")
        except ValueError:
            return None
        if flat.size != 2 * segment.count("["):
            return None
        out.append(({str(k): str(v) for k, v in labels.items()}, flat[0::2], flat[1::2]))
        pos = end + 2
        if text.startswith("},", pos):
            pos += 2
        elif text.startswith("}]", pos):
            return out
        else:
            return None


_STRIP = str.maketrans("", "", '[]"')


def _parse_slow(text: str, where: str, host_label: str) -> list[Series]:
    try:
        answer = json.loads(text)
    except ValueError as e:
        raise FormatError(f"{where}: Prometheus answer is not JSON ({e})") from None
    if not isinstance(answer, dict) or answer.get("status") != "success":
        err = answer.get("error") if isinstance(answer, dict) else None
        raise FormatError(f"{where}: Prometheus answered without success: {err or str(answer)[:200]}")
    data = answer.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise FormatError(f"{where}: Prometheus answer is not a matrix result")
    out: list[Series] = []
    for s in data["result"]:
        labels = s.get("metric") if isinstance(s, dict) else None
        values = s.get("values") if isinstance(s, dict) else None
        if not isinstance(labels, dict) or not isinstance(values, list):
            raise FormatError(f"{where}: malformed series in Prometheus answer: {str(s)[:200]}")
        host = labels.get(host_label, "?")
        try:
            pairs = np.asarray(values, dtype=str).reshape(len(values), 2)
            ts, vs = pairs[:, 0].astype(np.float64), pairs[:, 1].astype(np.float64)
        except (TypeError, ValueError) as e:
            raise FormatError(f"{where}, series {labels} (host {host}): non-numeric samples in the "
                              f"Prometheus answer ({e})") from None
        out.append(({str(k): str(v) for k, v in labels.items()}, ts, vs))
    return out
