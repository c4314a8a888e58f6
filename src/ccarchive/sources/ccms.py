"""cc-metric-store client: the external store's HTTP query API (``GET /api/query?version=v2``).

Why native ids with ``aggreg: false``: the spec wants coarser scopes built by our kernels from
native series, so the store is only ever asked for one series per (host, native id) and the same
aggregation code serves every source.  Ids are sent as strings, sorted numerically (Go iterates
maps, so cc-backend's order is random).

Facts of the server this client is built around (go-integration.md §3.3-3.5):

* ``results[i]`` answers ``queries[i]``; with ``aggreg: false`` one entry per type-id, in order;
* a missing host or metric is **silently omitted** (no entry); other read errors give an entry
  with ``error``.  When entries are missing from a multi-id query we cannot tell which id they
  belong to (cc-backend then shifts ids), so those hosts are asked again with one query per id;
* ``data`` has 3 decimals and ``null`` for missing samples; the external store front-pads with
  ``null`` to ``from`` but keeps ``from`` at the first real sample, so sample times are anchored
  on the real samples: ``t_i = from + (i - pad) * resolution`` with
  ``pad = len(data) - (to - from) / resolution``;
* ``to`` is exclusive.  Samples are placed on the job grid by time (``ccarchive.sources.http``).

Large jobs are split into requests of at most ``max-points-per-request`` samples (hosts packed
into groups, long jobs cut into time windows on the grid), sent on at most ``max-concurrency``
threads, each with a timeout sized by its samples (issue #228 of cc-backend: one 10 s request for
a whole large job times out).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
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

log = logging.getLogger(__name__)

_NUMERIC = frozenset((int, float, type(None)))
SeriesKey = tuple[str, "str | None"]


def _id_key(i: str) -> tuple[int, int, str]:
    return (0, int(i), "") if i.isdigit() else (1, 0, i)


@dataclass
class _Request:
    """One HTTP request: some hosts' queries over one window ``[k0, k1)`` of the grid."""

    hosts: list[SeriesRequest]
    k0: int
    k1: int
    single_ids: bool = False  # one query per id (used to attribute omitted entries)
    queries: list[dict[str, Any]] = field(default_factory=list)
    keys: list[list[SeriesKey]] = field(default_factory=list)  # the series each query asks for


class CCMetricStoreSource:
    """A :class:`~ccarchive.sources.base.MetricSource` reading an external cc-metric-store."""

    def __init__(self, url: str, token: str = "", *, timeout: TimeoutPolicy | None = None,
                 max_concurrency: int = 4, max_points_per_request: int = 2_000_000) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout or TimeoutPolicy()
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_points = max(1, int(max_points_per_request))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = HttpClient(self.url, headers=headers, pool_size=self.max_concurrency)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CCMetricStoreSource:
        """``{"kind": "cc-metric-store", "url", "token" | "token-env", "timeout-s",
        "timeout-per-million-points-s", "max-timeout-s", "max-concurrency", "max-points-per-request"}``."""
        known = {"kind", "url", "token", "token-env", "timeout-s", "timeout-per-million-points-s",
                 "max-timeout-s", "max-concurrency", "max-points-per-request"}
        url, token = check_http_spec(spec, known, "cc-metric-store")
        return cls(url, token, timeout=TimeoutPolicy.from_options(spec),
                   max_concurrency=int(spec.get("max-concurrency", 4)),
                   max_points_per_request=int(spec.get("max-points-per-request", 2_000_000)))

    # ---- MetricSource

    def fetch(self, job: Job, cluster: Cluster, metric: MetricConfig, scope: str,
              requests: list[SeriesRequest]) -> FetchResult:
        """Native-scope series of ``metric`` on the job's grid; missing ones in ``missing``."""
        grid = JobGrid.for_job(job.start_time, job.duration, metric.timestep)
        reqs = [SeriesRequest(r.hostname, None if r.ids is None else tuple(sorted(r.ids, key=_id_key)))
                for r in requests]
        keys: list[SeriesKey] = [(r.hostname, i) for r in reqs for i in (r.ids if r.ids is not None else (None,))]
        row_of = {k: n for n, k in enumerate(keys)}
        data = np.full((len(keys), grid.n), np.nan)
        errors: dict[SeriesKey, str] = {}
        answered: set[SeriesKey] = set()
        ctx = _Ctx(self, job, cluster.name, metric, scope, grid, data, row_of, errors, answered)

        plan = self._plan(reqs, grid, scope, metric.name, single_ids=False)
        retry = run_bounded(ctx.run, plan, self.max_concurrency)
        ambiguous = {h.hostname: h for hosts in retry for h in hosts}
        if ambiguous:
            plan = self._plan(list(ambiguous.values()), grid, scope, metric.name, single_ids=True)
            run_bounded(ctx.run, plan, self.max_concurrency)

        missing: list[tuple[str, str | None, str]] = []
        keep: list[int] = []
        for n, (host, sid) in enumerate(keys):
            k = (host, sid)
            if k in errors:
                missing.append((host, sid, f"cc-metric-store error: {errors[k]}"))
            elif k not in answered:
                missing.append((host, sid, "cc-metric-store has no such series (host or metric unknown)"))
            elif np.isnan(data[n]).all():
                missing.append((host, sid, "no samples in the job's time range"))
            else:
                keep.append(n)
        if not keep:
            return FetchResult(None, missing)
        rows = np.asarray(keep, dtype=np.int64)
        block = JobMetric(metric.unit, grid.step, [keys[n][0] for n in keep], [keys[n][1] for n in keep],
                          np.ascontiguousarray(data[rows]), np.full(len(keep), grid.n, dtype=np.int64))
        return FetchResult(block, missing)

    def _plan(self, reqs: list[SeriesRequest], grid: JobGrid, scope: str, metric: str, *,
              single_ids: bool) -> list[_Request]:
        """Pack hosts into groups and the grid into windows so no request exceeds max_points."""
        window, groups = pack_requests(reqs, grid.n, self.max_points)
        out = []
        for k0, k1 in grid.windows(window):
            for g in groups:
                req = _Request(g, k0, k1, single_ids)
                for r in g:
                    if r.ids is None:
                        req.queries.append({"metric": metric, "host": r.hostname, "resolution": 0, "aggreg": False})
                        req.keys.append([(r.hostname, None)])
                    elif single_ids:
                        for i in r.ids:
                            req.queries.append(_typed(scope, metric, r.hostname, [i]))
                            req.keys.append([(r.hostname, i)])
                    elif r.ids:
                        req.queries.append(_typed(scope, metric, r.hostname, list(r.ids)))
                        req.keys.append([(r.hostname, i) for i in r.ids])
                out.append(req)
        return out


