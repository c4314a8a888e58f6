"""Job archive v3 through fsspec: any URL (plain path, ``file://``, ``memory://``, ``s3://``).

Layout (cc-backend pkg/archive/fsBackend.go)::

    <root>/version.txt                                   "3\\n"
    <root>/<cluster>/cluster.json
    <root>/<cluster>/<jobId // 1000>/<jobId % 1000 :03d>/<startTime>/meta.json
                                                         .../data.json  or  data.json.gz

Writes are safer than the reference's: the data file first, meta.json last, each one atomic
(a hidden temporary name in the same directory + rename where the file system renames, one PUT
per object on object stores), and a stale data file of the other kind is removed before
meta.json appears.  So a job directory with a meta.json is complete, and a crash at any moment
leaves either the previous complete entry or no meta.json at all.

Users reach this class as :class:`ccarchive.archive.JobArchive` (or through
:func:`ccarchive.archive.open_archive`); it lives among the backends because
:class:`~ccarchive.backends.s3.S3Archive` builds on it.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..atomicio import TMP_PREFIX, AtomicFile, put_atomic
from ..cluster import Cluster, encode_cluster, load_cluster
from ..errors import ArchiveVersionError, ClusterConfigError, FormatError, InputError
from ..formats.compress import GzipBlockWriter, gunzip_array, gunzip_bytes, gzip_bytes, should_gzip
from ..formats.data import decode_job_data, encode_job_data
from ..formats.meta import decode_job_meta, encode_job_meta
from ..model import Job, JobData
from ..names import check_cluster_name, check_job_key, is_cluster_name
from . import ARCHIVE_VERSION, Entry, JobKey, WriteResult, job_path, parse_job_path

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pyarrow as pa


def _key(job: Job | JobKey) -> JobKey:
    """The checked key of a job: nothing outside the archive is ever addressed."""
    return check_job_key(job.key if isinstance(job, Job) else job)


class JobArchive:
    """A v3 job archive on any fsspec file system."""

    stores_gzip = True

    def __init__(self, url: str, *, create: bool = False, storage_options: dict[str, Any] | None = None):
        self.url = url
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.fs = fs
        self.root = root.rstrip("/") if root not in ("/", "") else root
        self._local = isinstance(fs, LocalFileSystem)
        self._clusters: dict[str, Cluster] = {}
        #: clusters whose cluster.json was found (besides those loaded or stored, in ``_clusters``):
        #: the worker asks before every job, a cluster is never removed from an archive, and on S3
        #: each question is a request
        self._present: set[str] = set()
        self._check_version(create)

    # -- paths ---------------------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if self.root else posixpath.join(*parts)

    def job_dir(self, job: Job | JobKey) -> str:
        return self._p(job_path(*_key(job)))

    def _cluster_path(self, name: str, *parts: str) -> str:
        """A path under a cluster's directory, the name checked first."""
        return self._p(check_cluster_name(name), *parts)

    # -- version.txt -----------------------------------------------------------------------
    def _check_version(self, create: bool) -> None:
        vpath = self._p("version.txt")
        try:
            raw = self.fs.cat_file(vpath)
        except FileNotFoundError:
            raw = None
        if raw is None:
            if not create:
                raise InputError(f"{self.url}: not a job archive (no version.txt); check the URL "
                                 "(ccarchive import and convert create a new archive)")
            try:
                entries = [e for e in self.fs.ls(self.root or "/", detail=False)
                           if not posixpath.basename(e.rstrip("/")).startswith(".")]
            except FileNotFoundError:
                entries = []
            if entries:
                raise InputError(
                    f"{self.url}: has no version.txt but is not empty; refusing to turn it into a job archive"
                )
            self.fs.makedirs(self.root or "/", exist_ok=True)
            self._put(vpath, b"%d\n" % ARCHIVE_VERSION)
            return
        text = raw.decode("utf-8", "replace")
        text = text[:-1] if text.endswith("\n") else text
        if text.strip() != str(ARCHIVE_VERSION):
            raise ArchiveVersionError(
                f"{self.url}: unsupported job archive version {text.strip()!r}, ccarchive needs {ARCHIVE_VERSION}"
            )

    # -- atomic object writes ----------------------------------------------------------------
    def _put(self, path: str, payload: bytes, *, unpublish: str | None = None) -> None:
        """Write one object atomically (:class:`~ccarchive.atomicio.AtomicFile`). ``unpublish`` (a
        job's old meta.json) is removed just before the object replaces the old one."""
        put_atomic(self.fs, path, payload, before_publish=self._unpublisher(unpublish))

    def _unpublisher(self, path: str | None) -> Callable[[], None] | None:
        return None if path is None else (lambda: self._remove(path))

    def _make_job_dir(self, job_dir: str) -> bool:
        """On a local disk: create the job's directory, or remove the temporary files an earlier,
        interrupted write of the job left in it (killed writer).  True when the directory is new
        (nothing of the job to replace or remove).  One ``mkdir`` when the parent exists: the
        worker's writer pays for every system call it makes.  Object stores: False."""
        if not self._local:
            return False
        try:
            try:
                os.mkdir(job_dir)
            except FileNotFoundError:
                os.makedirs(posixpath.dirname(job_dir), exist_ok=True)
                os.mkdir(job_dir)
            return True
        except FileExistsError:
            pass
        for name in os.listdir(job_dir):
            if name.startswith(TMP_PREFIX):
                self._remove(posixpath.join(job_dir, name))
        return False

    def _remove(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    # -- clusters ------------------------------------------------------------------------------
    def clusters(self) -> list[str]:
        """Cluster names: every top-level directory whose name is a valid cluster name (so
        hidden ones are excluded)."""
        out = []
        for info in self.fs.ls(self.root or "/", detail=True):
            name = posixpath.basename(info["name"].rstrip("/"))
            if info["type"] == "directory" and is_cluster_name(name):
                out.append(name)
        return sorted(out)

    def has_cluster(self, name: str) -> bool:
        if name in self._clusters or name in self._present:
            return True
        if self.fs.exists(self._cluster_path(name, "cluster.json")):
            self._present.add(name)
            return True
        return False

    def load_cluster(self, name: str) -> Cluster:
        if name not in self._clusters:
            path = self._cluster_path(name, "cluster.json")
            try:
                raw = self.fs.cat_file(path)
            except FileNotFoundError:
                raise ClusterConfigError(f"{self.url}: unknown cluster {name!r} (no {name}/cluster.json)") from None
            self._clusters[name] = load_cluster(raw, name_hint=f"{name}/cluster.json")
        return self._clusters[name]

    def store_cluster(self, cluster: Cluster) -> None:
        self._put(self._cluster_path(cluster.name, "cluster.json"), encode_cluster(cluster))
        self._clusters[cluster.name] = cluster

    # -- jobs ------------------------------------------------------------------------------------
    def exists(self, job: Job | JobKey) -> bool:
        """True when the job's meta.json exists, which means the entry is complete."""
        return bool(self.fs.exists(posixpath.join(self.job_dir(job), "meta.json")))

    def write_job(self, job: Job, data: JobData) -> WriteResult:
        """Write data (gzip above 2000 bytes), drop the stale other data file, then meta.json."""
        encoded = encode_job_data(data)
        meta = encode_job_meta(job)
        return self.write_encoded(job, encoded, meta)

    def write_encoded(self, job: Job | JobKey, encoded_data: bytes, meta: bytes, *,
                      gzipped: bytes | Callable[[], bytes] | None = None) -> WriteResult:
        """Store a job's encoded data.json and meta.json.  ``gzipped``: ``gzip_bytes(encoded_data)``
        when the caller has compressed it already, or a function returning it, called once the
        entry's directory and temporary files exist: a compression still running on another
        thread then overlaps the file system's slowest calls (creating them)."""
        d = self.job_dir(job)
        new = self._make_job_dir(d)
        payload: bytes | Callable[[], bytes]
        if not should_gzip(len(encoded_data)):
            name, payload = "data.json", encoded_data
        else:
            name, payload = "data.json.gz", gzip_bytes(encoded_data) if gzipped is None else gzipped
        if isinstance(payload, bytes):
            self._write_entry(d, name, payload, meta, new=new)
            return WriteResult(d, name, len(payload) + len(meta), len(encoded_data))
        stored: list[int] = []
        produce = payload

        def write_payload(f: Any) -> None:
            compressed = produce()
            f.write(compressed)
            stored.append(len(compressed))

        self._write_entry(d, name, write_payload, meta, new=new)
        return WriteResult(d, name, stored[0] + len(meta), len(encoded_data))

    def _write_entry(self, d: str, name: str, data: bytes | Callable[[Any], object],
                     meta: bytes | Callable[[], bytes], *, new: bool = False) -> bytes:
        """One job entry: data file ``name`` (``data``: its bytes, or a function writing them to
        a file), then meta.json (a callable is called once the data is written); returns the
        meta.json bytes.

        Published in order: the data file, the other data file removed, meta.json last.  A
        re-archive unpublishes the old meta.json right before the new data replaces the old, so a
        writer killed at any point leaves an incomplete entry (no meta.json), never old meta
        beside new data.  On a local disk both files are first written to temporary files and
        synced together (one journal commit instead of two); a writer killed before the renames
        leaves those files, which the next write of the job removes.  Both temporary files are
        created before ``data`` runs, so that slow file-system call overlaps whatever ``data``
        waits for (a compression, a stream of pieces).  ``new``: the local job
        directory did not exist, so there is no old entry to unpublish or remove (fewer system
        calls on the worker's writer thread, each of which gives up the GIL)."""
        meta_path = posixpath.join(d, "meta.json")
        data_path = posixpath.join(d, name)
        stale = posixpath.join(d, "data.json.gz" if name == "data.json" else "data.json")
        if not self._local:  # object stores: one upload each, in order
            if isinstance(data, bytes):
                self._put(data_path, data, unpublish=meta_path)
            else:
                with AtomicFile(self.fs, data_path, before_publish=self._unpublisher(meta_path)) as out:
                    data(out.file)
            meta_bytes = meta if isinstance(meta, bytes) else meta()
            self._remove(stale)
            self._put(meta_path, meta_bytes)
            return meta_bytes
        main = AtomicFile(self.fs, data_path, before_publish=None if new else self._unpublisher(meta_path),
                          parent_exists=True)  # made by _make_job_dir
        side: AtomicFile | None = None
        try:
            side = AtomicFile(self.fs, meta_path, parent_exists=True)  # both created before the data is awaited
            if isinstance(data, bytes):
                main.file.write(data)
            else:
                data(main.file)
            meta_bytes = meta if isinstance(meta, bytes) else meta()
            side.file.write(meta_bytes)
            main.sync()
            side.sync()
            main.commit()
            if not new:
                self._remove(stale)
            side.commit()
        except BaseException:
            if side is not None:
                side.abort()
            main.abort()
            raise
        return meta_bytes

    def write_stream(
        self, job: Job | JobKey, pieces: Iterable[bytes], meta: bytes | Callable[[], bytes], *,
        level: int | None = None, threads: int | None = None,
    ) -> WriteResult:
        """Like :meth:`write_encoded`, but data.json arrives in pieces (``iter_job_data``) and is
        gzipped into the destination as it comes, so the job's whole JSON text is never in memory.
        ``meta`` may be a callable, called once the data is written: the streamed archiver knows
        the job's statistics only after the last metric went by.

        The 2000-byte rule needs only the first pieces: they are held until the text is known to
        exceed it (then gzip) or ends (then plain data.json).  Same ordering and atomicity as
        ``write_encoded``: data file (temp name + fsync + rename locally, one object elsewhere),
        stale opposite file removed, meta.json last.  An exception from ``pieces`` or the file
        system leaves no meta.json written and no temporary file."""
        it = iter(pieces)
        head: list[bytes] = []
        size = 0
        for piece in it:
            head.append(piece)
            size += len(piece)
            if should_gzip(size):
                break
        if not should_gzip(size):
            return self.write_encoded(job, b"".join(head), meta if isinstance(meta, bytes) else meta())
        d = self.job_dir(job)
        new = self._make_job_dir(d)
        gz: list[tuple[int, int, float]] = []
        made: list[float] = []

        def meta_then_clock() -> bytes:  # everything after this is the write's I/O
            meta_bytes = meta if isinstance(meta, bytes) else meta()
            made.append(time.perf_counter())
            return meta_bytes

        meta_bytes = self._write_entry(d, "data.json.gz",
                                       lambda f: gz.append(_gzip_into(f, chain(head, it), level, threads)),
                                       meta_then_clock, new=new)
        raw, stored, io_s = gz[0]
        io_s += time.perf_counter() - made[0]
        return WriteResult(d, "data.json.gz", stored + len(meta_bytes), raw, {"write": io_s})

    def load_meta(self, job: Job | JobKey) -> Job:
        path = posixpath.join(self.job_dir(job), "meta.json")
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            raise InputError(f"{self.url}: no archived job {job_path(*_key(job))}") from None
        try:
            return decode_job_meta(raw)
        except FormatError as e:
            raise FormatError(f"{path}: {e}") from e

    def _data_file(self, job: Job | JobKey) -> tuple[bytes, bool]:
        """The stored data file and whether it is gzipped (data.json.gz preferred, as cc-backend does)."""
        d = self.job_dir(job)
        for name in ("data.json.gz", "data.json"):
            try:
                return self.fs.cat_file(posixpath.join(d, name)), name.endswith(".gz")
            except FileNotFoundError:
                pass
        raise InputError(f"{self.url}: job {job_path(*_key(job))} has no data file")

    def load_data_bytes(self, job: Job | JobKey) -> bytes:
        """The decompressed data.json text (data.json.gz preferred, as cc-backend does)."""
        raw, gzipped = self._data_file(job)
        return gunzip_bytes(raw) if gzipped else bytes(raw)

    def load_data_text(self, job: Job | JobKey) -> bytes | npt.NDArray[np.uint8]:
        """The data.json text in the form the decoder reads fastest: data.json.gz inflated
        straight into a uint8 array (no growing ``bytes``, no copy), data.json as its bytes."""
        raw, gzipped = self._data_file(job)
        return gunzip_array(raw) if gzipped else bytes(raw)

    def load_data(self, job: Job | JobKey) -> JobData:
        raw = self.load_data_text(job)
        try:
            return decode_job_data(raw)
        except FormatError as e:
            raise FormatError(f"{self.job_dir(job)}/data.json: {e}") from e

    def iter_job_keys(self, cluster: str | None = None) -> Iterator[JobKey]:
        """Keys of complete entries (with meta.json), sorted by cluster, jobId, startTime."""
        for c in [cluster] if cluster else self.clusters():
            base = self._cluster_path(c)
            try:
                metas = self.fs.glob(posixpath.join(base, "*", "*", "*", "meta.json"))
            except FileNotFoundError:
                continue
            keys = []
            for m in metas:
                key = parse_job_path(c, *m.rstrip("/").split("/")[-4:-1])
                if key is not None:
                    keys.append(key)
            yield from sorted(keys)

    def iter_jobs(self, cluster: str | None = None) -> Iterator[Job]:
        for key in self.iter_job_keys(cluster):
            yield self.load_meta(key)

    def jobs_table(self, cluster: str | None = None, user: str | None = None, since: Any = None,
                   until: Any = None, state: str | None = None) -> pa.Table:
        """One row per job, statistics as flat columns (:mod:`ccarchive.jobstable`); the meta.json
        files are read in threads."""
        from ..jobstable import JobFilter, read_jobs_table

        return read_jobs_table(self, JobFilter.make(self, cluster, user, since, until, state))

    def temporary_files(self) -> list[str]:
        """Leftover temporary files of interrupted writes (none after a clean run)."""
        return sorted(p for p in self.fs.find(self.root or "/") if posixpath.basename(p).startswith(TMP_PREFIX))

    # -- backend-neutral helpers (verify, convert; same names on every backend) --------------------
    def load_cluster_bytes(self, name: str) -> bytes:
        """``<cluster>/cluster.json`` as stored; FileNotFoundError when it is missing."""
        return bytes(self.fs.cat_file(self._cluster_path(name, "cluster.json")))

    def load_meta_bytes(self, job: Job | JobKey) -> bytes:
        """meta.json exactly as stored."""
        try:
            return bytes(self.fs.cat_file(posixpath.join(self.job_dir(job), "meta.json")))
        except FileNotFoundError:
            raise InputError(f"{self.url}: no archived job {job_path(*_key(job))}") from None

    def list_entries(self, cluster: str) -> Iterator[Entry]:
        """Every start-time directory of a cluster with its file names, complete or not, sorted."""
        base = self._cluster_path(cluster)
        files: dict[str, list[str]] = {}
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            found = []
        for path in found:
            rel = path[len(base):].strip("/").split("/")
            if len(rel) == 4:
                files.setdefault("/".join([cluster, *rel[:3]]), []).append(rel[3])
        for rel_dir, names in sorted(files.items()):
            key = parse_job_path(cluster, *rel_dir.split("/")[1:])
            if key is not None:
                yield Entry(rel_dir, key, sorted(names))

    def delete_job(self, job: Job | JobKey) -> None:
        """Remove a job: meta.json first (the entry stops being a job at once), then its data."""
        d = self.job_dir(job)
        for name in ("meta.json", "data.json", "data.json.gz"):
            self._remove(posixpath.join(d, name))


def _gzip_into(f: Any, chunks: Iterator[bytes], level: int | None, threads: int | None) -> tuple[int, int, float]:
    gz = GzipBlockWriter(f, level, threads)
    try:
        for chunk in chunks:
            gz.write(chunk)
        gz.close()
    except BaseException:
        gz.abort()
        raise
    return gz.bytes_in, gz.bytes_out, gz.write_seconds
