"""cc-metric-store client: the external store's HTTP query API (``GET /api/query?version=v2``).

Why native ids with ``aggreg: false``: coarser scopes are built by ccarchive's kernels from native
series, so the same aggregation code serves every source and a series missing in the store never
shifts another one.  Ids are sent as strings, sorted numerically (Go iterates maps, so cc-backend's
order is random).  The exception is a metric whose only archived scope aggregates native series
(node scope of a job above the core-scope limit: 72 hwthreads per fritz node): there the store is
asked for the aggregate (``aggreg: true``), as cc-backend does, which moves 1/72 of the samples;
see :meth:`CCMetricStoreSource.fetch_many` for when its answer is not used.

Facts of the server this client is built around (observed on cc-metric-store v0.1.1, and its
documented later behaviour):

* ``results[i]`` answers ``queries[i]``; with ``aggreg: false`` one entry per type-id, in order;
  with ``aggreg: true`` one entry, the sum or average of the members the store has;
* a missing host, metric or id: v0.1.1 puts an error entry ``"metric or host not found"`` in its
  slot ("no such series"); later releases leave the entry out.  When entries are left out of a
  multi-id query we cannot tell which ids they belong to (cc-backend then shifts ids), so those
  hosts are asked again with one query per id;
* ``data`` has 3 decimals and ``null`` for missing samples; when ``from`` is before the first
  sample the answer is front-padded with ``null`` while its ``from`` stays at the first real
  sample, so sample times are anchored on the real samples: ``t_i = from + (i - pad) * resolution``
  with ``pad = len(data) - (to - from) / resolution``; ``to`` is exclusive;
* store-side aggregation reads every member over the first member's range: members found are
  summed (or averaged), missing ones are not counted, a NaN member makes the point NaN; a member
  that does not cover that range makes the answer the error "data from lower granularities does
  not align", so the answer depends on the order of the ids;
* a ``resolution`` above the frequency makes the store downsample unevenly (LTTB), so this client
  always asks for ``resolution: 0`` (native).

Requests: a job's fetches (one per metric and host chunk, in the loader's order) are split into
requests of at most ``max-points-per-request`` samples (hosts packed into groups, long jobs cut
into time windows on the grid), small ones packed together (a small job is one round trip), and
sent on ``max-concurrency`` threads ahead of the consumer, so the store builds the next answer while
an earlier one is parsed and archived.  Each request's timeout is sized by its samples.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import FormatError, InputError
from ..kernels.aggregate import AVG, SUM, aggregate
from ..kernels.jsonnum import QueryAnswer, parse_document, parse_query_answer
from ..loading import sorted_ids
from ..model import JobMetric
from .base import FetchResult, SeriesRequest
from .http import HttpClient, HttpStatusError, JobGrid, TimeoutPolicy, check_http_spec, pack_requests, place

if TYPE_CHECKING:
    from ..cluster import Cluster, MetricConfig
    from ..loading import FetchCall
    from ..model import Job
    from ..scopes import PlannedSeries

log = logging.getLogger(__name__)

#: v0.1.1's error entry for a host, metric or id the store does not have: "no such series".
NOT_FOUND = "metric or host not found"
#: Requests smaller than this many samples are packed together (a 1-node job is one round trip).
MERGE_POINTS = 50_000
#: ... except the first of a larger job, kept below this: its metric arrives (and is archived)
#: while the store builds the rest.
FIRST_POINTS = 10_000
#: Fetches are opened (their arrays allocated, their requests sent) ahead of the consumer up to
#: this many samples per request thread: 8 MiB of float64 each.
READ_AHEAD_SAMPLES = 1 << 20

SeriesKey = tuple[str, "str | None"]

# reasons of missing series, as they appear in the job's warnings
_ERROR = "cc-metric-store error: "
_NOT_STORED = "cc-metric-store has no such series (host or metric unknown)"
_NO_SAMPLES = "no samples in the job's time range"


@dataclass(slots=True)
class Entry:
    """One decoded answer entry: ``error``, or ``count`` samples (NaN = null) from ``frm`` to ``to``
    at ``offset`` in the answer's one value array ``base``.  With ``rows`` > 1 it stands for that
    many consecutive entries of one query over the same times (a host's ids, the usual answer),
    their samples one after the other: decoded and placed as one block."""

    error: str | None
    frm: int
    to: int
    resolution: int
    base: npt.NDArray[np.float64]
    offset: int = 0
    count: int = 0
    rows: int = 1

    @property
    def values(self) -> npt.NDArray[np.float64]:
        """The samples, one row per entry."""
        return self.base[self.offset:self.offset + self.rows * self.count].reshape(self.rows, self.count)

    def split(self) -> list[Entry]:
        """The single entries of a block."""
        return [Entry(None, self.frm, self.to, self.resolution, self.base, self.offset + r * self.count, self.count)
                for r in range(self.rows)]


class BadEntry(ValueError):
    """An entry that is not what the store sends; ``query`` and ``index`` say where."""

    def __init__(self, query: int, index: int, message: str) -> None:
        super().__init__(message)
        self.query, self.index = query, index


def decode_answer(raw: bytes) -> tuple[list[list[Entry]], npt.NDArray[np.float64]]:
    """The entries of a query answer ``{"results": [[entry, ...], ...]}``, one list per query, and
    the array all their samples are in (the entries' ``values`` are views of it).

    The one place that parses answers: the usual answer is read by one kernel (no GIL held) into
    tables -- every ``data`` array straight into one float64 array, no Python float per sample,
    no dict per entry.  Anything else goes through the general document kernel, which leaves the
    small rest (error texts, from, to, resolution, statistics) to ``json``: both give the same
    entries.  Raises ``ValueError`` for text that is not JSON and :class:`BadEntry` for an entry
    of the wrong shape.
    """
    answer = parse_query_answer(raw)
    if answer is not None:
        return _usual_entries(answer), answer.values
    return _document_entries(raw)


def _usual_entries(answer: QueryAnswer) -> list[list[Entry]]:
    """The entries of an answer the kernel read: a query's entries as one block where they are one."""
    base, entries, errors = answer.values, answer.entries, answer.errors
    out: list[list[Entry]] = []
    for first, n, block in answer.queries.tolist():
        if block and n:  # only the block's first row is read: no Python ints for the others
            frm, to, res, offset, count, _, _ = entries[first].tolist()
            out.append([Entry(None, frm, to, res, base, offset, count, n)])
            continue
        out.append([Entry(errors.get(e), frm, to, res, base, offset if count >= 0 else 0, max(count, 0))
                    for e, (frm, to, res, offset, count, _, _) in enumerate(entries[first:first + n].tolist(), first)])
    return out


def _document_entries(raw: bytes) -> tuple[list[list[Entry]], npt.NDArray[np.float64]]:
    """:func:`decode_answer` for any document: checked entry by entry, a bad one named."""
    doc = parse_document(raw)

    def entries_of(value: Any) -> list[Any] | None:  # an empty list is an (empty) number array
        k = doc.marker(value)
        if k is not None:
            return [] if doc.counts[k] == 0 else None
        return value if isinstance(value, list) else None

    answer = doc.loads()
    results = entries_of(answer.get("results")) if isinstance(answer, dict) else None
    if results is None:
        raise ValueError("no \"results\" array")
    base, offsets, counts = doc.values, doc.offsets.tolist(), doc.counts.tolist()
    out: list[list[Entry]] = []
    for q, listed in enumerate(results):
        entries = entries_of(listed)
        if entries is None:
            raise BadEntry(q, -1, "result is not a list of entries")
        block = _as_block(entries, base, offsets, counts)
        if block is not None:
            out.append([block])
            continue
        decoded = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise BadEntry(q, i, "entry is not an object")
            data = e.get("data")
            k = None if data is None else doc.marker(data)
            if data is not None and k is None:
                bad = next((v for v in data if not isinstance(v, (int, float)) or isinstance(v, bool)), data) \
                    if isinstance(data, list) else data
                raise BadEntry(q, i, f"data is not numeric (e.g. {bad!r:.60})")
            error = e.get("error")
            frm, to, res = e.get("from", 0), e.get("to", 0), e.get("resolution") or 0
            complete = error is not None or ("from" in e and "to" in e)
            if not complete or not all(type(x) is int for x in (frm, to, res)):
                raise BadEntry(q, i, "entry without valid from/to/resolution")
            decoded.append(Entry(None if error is None else str(error), frm, to, res, base,
                                 0 if k is None else int(offsets[k]), 0 if k is None else int(counts[k])))
        out.append(decoded)
    return out, base


def _as_block(entries: list[Any], base: npt.NDArray[np.float64], offsets: list[int],
              counts: list[int]) -> Entry | None:
    """The entries of one query as one block :class:`Entry` when they are the usual answer:
    objects without error over the same ``from``/``to``/``resolution``, whose ``data`` are the
    consecutive number arrays ``k0, k0 + 1, ...`` of equal length.  None otherwise: the caller
    then checks entry by entry (and names a bad one)."""
    if not entries:
        return None
    try:
        times = {(e["from"], e["to"], e.get("resolution"), e.get("error"),  # (60.0 == 60: types too)
                  type(e["from"]), type(e["to"]), type(e.get("resolution"))) for e in entries}
        markers = [e["data"] for e in entries]
        k0 = markers[0][0]
    except (KeyError, TypeError, AttributeError, IndexError):
        return None
    if len(times) != 1 or type(k0) is not int:
        return None
    ((frm, to, res, error, *_),) = times
    n = len(entries)
    if error is not None or type(frm) is not int or type(to) is not int or not (res is None or type(res) is int) \
            or not 0 <= k0 <= len(counts) - n or markers != [[k] for k in range(k0, k0 + n)] \
            or any(type(m[0]) is not int for m in markers):  # (True == 1: a marker is an int)
        return None
    count = counts[k0]
    if counts[k0:k0 + n] != [count] * n or offsets[k0 + n - 1] - offsets[k0] != (n - 1) * count:
        return None
    return Entry(None, frm, to, res or 0, base, offsets[k0], count, n)


@dataclass
class _Call:
    """One fetch being answered: its rows (native series, or planned series the store aggregates)
    and the array their samples are placed in."""

    metric: MetricConfig
    scope: str
    grid: JobGrid
    requests: list[SeriesRequest]  # ids sorted; for store aggregation one per planned series
    series: tuple[PlannedSeries, ...] | None
    keys: list[SeriesKey] = field(default_factory=list)
    row_of: dict[SeriesKey, int] = field(default_factory=dict)
    hostnames: list[str] = field(default_factory=list)  # of the keys, in row order
    ids: list[str | None] = field(default_factory=list)
    data: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty((0, 0)))
    errors: dict[SeriesKey, str] = field(default_factory=dict)
    answered: set[SeriesKey] = field(default_factory=set)
    ambiguous: dict[str, SeriesRequest] = field(default_factory=dict)  # hosts to ask again id by id
    fallback: set[int] = field(default_factory=set)  # aggregated rows rebuilt from native members
    no_samples: set[SeriesKey] = field(default_factory=set)  # aggregated rows whose members have none
    futures: list[Future[None]] = field(default_factory=list)

    @property
    def aggregated(self) -> bool:
        return self.series is not None

    @property
    def samples(self) -> int:
        return len(self.keys) * self.grid.n


@dataclass
class _Part:
    """The queries of one request that answer one fetch over the window ``[k0, k1)`` of its grid."""

    call: _Call
    k0: int
    k1: int
    hosts: list[str] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)
    keys: list[list[SeriesKey]] = field(default_factory=list)  # the rows each query's entries answer

    @property
    def points(self) -> int:
        return sum(len(k) for k in self.keys) * (self.k1 - self.k0)

    @property
    def work(self) -> int:
        """Samples the store reads: all members of an aggregated query."""
        ids = sum(len(q.get("type-ids") or (0,)) for q in self.queries)
        return ids * (self.k1 - self.k0)


