"""Files that appear whole or not at all, on any fsspec file system.

Every archive write goes through :class:`AtomicFile`: a reader (cc-backend, DuckDB, another
ccarchive) must never see half a data.json.gz or half a Parquet file, whatever kills the writer.
Local disks get a hidden temporary name in the same directory, fsync and rename; object stores
get one upload that only becomes visible when it completes (``discard`` drops it otherwise);
file systems whose open file is visible while written (fsspec's ``memory``) get the bytes
collected and stored with one call at the end.
"""

from __future__ import annotations

import io
import itertools
import os
import posixpath
import uuid
from collections.abc import Callable
from typing import IO, Any

from fsspec.implementations.local import LocalFileSystem

#: Hidden name prefix of files being written; ``temporary_files()`` of the archives lists them.
TMP_PREFIX = ".ccarchive-tmp-"
#: ... and their suffix: a left-over of a killed writer must not match ``*.parquet`` or ``data.json*``
#: globs (DuckDB's ``read_parquet('…/**/*.parquet')`` does not skip hidden files).
TMP_SUFFIX = ".partial"
#: fsspec protocols whose ``open(path, "wb")`` shows the object before close (not atomic).
BUFFERED_PROTOCOLS = frozenset({"memory"})
#: Temporary names: a random token per process start, the pid (a forked child differs) and a
#: counter -- unique without a system call per file (a uuid4 reads the kernel's random source).
_TOKEN = uuid.uuid4().hex[:12]
_SERIAL = itertools.count()


def _temporary_name(path: str) -> str:
    parent, base = posixpath.split(path)
    return posixpath.join(parent, f"{TMP_PREFIX}{_TOKEN}-{os.getpid():x}-{next(_SERIAL):x}-{base}{TMP_SUFFIX}")


def _protocols(fs: Any) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


class AtomicFile:
    """A binary file opened for writing at ``path`` that is published by :meth:`commit` and
    dropped by :meth:`abort` (also as a context manager: commit on success, abort on error).

    ``before_publish`` runs right before the file replaces whatever was at ``path`` (the archive
    uses it to unpublish a job's old meta.json); ``parent_exists`` skips making the directory."""

    def __init__(self, fs: Any, path: str, *, before_publish: Callable[[], None] | None = None,
                 parent_exists: bool = False) -> None:
        self.fs, self.path, self.before_publish = fs, path, before_publish
        parent = posixpath.dirname(path)
        self._tmp: str | None = None
        self._buffer: io.BytesIO | None = None
        if isinstance(fs, LocalFileSystem):
            if not parent_exists:
                os.makedirs(parent, exist_ok=True)
            self._tmp = _temporary_name(path)
            # "x": never open another writer's file; a buffer size given: no isatty() call
            self.file: IO[bytes] = open(self._tmp, "xb", buffering=io.DEFAULT_BUFFER_SIZE)  # noqa: SIM115
        elif BUFFERED_PROTOCOLS.intersection(_protocols(fs)):
            self._buffer = io.BytesIO()
            self.file = self._buffer
        else:
            fs.makedirs(parent, exist_ok=True)
            self.file = fs.open(path, "wb")  # object stores: the object appears when the upload completes
        self.done = False
        self._synced = False

    def sync(self) -> None:
        """Make the temporary file durable now (local disks; elsewhere nothing to do), so
        :meth:`commit` only renames.  Why: two files written and then synced back to back share
        one file-system journal commit, where write-sync-write-sync pays for two."""
        if self._tmp is not None and not self._synced:
            self.file.flush()
            os.fsync(self.file.fileno())
            self._synced = True

    def commit(self) -> None:
        """Make the file visible at ``path`` (durably on local disks)."""
        if self.done:
            return
        try:
            if self._tmp is not None:
                self.sync()
                self.file.close()
                if self.before_publish:
                    self.before_publish()
                os.replace(self._tmp, self.path)
            elif self._buffer is not None:
                if self.before_publish:
                    self.before_publish()
                self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
                self.fs.pipe_file(self.path, self._buffer.getvalue())
            else:
                if self.before_publish:
                    self.before_publish()
                self.file.close()
        except BaseException:
            self.abort()
            raise
        self.done = True

    def abort(self) -> None:
        """Drop what was written; nothing appears at ``path``."""
        if self.done:
            return
        self.done = True
        if self._tmp is not None:
            try:
                self.file.close()  # may raise again (ENOSPC flushing the buffer): the unlink must still run
            except OSError:
                pass
            finally:
                try:
                    os.unlink(self._tmp)
                except FileNotFoundError:
                    pass
        elif self._buffer is None:
            discard(self.file)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def discard(f: Any) -> None:
    """Drop an unfinished upload: abort it and mark the file closed, so neither ``close()`` nor
    the garbage collector uploads the partial object."""
    drop = getattr(f, "discard", None)
    if callable(drop):
        try:
            drop()
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
    try:
        f.closed = True
    except AttributeError:
        pass


def put_atomic(fs: Any, path: str, payload: bytes, *, before_publish: Callable[[], None] | None = None) -> None:
    """Write one whole file atomically: through :class:`AtomicFile` on local disks, as one
    ``pipe_file`` (a single PUT) elsewhere."""
    if isinstance(fs, LocalFileSystem):
        with AtomicFile(fs, path, before_publish=before_publish) as out:
            out.file.write(payload)
        return
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    if before_publish:
        before_publish()
    fs.pipe_file(path, payload)
