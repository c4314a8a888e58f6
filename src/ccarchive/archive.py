"""Open a job archive by URL: :func:`open_archive` picks the backend.

The user-facing names of the archive layer are importable from here (``from ccarchive.archive
import open_archive, JobArchive, job_path``).  The backends live in :mod:`ccarchive.backends` and
never import this module: it sits on top of them, so the dependency runs one way only.
"""

from __future__ import annotations

from typing import Any

from .atomicio import TMP_PREFIX
from .backends import (
    ARCHIVE_VERSION,
    PARQUET_PREFIX,
    SQLITE_SCHEME,
    Archive,
    JobKey,
    WriteResult,
    job_path,
    parse_job_path,
)
from .backends.tree import JobArchive
from .errors import InputError

__all__ = [
    "ARCHIVE_VERSION", "TMP_PREFIX", "Archive", "JobArchive", "JobKey", "WriteResult", "job_path", "open_archive",
    "parse_job_path",
]

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _is_sqlite_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def open_archive(url: str, *, create: bool = False, storage_options: dict[str, Any] | None = None) -> Archive:
    """Open (or with ``create=True`` bootstrap) a job archive; the URL picks the backend.

    * ``sqlite:///abs/path.db`` or ``sqlite://rel/path.db`` (or the path of an existing SQLite
      file): cc-backend's SQLite archive (:class:`ccarchive.backends.sqlite.SqliteArchive`);
    * ``parquet+<fsspec URL or path>`` (e.g. ``parquet+file:///data/ds``, ``parquet+s3://b/ds``),
      or a directory holding the dataset's ``_ccarchive_parquet.json`` marker: the Arrow/Parquet
      dataset (:class:`ccarchive.backends.parquet.ParquetArchive`);
    * ``s3://bucket[/prefix]``: the v3 tree on S3 (:class:`ccarchive.backends.s3.S3Archive`);
    * anything else (a path, ``file://``, ``memory://``, ...): the v3 tree (:class:`JobArchive`).

    Every backend offers the same read API (``iter_jobs``, ``load_meta``, ``load_data``, ...).
    SQLite, Parquet and S3 are imported only when a URL asks for them (pyarrow and s3fs take a
    while to load).
    """
    if url.startswith(SQLITE_SCHEME):
        from .backends.sqlite import SqliteArchive

        return SqliteArchive(url[len(SQLITE_SCHEME):], create=create)
    if url.startswith(PARQUET_PREFIX):
        from .backends.parquet import ParquetArchive

        return ParquetArchive(url[len(PARQUET_PREFIX):], create=create, storage_options=storage_options)
    if "://" not in url and _is_sqlite_file(url):
        from .backends.sqlite import SqliteArchive

        return SqliteArchive(url, create=create)
    cls: type[JobArchive] = JobArchive
    if url.startswith(("s3://", "s3a://")):
        from .backends.s3 import S3Archive

        cls = S3Archive
    try:
        return cls(url, create=create, storage_options=storage_options)
    except InputError:
        from .backends.parquet import ParquetArchive, is_parquet_dataset

        if is_parquet_dataset(url, storage_options):
            return ParquetArchive(url, storage_options=storage_options)
        raise
