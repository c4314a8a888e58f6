"""Source selection per cluster and subcluster, as cc-backend's metric repository does.

Why: one site runs several stores (a cc-metric-store per cluster, Prometheus for the GPU
partition, an old archive to replay); the worker still has one source.  Lookup order for a job is
cc-backend's (internal/metricdispatch/metricdata.go): ``"<cluster>-<subcluster>"``, then
``"<cluster>"``, then ``"*"``; no match is a configuration error naming the job.  Routes are
built lazily from their specs, once each, inside the worker process, by the ``build`` function
the router is given (:func:`ccarchive.sources.registry.source_from_spec` when the registry makes
the router): the registry knows the router, the router does not know the registry.

:func:`routes_from_cc_backend` turns cc-backend's ``metric-store-external`` array
(``[{"scope", "url", "token"}]``) into a router spec, so a sidecar can read cc-backend's
config.json as it is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .base import FetchResult, MetricSource, SeriesRequest

if TYPE_CHECKING:
    from ..cluster import Cluster, MetricConfig
    from ..model import Job, JobData


class RouterSource:
    """Delegates each job to the source configured for its cluster/subcluster."""

    def __init__(self, routes: dict[str, dict[str, Any] | MetricSource], *,
                 build: Callable[[dict[str, Any]], MetricSource] | None = None) -> None:
        if not isinstance(routes, dict) or not routes:
            raise InputError("router source needs \"routes\": "
                             "{\"*\" | \"<cluster>\" | \"<cluster>-<subcluster>\": spec}")
        for key, spec in routes.items():
            if isinstance(spec, dict) and spec.get("kind") == "router":
                raise InputError(f"router source: route {key!r} is itself a router")
        self.routes = dict(routes)
        self.build = build
        self._built: dict[str, MetricSource] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *,
                  build: Callable[[dict[str, Any]], MetricSource] | None = None) -> RouterSource:
        """``{"kind": "router", "routes": {"*": spec, "fritz": spec, "fritz-spr1tb": spec}}``;
        ``build`` turns a route's spec into its source."""
        unknown = sorted(set(spec) - {"kind", "routes"})
        if unknown:
            raise InputError(f"router source: unknown option(s) {', '.join(unknown)}")
        return cls(spec.get("routes") or {}, build=build)

    def route_key(self, job: Job, cluster: Cluster) -> str:
        """The routes key that serves ``job``."""
        sub = job.sub_cluster
        if not sub:
            from ..scopes import job_sub_cluster

            sub = job_sub_cluster(job, cluster).name
        for key in (f"{job.cluster}-{sub}", job.cluster, "*"):
            if key in self.routes:
                return key
        raise InputError(f"{job.label}: no metric source configured for cluster {job.cluster!r} "
                         f"subcluster {sub!r} (routes: {', '.join(sorted(self.routes))})")

    def source_for(self, job: Job, cluster: Cluster) -> MetricSource:
        """The (built) source of the job's route."""
        key = self.route_key(job, cluster)
        with self._lock:
            src = self._built.get(key)
            if src is None:
                spec = self.routes[key]
                if isinstance(spec, dict):
                    if self.build is None:
                        raise InputError(f"router source: route {key!r} is a spec and the router has no build "
                                         "function (make the router with "
                                         "ccarchive.sources.registry.source_from_spec)")
                    src = self.build(spec)
                else:
                    src = spec
                self._built[key] = src
        return src

    def fetch(self, job: Job, cluster: Cluster, metric: MetricConfig, scope: str,
              requests: list[SeriesRequest]) -> FetchResult:
        """Delegate to the job's source."""
        return self.source_for(job, cluster).fetch(job, cluster, metric, scope, requests)

    def load_job(self, job: Job, cluster: Cluster, *,
                 core_scope_max_nodes: int = 8) -> tuple[JobData, list[str]] | None:
        """Whole-job loading if the job's source offers it, else None (load through ``fetch``)."""
        loader = getattr(self.source_for(job, cluster), "load_job", None)
        if loader is None:
            return None
        result: tuple[JobData, list[str]] | None = loader(job, cluster, core_scope_max_nodes=core_scope_max_nodes)
        return result


def routes_from_cc_backend(metric_store_external: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    """A router spec from cc-backend's ``metric-store-external`` entries ``{"scope", "url", "token"}``;
    ``options`` (e.g. ``max-concurrency``) are added to every cc-metric-store spec."""
    routes: dict[str, Any] = {}
    for n, entry in enumerate(metric_store_external):
        if not isinstance(entry, dict) or not entry.get("scope") or not entry.get("url"):
            raise InputError(f"metric-store-external[{n}] needs \"scope\" and \"url\", got {entry!r}")
        wrong = [k for k in ("scope", "url", "token") if entry.get(k) is not None and not isinstance(entry[k], str)]
        if wrong:
            raise InputError(f"metric-store-external[{n}].{wrong[0]} must be a string, got {entry[wrong[0]]!r}")
        routes[entry["scope"]] = {"kind": "cc-metric-store", "url": entry["url"],
                                  "token": entry.get("token") or "", **options}
    return {"kind": "router", "routes": routes}
