"""ccarchive: archive HPC job metric data into ClusterCockpit's job archive v3.

Library entry points (imported lazily, so ``import ccarchive`` loads neither numba nor pyarrow)::

    import ccarchive
    archive = ccarchive.open_archive("file:///var/lib/job-archive")
    for job in archive.iter_jobs("fritz"):
        data = archive.load_data(job)          # metric -> scope -> JobMetric (numpy arrays)
    result = ccarchive.archive_job(job, source=src, archive=archive, cluster=archive.load_cluster("fritz"))

The numba kernels are importable as ``ccarchive.kernels``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .archive import JobArchive, open_archive
    from .cluster import Cluster, load_cluster
    from .core import ArchiveResult, archive_job
    from .model import Job, JobData, JobMetric

_LAZY = {
    "open_archive": "archive",
    "JobArchive": "archive",
    "archive_job": "core",
    "ArchiveResult": "core",
    "load_cluster": "cluster",
    "Cluster": "cluster",
    "Job": "model",
    "JobData": "model",
    "JobMetric": "model",
}

__all__ = [
    "ArchiveResult", "Cluster", "Job", "JobArchive", "JobData", "JobMetric",
    "archive_job", "load_cluster", "open_archive",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ccarchive' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
