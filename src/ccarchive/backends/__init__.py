"""Archive backends beyond the fsspec v3 tree: S3 configuration, cc-backend's SQLite archive and
the Arrow/Parquet dataset, plus what every backend shares.

Why a protocol and not a base class: :class:`ccarchive.archive.JobArchive` (file, S3, memory),
:class:`~ccarchive.backends.sqlite.SqliteArchive` and
:class:`~ccarchive.backends.parquet.ParquetArchive` store jobs very differently, but the pipeline,
``verify``, ``convert`` and analysis scripts only need the same dozen operations.  Each backend
implements them itself; :class:`Archive` names them so type checkers can hold us to it.

The archive identity of a job is its key ``(cluster, jobId, startTime)`` everywhere.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from ..names import JobKey, check_job_key

if TYPE_CHECKING:
    from ..archive import WriteResult
    from ..cluster import Cluster
    from ..model import Job, JobData


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

    def clusters(self) -> list[str]: ...
    def has_cluster(self, name: str) -> bool: ...
    def load_cluster(self, name: str) -> Cluster: ...
    def load_cluster_bytes(self, name: str) -> bytes: ...
    def store_cluster(self, cluster: Cluster) -> None: ...
    def exists(self, job: Job | JobKey) -> bool: ...
    def write_job(self, job: Job, data: JobData) -> WriteResult: ...
    def write_encoded(self, job: Job | JobKey, encoded_data: bytes, meta: bytes) -> WriteResult: ...
    def load_meta(self, job: Job | JobKey) -> Job: ...
    def load_meta_bytes(self, job: Job | JobKey) -> bytes: ...
    def load_data_bytes(self, job: Job | JobKey) -> bytes: ...
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


#: botocore / aiohttp exception classes (by name, so neither needs importing) that mean
#: "the endpoint is unreachable or the connection broke": worth a retry.
_TRANSIENT_CLASSES = {
    ("botocore.exceptions", "ConnectionError"),       # EndpointConnectionError, ConnectTimeoutError, ...
    ("botocore.exceptions", "HTTPClientError"),       # ConnectionClosedError, ReadTimeoutError, ...
    ("botocore.exceptions", "IncompleteReadError"),
    ("aiohttp.client_exceptions", "ClientConnectionError"),  # ServerDisconnectedError, ClientOSError, ...
    ("aiohttp.client_exceptions", "ServerTimeoutError"),
}
#: errno values s3fs gives HTTP 500/503 answers (InternalError, SlowDown) and socket failures.
_TRANSIENT_ERRNOS = {errno.EBUSY, getattr(errno, "EREMOTEIO", 121), errno.ETIMEDOUT, errno.ECONNREFUSED,
                     errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


def is_transient_backend_error(exc: BaseException) -> bool:
    """True for storage failures that may go away on retry (S3 endpoint down, timeouts, 5xx).

    Looks at the exception and its ``__cause__`` chain; classes are matched by
    module and name so botocore and aiohttp need not be installed."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (TimeoutError, ConnectionError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        for cls in type(e).__mro__:
            if (cls.__module__, cls.__name__) in _TRANSIENT_CLASSES:
                return True
        e = e.__cause__
    return False


# -- URL dispatch (ccarchive.open_archive) ---------------------------------------------------------

PARQUET_PREFIX = "parquet+"
SQLITE_SCHEME = "sqlite://"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _is_sqlite_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def open_url(url: str, *, create: bool = False, storage_options: dict[str, Any] | None = None) -> Archive:
    """The backend for ``url`` (rules in :func:`ccarchive.archive.open_archive`)."""
    if url.startswith(SQLITE_SCHEME):
        from .sqlite import SqliteArchive

        return SqliteArchive(url[len(SQLITE_SCHEME):], create=create)
    if url.startswith(PARQUET_PREFIX):
        from .parquet import ParquetArchive

        return ParquetArchive(url[len(PARQUET_PREFIX):], create=create, storage_options=storage_options)
    if "://" not in url and _is_sqlite_file(url):
        from .sqlite import SqliteArchive

        return SqliteArchive(url, create=create)
    from ..archive import JobArchive
    from ..errors import InputError

    cls: type[JobArchive] = JobArchive
    if url.startswith(("s3://", "s3a://")):
        from .s3 import S3Archive

        cls = S3Archive
    try:
        return cls(url, create=create, storage_options=storage_options)
    except InputError:
        from .parquet import ParquetArchive, is_parquet_dataset

        if is_parquet_dataset(url, storage_options):
            return ParquetArchive(url, storage_options=storage_options)
        raise
