"""Build a metric source from a picklable description (what the worker process receives).

``{"kind": "synthetic" | "cc-metric-store" | "prometheus" | "replay" | "router", ...}`` for the
built-in sources (docs/sources.md lists their options), or ``{"kind": "python", "class":
"package.module:ClassName", ...}`` for a source class of your own (the remaining keys are its
keyword arguments).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import InputError
from .base import MetricSource

KNOWN = ("synthetic", "cc-metric-store", "prometheus", "replay", "router", "python")


def _construct(cls: Any, options: dict[str, Any], what: str) -> Any:
    try:
        return cls(**options)
    except TypeError as e:  # unknown or missing keyword: a configuration error, not a crash
        raise InputError(f"metric source {what!r}: {e}") from None


def source_from_spec(spec: dict[str, Any]) -> MetricSource:
    """The source described by ``spec``; raises InputError for an unknown kind or bad options."""
    if not isinstance(spec, dict):
        raise InputError(f"a metric source spec must be an object with \"kind\", got {spec!r}")
    kind = spec.get("kind", "synthetic")
    options = {k: v for k, v in spec.items() if k not in ("kind", "class")}
    if kind == "synthetic":
        from .synthetic import SyntheticSource

        return _construct(SyntheticSource, options, "synthetic")
    if kind == "cc-metric-store":
        from .ccms import CCMetricStoreSource

        return CCMetricStoreSource.from_spec(spec)
    if kind == "prometheus":
        from .prometheus import PrometheusSource

        return PrometheusSource.from_spec(spec)
    if kind == "replay":
        from .replay import ReplaySource

        return ReplaySource.from_spec(spec)
    if kind == "router":
        from .router import RouterSource

        return RouterSource.from_spec(spec, build=source_from_spec)
    if kind == "python":
        target = spec.get("class", "")
        module, _, name = target.partition(":")
        if not module or not name:
            raise InputError(f"metric source 'python' needs \"class\": \"module:Class\", got {target!r}")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise InputError(f"metric source class {target!r} cannot be loaded: {e}") from None
        return _construct(cls, options, target)  # type: ignore[no-any-return]
    raise InputError(f"unknown metric source kind {kind!r} (known: {', '.join(KNOWN)})")
