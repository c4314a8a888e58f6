"""Metric sources: the :class:`MetricSource` protocol and the built-in synthetic source."""

from .base import FetchResult, MetricSource, SeriesRequest
from .synthetic import SyntheticSource, synthetic_job

__all__ = ["FetchResult", "MetricSource", "SeriesRequest", "SyntheticSource", "synthetic_job"]
