"""Archive backends (the fsspec v3 tree, S3, cc-backend's SQLite archive, the Arrow/Parquet
dataset) and what every backend shares.

Why a protocol and not a base class: :class:`~ccarchive.backends.tree.JobArchive` (file, S3,
memory), :class:`~ccarchive.backends.sqlite.SqliteArchive` and
:class:`~ccarchive.backends.parquet.ParquetArchive` store jobs very differently, but the pipeline,
``verify``, ``convert`` and analysis scripts only need the same dozen operations.  Each backend
implements them itself; :class:`Archive` names them so type checkers can hold us to it.

Imports go one way: the backend modules import this package, and
:func:`ccarchive.archive.open_archive` imports the backends; nothing here imports a backend or
:mod:`ccarchive.archive`.  The archive identity of a job is its key ``(cluster, jobId,
startTime)`` everywhere, and its place in the v3 layout is :func:`job_path` on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from ..names import JobKey, check_job_key, is_job_key
from ..retry import is_transient_backend_error

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ..cluster import Cluster
    from ..model import Job, JobData

__all__ = [
    "ARCHIVE_VERSION", "PARQUET_PREFIX", "SQLITE_SCHEME", "Archive", "Entry", "JobKey", "WriteResult",
    "is_transient_backend_error", "job_path", "key_of", "parse_job_path",
]

ARCHIVE_VERSION = 3
#: URL prefix of the Arrow/Parquet dataset (``parquet+<fsspec URL or path>``)
PARQUET_PREFIX = "parquet+"
#: URL scheme of cc-backend's SQLite archive (``sqlite:///abs/path.db``)
SQLITE_SCHEME = "sqlite://"


def job_path(cluster: str, job_id: int, start_time: int) -> str:
    """Relative directory of a job: ``<cluster>/<jobId/1000>/<%03d jobId%1000>/<startTime>``.

    Only formats: the backends check the key (:func:`ccarchive.names.check_job_key`) before a
    path is built from it."""
    return f"{cluster}/{job_id // 1000}/{job_id % 1000:03d}/{start_time}"


def parse_job_path(cluster: str, lvl1: str, lvl2: str, start: str) -> JobKey | None:
    """The key of a stored job directory, or None when the directory is not one ccarchive or
    cc-backend writes (not digits, a leading zero, a sign, out of range, a bad cluster name)."""
    if not all(p.isascii() and p.isdigit() for p in (lvl1, lvl2, start)):
        return None
    key = (cluster, int(lvl1) * 1000 + int(lvl2), int(start))
    if not is_job_key(key) or job_path(*key) != f"{cluster}/{lvl1}/{lvl2}/{start}":
        return None
    return key


@dataclass
class WriteResult:
    """What one job write put into the archive."""

    path: str
    data_file: str
    bytes_written: int
    raw_data_bytes: int
    #: seconds per phase the writer could attribute (``write``: file I/O incl. fsync and meta.json)
    phases: dict[str, float] = field(default_factory=dict)


class Entry(NamedTuple):
    """One stored job location and the file names it holds (``meta.json``, ``data.json[.gz]``);
    an entry without ``meta.json`` is an interrupted write, not an archived job."""

    rel: str
    key: JobKey
    names: list[str]


@runtime_checkable
class Archive(Protocol):
    """The read/write API every backend offers (``open_archive`` returns one of these)."""

    url: str
    #: data.json above 2000 bytes is stored gzipped (:meth:`write_encoded` takes it compressed, or a
    #: function that returns it compressed)
    stores_gzip: bool

    def clusters(self) -> list[str]: ...
    def has_cluster(self, name: str) -> bool: ...
    def load_cluster(self, name: str) -> Cluster: ...
    def load_cluster_bytes(self, name: str) -> bytes: ...
    def store_cluster(self, cluster: Cluster) -> None: ...
    def exists(self, job: Job | JobKey) -> bool: ...
    def write_job(self, job: Job, data: JobData) -> WriteResult: ...
    def write_encoded(self, job: Job | JobKey, encoded_data: bytes, meta: bytes, *,
                      gzipped: bytes | Callable[[], bytes] | None = None) -> WriteResult: ...
    def load_meta(self, job: Job | JobKey) -> Job: ...
    def load_meta_bytes(self, job: Job | JobKey) -> bytes: ...
    def load_data_bytes(self, job: Job | JobKey) -> bytes: ...
    def load_data_text(self, job: Job | JobKey) -> bytes | npt.NDArray[np.uint8]: ...
    def load_data(self, job: Job | JobKey) -> JobData: ...
    def iter_job_keys(self, cluster: str | None = None) -> Iterator[JobKey]: ...
    def iter_jobs(self, cluster: str | None = None) -> Iterator[Job]: ...
    def list_entries(self, cluster: str) -> Iterator[Entry]: ...
    def delete_job(self, job: Job | JobKey) -> None: ...
    def temporary_files(self) -> list[str]: ...
    def jobs_table(self, cluster: str | None = None, user: str | None = None, since: Any = None,
                   until: Any = None, state: str | None = None) -> Any: ...


def key_of(job: Any) -> JobKey:
    """``(cluster, jobId, startTime)`` of a :class:`~ccarchive.model.Job` or a key tuple, checked
    (:func:`ccarchive.names.check_job_key`): an ``InputError`` for a key no backend may store."""
    return check_job_key(getattr(job, "key", job))
