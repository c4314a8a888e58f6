"""Build a metric source from a picklable description (what the worker process receives).

``{"kind": "synthetic", ...}`` for the built-in sources, or ``{"kind": "python", "class":
"package.module:ClassName", ...}`` for a source class of your own (the remaining keys are its
keyword arguments).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import InputError
from .base import MetricSource

KNOWN = ("synthetic", "python")


def source_from_spec(spec: dict[str, Any]) -> MetricSource:
    kind = spec.get("kind", "synthetic")
    options = {k: v for k, v in spec.items() if k not in ("kind", "class")}
    if kind == "synthetic":
        from .synthetic import SyntheticSource

        return SyntheticSource(**options)
    if kind == "python":
        target = spec.get("class", "")
        module, _, name = target.partition(":")
        if not module or not name:
            raise InputError(f"metric source 'python' needs \"class\": \"module:Class\", got {target!r}")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise InputError(f"metric source class {target!r} cannot be loaded: {e}") from None
        return cls(**options)  # type: ignore[no-any-return]
    raise InputError(f"unknown metric source kind {kind!r} (known: {', '.join(KNOWN)})")