@dataclass
class _Request:
    """One HTTP request: parts over the same time range ``[frm, to)``."""

    frm: int
    to: int
    parts: list[_Part]


class CCMetricStoreSource:
    """A :class:`~ccarchive.sources.base.MetricSource` reading an external cc-metric-store."""

    def __init__(self, url: str, token: str = "", *, timeout: TimeoutPolicy | None = None,
                 max_concurrency: int = 4, max_points_per_request: int = 2_000_000,
                 store_aggregation: bool = True) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout or TimeoutPolicy()
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_points = max(1, int(max_points_per_request))
        #: the loader asks for store-side aggregates where a metric's only scope is an aggregate
        self.store_aggregation = bool(store_aggregation)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = HttpClient(self.url, headers=headers, pool_size=self.max_concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CCMetricStoreSource:
        """``{"kind": "cc-metric-store", "url", "token" | "token-env", "timeout-s",
        "timeout-per-million-points-s", "max-timeout-s", "max-concurrency", "max-points-per-request",
        "store-aggregation"}``."""
        known = {"kind", "url", "token", "token-env", "timeout-s", "timeout-per-million-points-s",
                 "max-timeout-s", "max-concurrency", "max-points-per-request", "store-aggregation"}
        url, token = check_http_spec(spec, known, "cc-metric-store")
        store_aggregation = spec.get("store-aggregation", True)
        if not isinstance(store_aggregation, bool):
            raise InputError(f"cc-metric-store source option 'store-aggregation' must be true or false, "
                             f"got {store_aggregation!r}")
        return cls(url, token, timeout=TimeoutPolicy.from_options(spec),
                   max_concurrency=int(spec.get("max-concurrency", 4)),
                   max_points_per_request=int(spec.get("max-points-per-request", 2_000_000)),
                   store_aggregation=store_aggregation)

    def close(self) -> None:
        """Stop the request threads and close the connections."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    # ---- MetricSource

    def fetch(self, job: Job, cluster: Cluster, metric: MetricConfig, scope: str,
              requests: list[SeriesRequest]) -> FetchResult:
        """Native-scope series of ``metric`` on the job's grid; missing ones in ``missing``."""
        from ..loading import FetchCall

        return next(iter(self.fetch_many(job, cluster, [FetchCall(metric, scope, requests)])))

    def fetch_many(self, job: Job, cluster: Cluster, calls: Iterable[FetchCall]) -> FetchAnswers:
        """The results of ``calls`` in order, with requests in flight ahead of the consumer.

        The first requests are sent before this returns, so a worker can open the next job's
        fetches while it still archives the current one; ``close()`` the answers to drop the rest.

        A call with ``series`` gets one row per planned series, aggregated by the store.  An answer
        with samples is what aggregating the native members gives here (NaN where the first member
        has none, as a NaN member makes the point NaN); an error other than "not found" (members
        that do not align) or an answer without any sample (the first member has none in the
        window, so it would not count here) is replaced by the native members, aggregated here.
        """
        return FetchAnswers(self, job, cluster, calls)

    # ---- planning

    def _new_call(self, job: Job, spec: FetchCall) -> _Call:
        grid = JobGrid.for_job(job.start_time, job.duration, spec.metric.timestep)
        if spec.series is None:
            return _native_call(spec.metric, spec.scope, grid, spec.requests)
        series = tuple(spec.series)
        reqs = [SeriesRequest(s.hostname, sorted_ids(tuple(s.members or ()))) for s in series]
        return _with_rows(_Call(spec.metric, spec.scope, grid, reqs, series),
                          _Layout.of([(s.hostname, s.id) for s in series], reqs))

    def _requests(self, call: _Call, reqs: list[SeriesRequest], *, single_ids: bool = False) -> list[_Request]:
        """Host groups x time windows so that no request exceeds max_points samples."""
        grid, metric = call.grid, call.metric.name
        sized = [SeriesRequest(r.hostname) for r in reqs] if call.aggregated else reqs  # one row each
        window, groups = pack_requests(sized, grid.n, self.max_points)
        out = []
        for k0, k1 in grid.windows(window):
            start = 0
            for g in groups:
                part = _Part(call, k0, k1)
                for j in range(start, start + len(g)):
                    r = reqs[j]
                    part.hosts.append(r.hostname)
                    if call.aggregated:  # reqs are the call's planned series, in row order
                        part.queries.append(_typed(call.scope, metric, r.hostname, list(r.ids or ()), True))
                        part.keys.append([call.keys[j]])
                    elif r.ids is None:
                        part.queries.append({"metric": metric, "host": r.hostname, "resolution": 0, "aggreg": False})
                        part.keys.append([(r.hostname, None)])
                    elif single_ids:
                        for i in r.ids:
                            part.queries.append(_typed(call.scope, metric, r.hostname, [i], False))
                            part.keys.append([(r.hostname, i)])
                    elif r.ids:
                        part.queries.append(_typed(call.scope, metric, r.hostname, list(r.ids), False))
                        part.keys.append([(r.hostname, i) for i in r.ids])
                start += len(g)
                out.append(_Request(grid.start + k0 * grid.step, grid.start + (k1 - 1) * grid.step + 1, [part]))
        return out

    def _submit(self, job: Job, cluster: Cluster, requests: list[_Request]) -> None:
        """Pack small requests over the same time range together and send them all."""
        merged: list[_Request] = []
        limit = min(MERGE_POINTS, self.max_points)
        sizes = [sum(p.points for p in r.parts) for r in requests]
        first = limit if sum(sizes) <= limit else min(limit, FIRST_POINTS)  # a small job: one request
        last_size = 0
        for r, size in zip(requests, sizes, strict=True):
            last = merged[-1] if merged else None
            cap = first if len(merged) == 1 else limit
            if last is not None and (last.frm, last.to) == (r.frm, r.to) and last_size + size <= cap:
                last.parts.extend(r.parts)
                last_size += size
            else:
                merged.append(_Request(r.frm, r.to, list(r.parts)))
                last_size = size
        pool = self._executor()
        for r in merged:
            future = pool.submit(self._send, job, cluster, r)
            for c in {id(p.call): p.call for p in r.parts}.values():
                c.futures.append(future)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="ccarchive-ccms")
            return self._pool

    # ---- answers

    def _finish(self, job: Job, cluster: Cluster, call: _Call) -> FetchResult:
        """Wait for a call's requests, ask again where needed, and build its result."""
        self._wait(call)
        if call.ambiguous:
            hosts, call.ambiguous = list(call.ambiguous.values()), {}
            self._submit(job, cluster, self._requests(call, hosts, single_ids=True))
            self._wait(call)
        if call.fallback:
            self._from_members(job, cluster, call)
        return _result(call)

    def _wait(self, call: _Call) -> None:
        futures, call.futures = call.futures, []
        for f in futures:
            f.result()  # the first failure is raised (and the job fails or is retried)

    def _from_members(self, job: Job, cluster: Cluster, call: _Call) -> None:
        """Replace unusable store aggregates by the aggregate of their native members (missing
        members are left out, a NaN member makes the point NaN: what the loader does)."""
        rows = sorted(call.fallback)
        call.fallback = set()
        log.info("%s: metric %s: store aggregate not usable for %s; using native series",
                 job.label, call.metric.name, ", ".join(call.keys[r][0] for r in rows))
        native = _native_call(call.metric, call.scope, call.grid, [call.requests[r] for r in rows])
        self._submit(job, cluster, self._requests(native, native.requests))
        got = self._finish(job, cluster, native)
        present = {} if got.block is None else {
            k: n for n, k in enumerate(zip(got.block.hostnames, got.block.ids, strict=True))}
        reasons = {(h, i): why for h, i, why in got.missing}
        member_rows: list[int] = []
        groups: list[int] = []
        for g, r in enumerate(rows):
            key = call.keys[r]
            call.data[r] = np.nan
            call.errors.pop(key, None)
            members = [(key[0], i) for i in call.requests[r].ids or ()]
            found = [present[m] for m in members if m in present]
            member_rows += found
            groups += [g] * len(found)
            if found:
                call.answered.add(key)
                continue
            call.answered.discard(key)
            why = next((reasons[m] for m in members if m in reasons), "")
            if why.startswith(_ERROR):
                call.errors[key] = why.removeprefix(_ERROR)
            elif why == _NO_SAMPLES:
                call.no_samples.add(key)
        if got.block is None or not member_rows:
            return
        picked = np.asarray(member_rows)
        sums, _ = aggregate(np.ascontiguousarray(got.block.data[picked]),
                            np.ascontiguousarray(got.block.lengths[picked]), np.asarray(groups, dtype=np.int64),
                            len(rows), AVG if call.metric.aggregation == "avg" else SUM)
        for g in sorted(set(groups)):
            call.data[rows[g]] = sums[g]

    def _send(self, job: Job, cluster: Cluster, req: _Request) -> None:
        """Send one request and place its answers (runs on a request thread)."""
        queries = [q for p in req.parts for q in p.queries]
        body = {"cluster": cluster.name, "queries": queries, "for-all-nodes": None, "from": req.frm, "to": req.to,
                "with-stats": False, "with-data": True}
        metrics = list(dict.fromkeys(p.call.metric.name for p in req.parts))
        hosts = ", ".join(dict.fromkeys(h for p in req.parts for h in p.hosts))
        what = (f"{job.label}: metric {metrics[0]}, hosts {hosts}" if len(metrics) == 1
                else f"{job.label}: metrics {', '.join(metrics)}, hosts {hosts}")
        try:
            raw = self.client.request(
                "GET", "/api/query", params={"version": "v2"}, body=json.dumps(body).encode(),
                timeout=self.timeout.for_points(sum(p.work for p in req.parts)), what=what)
        except HttpStatusError as e:
            raise InputError(f"cc-metric-store refused the query ({e}); check url and token",
                             reason="source-refused") from None
        where = [(p, q) for p in req.parts for q in range(len(p.queries))]
        try:
            results, _ = decode_answer(raw)
        except BadEntry as e:
            p, q = where[e.query] if 0 <= e.query < len(where) else (req.parts[0], 0)
            raise FormatError(f"{job.label}: metric {p.call.metric.name}, host {p.queries[q]['host']}: "
                              f"cc-metric-store {e}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise FormatError(f"{what}: cc-metric-store answer is not a query answer ({e})") from None
        if len(results) != len(queries):
            raise FormatError(f"{what}: cc-metric-store sent {len(results)} results for {len(queries)} queries")
        for (part, q), entries in zip(where, results, strict=True):
            _take(job, part, part.queries[q], part.keys[q], entries)


class FetchAnswers:
    """The answers of one job's fetches, in call order (what :meth:`CCMetricStoreSource.fetch_many`
    returns): calls are opened (arrays allocated, requests sent) up to a sample budget ahead of
    the one being consumed."""

    def __init__(self, source: CCMetricStoreSource, job: Job, cluster: Cluster, calls: Iterable[FetchCall]) -> None:
        self.source, self.job, self.cluster = source, job, cluster
        self.waiting = deque(calls)
        self.opened: deque[_Call] = deque()
        self.budget = READ_AHEAD_SAMPLES * source.max_concurrency
        self._open()

    def _open(self) -> None:
        """Open waiting calls while the samples in flight stay within the budget (at least one)."""
        batch: list[_Call] = []
        in_flight = sum(c.samples for c in self.opened)
        while self.waiting:
            size = _samples(self.job, self.waiting[0])
            if (self.opened or batch) and in_flight + size > self.budget:
                break
            batch.append(self.source._new_call(self.job, self.waiting.popleft()))
            in_flight += size
        self.source._submit(self.job, self.cluster, [r for c in batch for r in self.source._requests(c, c.requests)])
        self.opened.extend(batch)

    def __iter__(self) -> FetchAnswers:
        return self

    def __next__(self) -> FetchResult:
        if self.waiting:
            self._open()  # the answers handed out so far are the caller's: their budget is free
        if not self.opened:
            raise StopIteration
        try:
            return self.source._finish(self.job, self.cluster, self.opened.popleft())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Cancel the requests not sent yet (answers being read are dropped)."""
        self.waiting.clear()
        for c in self.opened:
            for f in c.futures:
                f.cancel()
        self.opened.clear()


def _typed(scope: str, metric: str, host: str, ids: list[str], aggreg: bool) -> dict[str, Any]:
    # Go's APIQuery field order: type, metric, host, resolution, type-ids, aggreg
    return {"type": scope, "metric": metric, "host": host, "resolution": 0, "type-ids": ids, "aggreg": aggreg}


def _samples(job: Job, spec: FetchCall) -> int:
    """The samples a fetch asks for (its array's size)."""
    rows = len(spec.series) if spec.series is not None else \
        sum(1 if r.ids is None else len(r.ids) for r in spec.requests)
    return rows * JobGrid.for_job(job.start_time, job.duration, spec.metric.timestep).n


@dataclass(frozen=True)
class _Layout:
    """The rows of a fetch of native series (never modified: shared by every metric of a job
    with the same native scope, and by later jobs on the same node)."""

    requests: list[SeriesRequest]  # ids sorted
    keys: list[SeriesKey]
    row_of: dict[SeriesKey, int]
    hostnames: list[str]
    ids: list[str | None]

    @classmethod
    def of(cls, keys: list[SeriesKey], requests: list[SeriesRequest]) -> _Layout:
        return cls(requests, keys, {k: n for n, k in enumerate(keys)}, [k[0] for k in keys], [k[1] for k in keys])


@functools.lru_cache(maxsize=512)
def _native_layout(requests: tuple[SeriesRequest, ...]) -> _Layout:
    reqs = [SeriesRequest(r.hostname, None if r.ids is None else sorted_ids(tuple(r.ids))) for r in requests]
    return _Layout.of([(r.hostname, i) for r in reqs for i in (r.ids if r.ids is not None else (None,))], reqs)


def _native_call(metric: MetricConfig, scope: str, grid: JobGrid, requests: list[SeriesRequest]) -> _Call:
    try:
        layout = _native_layout(tuple(requests))
    except TypeError:  # ids in a list (unhashable): laid out for this call only
        layout = _native_layout.__wrapped__(tuple(requests))
    return _with_rows(_Call(metric, scope, grid, layout.requests, None), layout)


def _with_rows(call: _Call, layout: _Layout) -> _Call:
    call.keys, call.row_of, call.hostnames, call.ids = layout.keys, layout.row_of, layout.hostnames, layout.ids
    call.data = np.full((len(layout.keys), call.grid.n), np.nan)
    return call


def _take(job: Job, part: _Part, query: dict[str, Any], keys: list[SeriesKey], entries: list[Entry]) -> None:
    """Place one query's entries into its fetch (request threads write distinct cells)."""
    call = part.call
    host = query["host"]
    sent = sum(e.rows for e in entries)
    if sent > len(keys):
        raise FormatError(f"{job.label}: metric {call.metric.name}, host {host}: cc-metric-store sent "
                          f"{sent} series for {len(keys)} requested ids")
    if 0 < sent < len(keys):  # entries left out: which ids they belong to is unknown
        call.ambiguous[host] = SeriesRequest(host, tuple(k[1] for k in keys if k[1] is not None))
        return
    if len(entries) == 1 and entries[0].rows > 1:
        block = entries[0]
        if block.count and call.row_of[keys[-1]] - call.row_of[keys[0]] == len(keys) - 1:  # one copy
            _place(call, call.row_of[keys[0]], part, block, block.values)
            call.answered.update(keys)
            return
        entries = block.split()
    for key, e in zip(keys, entries, strict=False):
        row = call.row_of[key]
        if e.error is not None:
            if e.error == NOT_FOUND:
                continue
            if call.aggregated:
                call.fallback.add(row)
            else:
                call.errors[key] = e.error
            continue
        if call.aggregated and not (e.count and np.isfinite(e.values).any()):
            call.fallback.add(row)  # the first member has no sample here: it would not count in ours
            continue
        call.answered.add(key)
        if e.count:
            _place(call, row, part, e, e.values)


def _place(call: _Call, row: int, part: _Part, e: Entry, block: npt.NDArray[np.float64]) -> None:
    """Put samples (rows ``row, row + 1, ...``, times as entry ``e`` says) at their grid indices
    within the part's window: a slice copy when they lie on the grid."""
    grid = call.grid
    res = e.resolution if e.resolution > 0 else grid.step
    n = block.shape[1]
    pad = max(0, n - max(0, (e.to - e.frm) // res))
    first = e.frm - pad * res  # time of the first value
    rows = slice(row, row + block.shape[0])
    if res == grid.step and (first - grid.start) % grid.step == 0:
        k = (first - grid.start) // grid.step
        a, b = max(part.k0 - k, 0), min(part.k1 - k, n)
        if b > a:
            call.data[rows, k + a:k + b] = block[:, a:b]
        return
    if res != grid.step:
        log.warning("metric %s: store resolution %d s differs from the metric's timestep %d s; "
                    "samples are placed by time", call.metric.name, res, grid.step)
    times = first + np.arange(n, dtype=np.float64) * res
    for r, v in zip(range(rows.start, rows.stop), block, strict=True):
        place(call.data[r], grid, times, v, part.k0, part.k1)


def _result(call: _Call) -> FetchResult:
    """The fetched rows with samples; the others in ``missing`` with the reason."""
    empty = np.asarray(np.isnan(call.data).all(axis=1), dtype=bool)
    if call.aggregated:
        empty[:] = False  # an aggregate is NaN wherever a member is: kept as it is
    if not call.errors and not call.no_samples and len(call.answered) == len(call.keys) and not empty.any():
        return FetchResult(_block(call, list(range(len(call.keys)))), [])  # every row: no per-row checks
    missing: list[tuple[str, str | None, str]] = []
    keep: list[int] = []
    rows_of_host: dict[str, int] = {}
    for host, _ in call.keys:
        rows_of_host[host] = rows_of_host.get(host, 0) + 1
    for n, key in enumerate(call.keys):
        host, sid = key
        shown = None if call.aggregated and rows_of_host[host] == 1 else sid
        if key in call.errors:
            missing.append((host, shown, _ERROR + call.errors[key]))
        elif key in call.no_samples:
            missing.append((host, shown, _NO_SAMPLES))
        elif key not in call.answered:
            missing.append((host, shown, _NOT_STORED))
        elif empty[n]:
            missing.append((host, shown, _NO_SAMPLES))
        else:
            keep.append(n)
    return FetchResult(_block(call, keep) if keep else None, missing)


def _block(call: _Call, keep: list[int]) -> JobMetric:
    if len(keep) == len(call.keys):  # every row (the usual answer): copies of the layout's lists
        data, hostnames, ids = call.data, list(call.hostnames), list(call.ids)
    else:
        data = np.ascontiguousarray(call.data[np.asarray(keep)])
        hostnames, ids = [call.hostnames[n] for n in keep], [call.ids[n] for n in keep]
    return JobMetric(call.metric.unit, call.grid.step, hostnames, ids, data,
                     np.full(len(keep), call.grid.n, dtype=np.int64))
