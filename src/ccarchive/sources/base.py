"""The interface between the archiver and a metric store.

A source answers one question: "give me the native-scope series of this metric for these hosts
and these native ids between start and stop".  Everything scope-related — which scopes a job gets,
which native series make up a coarser series, the aggregation with the kernels — lives in
``ccarchive.scopes`` and ``ccarchive.loading``, so a new store only implements :meth:`fetch`.
Missing hosts or metrics are reported in :class:`FetchResult.missing`, never raised: a host
without data must not fail the whole job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..cluster import Cluster, MetricConfig
    from ..model import Job, JobMetric


@dataclass(frozen=True)
class SeriesRequest:
    """Native series wanted from one host.

    ``ids`` are native-scope ids as strings (hwthread, core, socket, memoryDomain or accelerator
    ids); ``None`` for node-native metrics, which have one series per host.
    """

    hostname: str
    ids: tuple[str, ...] | None = None


@dataclass
class FetchResult:
    """Native series of one metric.

    ``block`` holds one series per (hostname, id) that has data, in request order; its ``ids``
    are the native ids (``None`` for node-native).  ``missing`` lists (hostname, id, reason) of
    requested series without data.
    """

    block: JobMetric | None
    missing: list[tuple[str, str | None, str]] = field(default_factory=list)


@runtime_checkable
class MetricSource(Protocol):
    """What the archiving worker needs from a metric store."""

    def fetch(
        self,
        job: Job,
        cluster: Cluster,
        metric: MetricConfig,
        scope: str,
        requests: list[SeriesRequest],
    ) -> FetchResult:
        """Native-scope series of ``metric`` at ``scope`` for the job's time range
        [job.start_time, job.start_time + job.duration]."""
        ...
