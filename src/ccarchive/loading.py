"""Load a job's metric data at the effective scopes (docs/format.md, "Scopes").

For each metric the scope plan (``ccarchive.scopes``) says which series the archive gets and
which native series make up each of them.  The source is asked once per metric for the union of
the native series; the aggregation kernel then sums or averages the members of every planned
series.  Missing hosts and metrics are collected as warnings; only a job without any data fails.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .errors import NoDataError
from .kernels.aggregate import aggregate
from .model import Job, JobData, JobMetric
from .scopes import PlannedSeries, ScopePlan, plan_job
from .sources.base import FetchResult, SeriesRequest
from .sources.router import RouterSource

if TYPE_CHECKING:
    from .cluster import Cluster, MetricConfig
    from .sources.base import MetricSource

log = logging.getLogger(__name__)

_AGG_MODE = {"sum": 0, "avg": 1}


@dataclass
class LoadReport:
    """Missing series and metrics, one line each."""

    missing: list[str] = field(default_factory=list)


def _id_order(i: str) -> tuple[int, int, str]:
    return (0, int(i), "") if i.isdigit() else (1, 0, i)


@functools.lru_cache(maxsize=4096)
def sorted_ids(ids: tuple[str, ...]) -> tuple[str, ...]:
    """``ids`` without repeats, in numeric order (names after numbers).  Cached: the jobs of a
    cluster ask for the same few id sets (a node's hwthreads, sockets) over and over."""
    return tuple(sorted(set(ids), key=_id_order))


def native_requests(plans: list[ScopePlan]) -> list[SeriesRequest]:
    """One request per host (first-seen order) with the union of the native ids all plans need."""
    wanted: dict[str, list[str] | None] = {}
    for plan in plans:
        for ps in plan.series:
            if ps.members is None:
                wanted.setdefault(ps.hostname, None)
            else:
                got = wanted.setdefault(ps.hostname, [])
                if got is not None:
                    got += ps.members
    return [SeriesRequest(h, None if ids is None else sorted_ids(tuple(ids))) for h, ids in wanted.items()]


class PlanRows:
    """Where the members of a plan's series are in a complete answer to ``requests`` (every
    requested series, in request order): the usual answer, recognised by two list compares instead
    of a dictionary of its rows per metric and scope.  Built once per job and (native scope, scope):
    the metrics of a job share their series there."""

    def __init__(self, plan: ScopePlan, requests: list[SeriesRequest]) -> None:
        keys = [(r.hostname, i) for r in requests for i in (r.ids if r.ids is not None else (None,))]
        #: the (hostname, id) of each row of a complete answer
        self.native_hosts = [h for h, _ in keys]
        self.native_ids = [i for _, i in keys]
        row_of = dict(zip(keys, range(len(keys)), strict=True))
        self.hostnames = [ps.hostname for ps in plan.series]
        self.ids = [ps.id for ps in plan.series]
        member_rows: list[int] = []
        counts: list[int] = []
        for ps in plan.series:
            rows = [row_of[k] for k in ((ps.hostname, m) for m in ps.members or (None,)) if k in row_of]
            member_rows += rows
            counts.append(len(rows))
        #: False if a series has no row there (never, when ``requests`` are the plan's)
        self.complete = 0 not in counts
        #: the rows of the members, series by series; None for all rows in order
        self.rows = None if member_rows == list(range(len(keys))) else member_rows
        #: the planned series of each member row; None when each series is one member
        self.groups = None if len(member_rows) == len(counts) else \
            np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def _aggregate_plan(plan: ScopePlan, native: JobMetric, rows: PlanRows | None = None) -> JobMetric | None:
    """Build the planned series of one (metric, effective scope) from fetched native rows;
    ``rows``: the plan's :class:`PlanRows` for the requests that ``native`` answers, if at hand."""
    if rows is None or not rows.complete or native.ids != rows.native_ids or native.hostnames != rows.native_hosts:
        return _aggregate_rows(plan, native)
    data, lengths = _pick(native, rows.rows)
    if rows.groups is not None:
        data, lengths = aggregate(data, lengths, rows.groups, len(rows.ids), _AGG_MODE.get(plan.metric.aggregation, 0))
    return JobMetric(native.unit, native.timestep, list(rows.hostnames), list(rows.ids), data, lengths)


def _aggregate_rows(plan: ScopePlan, native: JobMetric) -> JobMetric | None:
    """:func:`_aggregate_plan` for any answer: rows in any order, missing or not asked for."""
    row_of = dict(zip(zip(native.hostnames, native.ids, strict=True), range(native.num_series), strict=True))
    single = [(ps.hostname, None if ps.members is None else ps.members[0]) for ps in plan.series
              if ps.members is None or len(ps.members) == 1]
    if len(single) == len(plan.series):  # one member each (core scope of a 1-thread-per-core node, ...)
        found = [row_of.get(k) for k in single]
        if None not in found:  # ... and all of them fetched: the rows as they are, without a loop
            data, lengths = _pick(native, found)  # type: ignore[arg-type]
            return JobMetric(native.unit, native.timestep, [ps.hostname for ps in plan.series],
                             [ps.id for ps in plan.series], data, lengths)
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
    data, lengths = _pick(native, member_rows)
    if len(member_rows) != len(hostnames):  # (one member each: no arithmetic)
        data, lengths = aggregate(data, lengths, np.asarray(groups, dtype=np.int64), len(hostnames),
                                  _AGG_MODE.get(plan.metric.aggregation, 0))
    return JobMetric(native.unit, native.timestep, hostnames, ids, data, lengths)


def _pick(native: JobMetric, rows: list[int] | None) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Rows ``rows`` (None: all) of ``native``: data (contiguous float64) and lengths."""
    if rows is None or (len(rows) == native.num_series and rows == list(range(len(rows)))):  # no copy
        return np.ascontiguousarray(native.data, dtype=np.float64), np.ascontiguousarray(native.lengths, dtype=np.int64)
    picked = np.asarray(rows, dtype=np.int64)
    return (np.ascontiguousarray(native.data[picked], dtype=np.float64),
            np.ascontiguousarray(native.lengths[picked], dtype=np.int64))


#: A native fetch covers at most this many samples (2 MiB of float64; a host with more is fetched
#: alone): node-scope series of hwthread metrics are aggregated from native data 72x their size
#: (64 nodes x 72 hwthreads x 7 days = 370 MB for one metric), which must never be in memory whole.
NATIVE_CHUNK_SAMPLES = 1 << 18


def host_chunks(requests: list[SeriesRequest], samples_per_series: int,
                budget: int | None = None) -> list[list[SeriesRequest]]:
    """Consecutive groups of ``requests`` of at most ``budget`` samples each (at least one host;
    default :data:`NATIVE_CHUNK_SAMPLES`)."""
    budget = NATIVE_CHUNK_SAMPLES if budget is None else budget
    chunks: list[list[SeriesRequest]] = []
    size = budget
    for req in requests:
        n = (1 if req.ids is None else len(req.ids)) * samples_per_series
        if size + n > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(req)
        size += n
    return chunks


class _Rows:
    """The series of one (metric, scope), filled host chunk by host chunk into one array allocated
    for all planned series: no list of parts, no final concatenation.  A metric fetched in a single
    chunk is passed through as it is."""

    def __init__(self, capacity: int, chunks: int) -> None:
        self.capacity, self.chunks = capacity, chunks
        self.first: JobMetric | None = None
        self.data = np.empty((capacity, 0))
        self.lengths = np.zeros(capacity, dtype=np.int64)
        self.hostnames: list[str] = []
        self.ids: list[str | None] = []

    def add(self, block: JobMetric) -> None:
        if self.chunks == 1:
            self.first = block
            return
        if self.first is None:
            self.first = block.without_samples()  # unit and timestep
        r, n, width = len(self.hostnames), block.num_series, block.data.shape[1]
        if width > self.data.shape[1]:  # the first block, or a longer series than before (rare)
            wider = np.full((self.capacity, width), np.nan)
            wider[:, : self.data.shape[1]] = self.data
            self.data = wider
        self.data[r : r + n, :width] = block.data
        self.lengths[r : r + n] = block.lengths
        self.hostnames += block.hostnames
        self.ids += block.ids

    def block(self) -> JobMetric:
        assert self.first is not None
        if self.chunks == 1:
            return self.first
        n = len(self.hostnames)  # fewer than planned when hosts had no data; a row slice stays contiguous
        return JobMetric(self.first.unit, self.first.timestep, self.hostnames, self.ids,
                         self.data[:n], self.lengths[:n].copy())


@dataclass(frozen=True)
class FetchCall:
    """One fetch of the loader: native series of ``metric`` at its native ``scope``, or, with
    ``series``, those planned series themselves, each aggregated from its members by the store."""

    metric: MetricConfig
    scope: str
    requests: list[SeriesRequest]
    series: tuple[PlannedSeries, ...] | None = None


class JobLoader:
    """A job's metric data, one metric at a time in the archive's (sorted) order.

    Iterating yields ``(metric, {scope: JobMetric})`` for every metric with data, so the archiver
    can compute, encode and write one metric and drop its arrays before the next is fetched; the
    native series are fetched in host chunks (:data:`NATIVE_CHUNK_SAMPLES`) and aggregated chunk by
    chunk.  Missing hosts and metrics go to ``report.missing``; when iteration ends without any
    data, :class:`NoDataError` is raised.

    Optional source capabilities (a router is resolved to the job's source first):

    * ``fetch_many(job, cluster, calls) -> Iterator[FetchResult]``: all :class:`FetchCall` of the
      job in loading order, answered in that order, so a remote store can keep requests in flight
      (and pack small ones together) while earlier answers are aggregated, encoded and written;
    * ``store_aggregation = True``: a metric whose only plan aggregates native series (node scope
      of a large job) is fetched as the planned series, aggregated by the store, instead of all
      their members.
    """

    def __init__(self, job: Job, cluster: Cluster, source: MetricSource, *, core_scope_max_nodes: int = 8,
                 cancelled: Callable[[], bool] | None = None, report: LoadReport | None = None) -> None:
        self.job, self.cluster = job, cluster
        self.source = source.source_for(job, cluster) if isinstance(source, RouterSource) else source
        self._answers: Iterator[FetchResult] | None = None
        self._planned: dict[str, list[FetchCall]] = {}
        self._rows: dict[tuple[tuple[tuple[str, str], ...], str], PlanRows] = {}
        self._requests: dict[tuple[tuple[str, str], ...], list[SeriesRequest]] = {}
        self.core_scope_max_nodes = core_scope_max_nodes
        self.cancelled = cancelled
        self.report = report if report is not None else LoadReport()
        self.plans: dict[str, list[ScopePlan]] = {}
        for p in plan_job(job, cluster, core_scope_max_nodes=core_scope_max_nodes):
            self.plans.setdefault(p.metric.name, []).append(p)

    def start(self) -> None:
        """Send the job's first requests now, without waiting for them (a source with
        ``fetch_many``): the worker opens the next queued job this way while it archives the
        current one, so the store answers during that job's encoding and writing."""
        if getattr(self.source, "load_job", None) is None:  # (a replay reads whole jobs)
            self._open()

    def _open(self) -> None:
        fetch_many = getattr(self.source, "fetch_many", None)
        if self._answers is None and fetch_many is not None:
            self._answers = iter(fetch_many(self.job, self.cluster,
                                            [c for name in sorted(self.plans) for c in self._calls(name)]))

    def close(self) -> None:
        """Drop the requests of a started loader that is not iterated to its end."""
        answers, self._answers = self._answers, None
        close = getattr(answers, "close", None)
        if close is not None:
            close()  # stops requests not yet sent

    def _whole_job(self) -> JobData | None:
        """Sources whose stored data is already at the effective scopes (the archive replay) may
        offer ``load_job(job, cluster, core_scope_max_nodes=...) -> (JobData, missing) | None``."""
        load_whole = getattr(self.source, "load_job", None)
        whole = load_whole(self.job, self.cluster, core_scope_max_nodes=self.core_scope_max_nodes) \
            if load_whole else None
        if whole is None:
            return None
        self.report.missing.extend(whole[1])
        return whole[0]

    def _calls(self, name: str) -> list[FetchCall]:
        """The fetches of one metric: native host chunks, or chunks of its planned series when the
        store aggregates them."""
        if name not in self._planned:
            self._planned[name] = self._plan_calls(name)
        return self._planned[name]

    def _plan_calls(self, name: str) -> list[FetchCall]:
        mplans = self.plans[name]
        metric, native = mplans[0].metric, mplans[0].native_scope  # one native scope: one fetch per chunk
        samples = self.job.duration // max(1, metric.timestep) + 1
        if getattr(self.source, "store_aggregation", False) and len(mplans) == 1 and mplans[0].aggregated:
            series = mplans[0].series
            per = max(1, NATIVE_CHUNK_SAMPLES // samples)
            return [FetchCall(metric, native, [SeriesRequest(s.hostname, s.members) for s in series[i:i + per]],
                              tuple(series[i:i + per])) for i in range(0, len(series), per)]
        return [FetchCall(metric, native, chunk) for chunk in host_chunks(self._native_requests(mplans), samples)]

    def _native_requests(self, mplans: list[ScopePlan]) -> list[SeriesRequest]:
        """:func:`native_requests` of one metric's plans, the same for every metric with these
        scopes (they share their series)."""
        key = tuple((p.native_scope, p.scope) for p in mplans)
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = native_requests(mplans)
        return requests

    def _plan_rows(self, plan: ScopePlan, mplans: list[ScopePlan]) -> PlanRows:
        """The :class:`PlanRows` of ``plan`` (one of ``mplans``) for its metric's native requests."""
        key = (tuple((p.native_scope, p.scope) for p in mplans), plan.scope)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._rows[key] = PlanRows(plan, self._native_requests(mplans))
        return rows

    def _fetch(self, call: FetchCall) -> FetchResult:
        if self._answers is not None:
            return next(self._answers)
        return self.source.fetch(self.job, self.cluster, call.metric, call.scope, call.requests)

    def load_metric(self, name: str) -> dict[str, JobMetric]:
        """The planned series of one metric per effective scope (empty when it has no data)."""
        if self.cancelled is not None and self.cancelled():
            from .errors import CancelledError

            raise CancelledError(f"{self.job.label}: cancelled while loading {name}")
        mplans = self.plans[name]
        parts: dict[str, _Rows] = {}
        fetched = False
        calls = self._calls(name)
        for call in calls:
            result = self._fetch(call)
            for host, sid, reason in result.missing:
                where = host if sid is None else f"{host} id {sid}"
                self.report.missing.append(f"{name}: no data for {where}: {reason}")
            if result.block is None or result.block.num_series == 0:
                fetched = fetched or bool(result.missing)
                continue
            fetched = True
            for plan in mplans:
                block = result.block if call.series is not None else \
                    _aggregate_plan(plan, result.block, self._plan_rows(plan, mplans))
                if block is not None:
                    parts.setdefault(plan.scope, _Rows(len(plan.series), len(calls))).add(block)
            del result, block  # not alive while the next chunk is fetched
        if not fetched:
            self.report.missing.append(f"{name}: no data")
        return {scope: rows.block() for scope, rows in parts.items()}

    def __iter__(self) -> Iterator[tuple[str, dict[str, JobMetric]]]:
        whole = self._whole_job()
        found = False
        if whole is not None:
            for name in sorted(whole):
                found = found or bool(whole[name])
                yield name, whole[name]
        else:
            self._open()
            try:
                for name in sorted(self.plans):
                    scopes = self.load_metric(name)
                    if scopes:
                        found = True
                        yield name, scopes
                    del scopes  # not alive while the next metric is fetched
            finally:
                self.close()
        for line in self.report.missing:
            log.warning("%s: %s", self.job.label, line)
        if not found:
            raise NoDataError(f"{self.job.label}: the metric source returned no data for any metric")


def load_job_data(
    job: Job,
    cluster: Cluster,
    source: MetricSource,
    *,
    core_scope_max_nodes: int = 8,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[JobData, LoadReport]:
    """Fetch and aggregate all metrics of a job; raises NoDataError when nothing came back."""
    loader = JobLoader(job, cluster, source, core_scope_max_nodes=core_scope_max_nodes, cancelled=cancelled)
    return dict(loader), loader.report