def _typed(scope: str, metric: str, host: str, ids: list[str]) -> dict[str, Any]:
    # Go's APIQuery field order: type, metric, host, resolution, type-ids, aggreg
    return {"type": scope, "metric": metric, "host": host, "resolution": 0, "type-ids": ids, "aggreg": False}


@dataclass
class _Ctx:
    """One fetch: where answers go (shared by the request threads; each writes distinct cells)."""

    src: CCMetricStoreSource
    job: Job
    cluster: str
    metric: MetricConfig
    scope: str
    grid: JobGrid
    data: np.ndarray
    row_of: dict[SeriesKey, int]
    errors: dict[SeriesKey, str]
    answered: set[SeriesKey]
    warned: bool = False

    def where(self, host: str, sid: str | None = None) -> str:
        at = host if sid is None else f"{host} {self.scope} {sid}"
        return f"{self.job.label}: metric {self.metric.name}, host {at}"

    def run(self, req: _Request) -> list[SeriesRequest]:
        """Send one request and place its answers; returns hosts whose entries cannot be attributed."""
        g = self.grid
        queries = req.queries
        body = {"cluster": self.cluster, "queries": queries, "for-all-nodes": None,
                "from": g.start + req.k0 * g.step, "to": g.start + (req.k1 - 1) * g.step + 1,
                "with-stats": False, "with-data": True}
        n_series = sum(len(k) for k in req.keys)
        hosts = ", ".join(dict.fromkeys(h.hostname for h in req.hosts))
        what = f"{self.job.label}: metric {self.metric.name}, hosts {hosts}"
        try:
            raw = self.src.client.request(
                "GET", "/api/query", params={"version": "v2"}, body=json.dumps(body).encode(),
                timeout=self.src.timeout.for_points(n_series * (req.k1 - req.k0)), what=what)
        except HttpStatusError as e:
            raise InputError(f"cc-metric-store refused the query ({e}); check url and token",
                             reason="source-refused") from None
        try:
            answer = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise FormatError(f"{what}: cc-metric-store answer is not JSON ({e})") from None
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(queries):
            got = len(results) if isinstance(results, list) else "no"
            raise FormatError(f"{what}: cc-metric-store sent {got} results for {len(queries)} queries")
        ambiguous: list[SeriesRequest] = []
        for q, keys, entries in zip(queries, req.keys, results, strict=True):
            host = q["host"]
            if not isinstance(entries, list):
                raise FormatError(f"{self.where(host)}: cc-metric-store result is not a list")
            if len(entries) > len(keys):
                raise FormatError(f"{self.where(host)}: cc-metric-store sent {len(entries)} series "
                                  f"for {len(keys)} requested ids")
            if 0 < len(entries) < len(keys):
                ambiguous.extend(h for h in req.hosts if h.hostname == host)
                continue
            for key, entry in zip(keys, entries, strict=False):
                self._place(key, entry, req)
        return ambiguous

    def _place(self, key: SeriesKey, entry: Any, req: _Request) -> None:
        host, sid = key
        if not isinstance(entry, dict):
            raise FormatError(f"{self.where(host, sid)}: cc-metric-store entry is not an object")
        if entry.get("error") is not None:
            self.errors[key] = str(entry["error"])
            return
        values = entry.get("data") or []
        if not isinstance(values, list) or not set(map(type, values)) <= _NUMERIC:
            bad = next((v for v in values if type(v) not in _NUMERIC), values) if isinstance(values, list) else values
            raise FormatError(f"{self.where(host, sid)}: cc-metric-store data is not numeric (e.g. {bad!r:.60})")
        try:
            t_from, t_to, res = int(entry["from"]), int(entry["to"]), int(entry.get("resolution") or 0)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{self.where(host, sid)}: cc-metric-store entry without valid from/to ({e})") from None
        self.answered.add(key)
        if not values:
            return
        res = res if res > 0 else self.grid.step
        if res != self.grid.step and not self.warned:
            self.warned = True
            log.warning("%s: store resolution %d s differs from the metric's timestep %d s; "
                        "samples are placed by time", self.where(host, sid), res, self.grid.step)
        arr = np.array(values, dtype=np.float64)
        pad = max(0, len(arr) - max(0, (t_to - t_from) // res))
        times = t_from + (np.arange(len(arr), dtype=np.float64) - pad) * res
        place(self.data[self.row_of[key]], self.grid, times, arr, req.k0, req.k1)
