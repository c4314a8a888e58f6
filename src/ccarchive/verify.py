"""Check an archive: layout, completeness of entries, and the cc-lib JSON schemas.

Errors are what would make cc-backend fail or lose data (unparsable files, a meta.json in the
wrong directory, a data file missing); strict-schema failures that real Go output also has are
warnings.  Works on every backend the archive layer opens.

This is the command for damaged archives, so it never stops at one: whatever reading or checking
one cluster or job raises (a truncated or corrupt gzip stream, text that is not JSON, a document
of the wrong shape) becomes an error of that cluster or job, and the run goes on.

Speed: data.json is parsed by the numba number-array kernel (no Python float per sample), only a
few samples of each long array reach the schema check, and the jobs are checked by a pool of
processes, one per core, whose reports are merged in the archive's order: the report is the one
a serial run gives.  A worker process that dies (killed, out of memory) costs nothing but time:
its jobs are checked again in the calling process.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from isal.igzip_lib import IsalError
from zlib_ng import zlib_ng

from .archive import TMP_PREFIX, job_path
from .errors import CcArchiveError, describe_error
from .kernels.jsonnum import NumberDocument, parse_document
from .validate import validate_cluster, validate_data, validate_meta

if TYPE_CHECKING:
    from .backends import Archive, Entry

#: What reading a damaged file raises besides ccarchive's own errors: I/O errors (a bad gzip
#: header is one), a truncated gzip stream (EOFError), a corrupt one (the inflate libraries' own
#: error classes), text that is not UTF-8 or JSON (ValueError), nesting too deep to decode.
DAMAGED_FILE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, RecursionError, zlib.error,
    cast("type[BaseException]", IsalError), cast("type[BaseException]", zlib_ng.error))
#: ... and with ccarchive's own (a missing file, a backend that is unavailable)
_READ_ERRORS: tuple[type[BaseException], ...] = (CcArchiveError, *DAMAGED_FILE_ERRORS)


@dataclass
class VerifyReport:
    clusters: int = 0
    jobs: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: per-job warnings grouped across jobs: message without the job path -> (count, first job)
    job_warnings: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add_job_warnings(self, rel: str, warnings: list[str]) -> None:
        for w in warnings:
            msg = w.split(": ", 1)[1] if w.startswith(rel) else w
            count, first = self.job_warnings.get(msg, (0, rel))
            self.job_warnings[msg] = (count + 1, first)

    def merge(self, other: VerifyReport) -> None:
        """Add another report's counts and messages, as if its checks had run on this one."""
        self.clusters += other.clusters
        self.jobs += other.jobs
        self.errors += other.errors
        self.warnings += other.warnings
        for msg, (n, first) in other.job_warnings.items():
            count, first = self.job_warnings.get(msg, (0, first))
            self.job_warnings[msg] = (count + n, first)

    def all_warnings(self) -> list[str]:
        grouped = [f"{first}: {msg}" if n == 1 else f"{n} jobs (first {first}): {msg}"
                   for msg, (n, first) in self.job_warnings.items()]
        return self.warnings + grouped


_NUMBER = (int, float)


def _sample(values: object, where: str, errors: list[str]) -> object:
    """Check a long number array with a cheap type test and keep a short representative sample
    for the schema check (jsonschema per element would make verify of big jobs take minutes)."""
    if not isinstance(values, list) or len(values) <= 8:
        return values
    bad = next((v for v in values if v is not None and type(v) not in _NUMBER), None)
    if bad is not None:
        errors.append(f"{where}: {bad!r} is not a number or null")
    keep = values[:3]
    nonneg = next((v for v in values if type(v) in _NUMBER and v >= 0), None)  # type: ignore[operator]
    if nonneg is not None and nonneg not in keep:
        keep = [*keep, nonneg]
    return keep


def _plain(value: object) -> object:
    return value


class _ParsedArrays:
    """The number arrays of a data.json the kernel parsed: each marker ``[k]`` of the skeleton
    becomes, where the schema check samples, the same sample :func:`_sample` takes of the list
    ``json`` would give (its elements read from the text, so ``1`` stays an int and ``1.0`` a
    float), and elsewhere that whole list."""

    def __init__(self, doc: NumberDocument, raw: bytes) -> None:
        self.doc = doc
        raw = bytes(raw)
        self.raw = raw
        # The first elements of every array (all of a short one), decoded by one json call.
        pieces = []
        for (s, e), n in zip(doc.text_spans.tolist(), doc.counts.tolist(), strict=True):
            if n <= 8:
                pieces.append(raw[s:e])
                continue
            end = s + 1
            for _ in range(3):  # the array holds numbers and null only: commas separate the elements
                end = raw.index(b",", end) + 1
            pieces.append(raw[s:end - 1] + b"]")
        self.heads: list[list[object]] = json.loads(b"[" + b",".join(pieces) + b"]")
        self.short = doc.counts <= 8

    def restore(self, value: object) -> object:
        """``value`` with every marker in it replaced by its list."""
        if type(value) is list:
            k = NumberDocument.marker(value)
            if k is not None:
                s, e = self.doc.text_spans[k].tolist()
                return json.loads(self.raw[s:e])
            return [self.restore(v) for v in value]
        if type(value) is dict and any(type(v) is list or type(v) is dict for v in value.values()):
            return {key: self.restore(v) for key, v in value.items()}
        return value

    def sample(self, value: object, where: str, errors: list[str]) -> object:
        k = NumberDocument.marker(value) if type(value) is list else None
        if k is None:
            return _sample(self.restore(value), where, errors)
        keep = self.heads[k]
        if self.short[k] or any(type(v) in _NUMBER and v >= 0 for v in keep):  # type: ignore[operator]
            return list(keep)
        nonneg = self.doc.array(k) >= 0  # NaN (null) is not
        if nonneg.any():
            return [*keep, float(self.doc.array(k)[int(nonneg.argmax())])]
        return list(keep)


def _skeleton(doc: object, rel: str, errors: list[str], arrays: _ParsedArrays | None = None) -> object:
    """data.json with every series' data and statisticsSeries array sampled (see _sample);
    ``arrays``: the parsed number arrays ``doc``'s markers stand for."""
    restore: Callable[[object], object] = arrays.restore if arrays is not None else _plain
    sample = arrays.sample if arrays is not None else _sample
    if not isinstance(doc, dict):
        return restore(doc)
    out: dict[str, object] = {}
    for metric, scopes in doc.items():
        if not isinstance(scopes, dict):
            out[metric] = restore(scopes)
            continue
        out[metric] = new_scopes = {}
        for scope, jm in scopes.items():
            if not isinstance(jm, dict):
                new_scopes[scope] = restore(jm)
                continue
            jm = {key: v if key in ("series", "statisticsSeries") else restore(v) for key, v in jm.items()}
            where = f"{rel}/data.json: {metric}/{scope}"
            series = jm.get("series")
            if arrays is not None and isinstance(series, list) and NumberDocument.marker(series) is not None:
                jm["series"] = series = restore(series)
            if isinstance(series, list):
                jm["series"] = [
                    {**{key: v if key == "data" else restore(v) for key, v in x.items()},
                     "data": sample(x["data"], f"{where}/series[{i}]/data", errors)}
                    if isinstance(x, dict) and "data" in x else restore(x)
                    for i, x in enumerate(series)
                ]
            elif "series" in jm:
                jm["series"] = restore(series)
            ss = jm.get("statisticsSeries")
            if isinstance(ss, dict):
                jm["statisticsSeries"] = {k: sample(v, f"{where}/statisticsSeries/{k}", errors)
                                          for k, v in ss.items()}
            elif "statisticsSeries" in jm:
                jm["statisticsSeries"] = restore(ss)
            new_scopes[scope] = jm
    return out


def _data_skeleton(raw: bytes, rel: str, errors: list[str]) -> object:
    """The sampled data.json (see _skeleton) through the kernel; text the kernel refuses goes
    through ``json`` as before, so a broken file gets ``json``'s message."""
    try:
        doc = parse_document(raw)
    except ValueError:
        return _skeleton(json.loads(raw), rel, errors)
    return _skeleton(doc.loads(), rel, errors, _ParsedArrays(doc, raw))


def default_workers() -> int:
    """Worker processes verify uses by default: one per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def verify_archive(archive: Archive, *, cluster: str | None = None, progress: bool = False,
                   workers: int | None = None) -> VerifyReport:
    """Check ``archive`` (or one cluster of it); ``workers`` processes check the jobs (default:
    one per core; 1 checks them in this process).  The report does not depend on ``workers``."""
    rep = VerifyReport()
    clusters = [cluster] if cluster else archive.clusters()
    pool = _Pool(archive, default_workers() if workers is None else workers)
    try:
        for c in clusters:
            rep.clusters += 1
            _verify_cluster_config(archive, c, rep)
            try:
                entries = list(archive.list_entries(c))
            except _READ_ERRORS as e:
                rep.errors.append(f"{c}: jobs cannot be listed: {describe_error(e)}")
                continue
            bar = None
            if progress and len(entries) > 50:
                from .logs import progress as progress_display

                bar = progress_display(len(entries), f"verify {c}", leave=False)
            for job_rep in pool.check(entries):
                rep.merge(job_rep)
                if bar is not None:
                    bar.update()
            if bar is not None:
                bar.close()
    finally:
        pool.close()
    rep.warnings += [f"{p}: leftover temporary file of an interrupted write" for p in archive.temporary_files()
                     if not cluster or f"/{cluster}/" in p]
    return rep


def _verify_cluster_config(archive: Archive, c: str, rep: VerifyReport) -> None:
    try:
        raw = archive.load_cluster_bytes(c)
        v = validate_cluster(json.loads(raw), where=f"{c}/cluster.json")
        rep.errors += v.errors
        rep.warnings += v.warnings
        archive.load_cluster(c)
    except FileNotFoundError:
        rep.errors.append(f"{c}/cluster.json: missing (cc-backend refuses to start without it)")
    except Exception as e:  # noqa: BLE001 - a damaged cluster.json is reported, never fatal
        rep.errors.append(f"{c}/cluster.json: {describe_error(e)}")


def _check_entry(archive: Archive, entry: Entry) -> VerifyReport:
    """The report of one job directory (never raises)."""
    rep = VerifyReport()
    try:
        _verify_job(archive, entry, rep)
    except Exception as e:  # noqa: BLE001 - one damaged job must not end the check of the others
        rep.errors.append(f"{entry.rel}: cannot be checked: {describe_error(e)}")
    return rep


#: The archive a worker process checks (set by the pool's initializer).
_WORKER_ARCHIVE: Any = None
#: Jobs handed to a worker at once: few enough that the workers stay evenly busy.
_CHUNK_MAX = 8


def _init_worker(archive: Archive) -> None:
    global _WORKER_ARCHIVE
    _WORKER_ARCHIVE = archive


def _check_chunk(entries: list[Entry]) -> list[VerifyReport]:
    return [_check_entry(_WORKER_ARCHIVE, e) for e in entries]


class _Pool:
    """Checks job entries in worker processes (from a fork server: numba's OpenMP runtime does not
    survive a plain fork; each worker gets the archive pickled), yielding
    the reports in the entries' order.  Jobs run in this process when one worker is asked for,
    when there are too few jobs to gain from it, for a SQLite archive, or when other threads run
    here (forking a process with threads is unsafe); a broken pool falls back to this process too."""

    def __init__(self, archive: Archive, workers: int) -> None:
        self.archive, self.workers = archive, max(1, workers)
        self.executor: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor | None:
        if self.executor is None and threading.active_count() == 1:
            import multiprocessing

            self.executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                                initializer=_init_worker, initargs=(self.archive,))
        return self.executor

    def check(self, entries: list[Entry]) -> Iterator[VerifyReport]:
        from .backends.sqlite import SqliteArchive

        # an SQLite archive's connection is not handed to other processes
        if (self.workers == 1 or len(entries) < 2 * self.workers or "forkserver" not in _start_methods()
                or isinstance(self.archive, SqliteArchive)):
            yield from (_check_entry(self.archive, e) for e in entries)
            return
        executor = self._executor()
        if executor is None:
            yield from (_check_entry(self.archive, e) for e in entries)
            return
        size = max(1, min(_CHUNK_MAX, len(entries) // (4 * self.workers)))
        chunks = [entries[i:i + size] for i in range(0, len(entries), size)]
        futures: list[Future[list[VerifyReport]]] = [executor.submit(_check_chunk, ch) for ch in chunks]
        for chunk, fut in zip(chunks, futures, strict=True):
            try:
                reports = fut.result()
            except Exception:  # noqa: BLE001 - a worker died (killed, out of memory): check here
                reports = [_check_entry(self.archive, e) for e in chunk]
            yield from reports

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


def _verify_job(archive: Archive, entry: Entry, rep: VerifyReport) -> None:
    rel = entry.rel
    real = [n for n in entry.names if not n.startswith(TMP_PREFIX)]
    if "meta.json" not in real:
        if real:
            rep.warnings.append(f"{rel}: {', '.join(sorted(real))} without meta.json (an interrupted write; "
                                f"not an archived job)")
        return
    rep.jobs += 1
    try:
        meta_doc = json.loads(archive.load_meta_bytes(entry.key))
    except ValueError as e:
        rep.errors.append(f"{rel}/meta.json: not valid JSON: {e}")
        return
    except _READ_ERRORS as e:
        rep.errors.append(f"{rel}/meta.json: unreadable: {describe_error(e)}")
        return
    v = validate_meta(meta_doc, where=f"{rel}/meta.json")
    rep.errors += v.errors
    rep.add_job_warnings(rel, v.warnings)
    try:
        expect = job_path(meta_doc["cluster"], int(meta_doc["jobId"]), int(meta_doc["startTime"]))
        if expect != rel:
            rep.errors.append(f"{rel}/meta.json: describes {expect}, stored in the wrong directory")
    except (KeyError, TypeError, ValueError):
        return  # already reported by the schema check
    if "data.json" in real and "data.json.gz" in real:
        rep.warnings.append(f"{rel}: both data.json and data.json.gz exist; readers use data.json.gz")
    if "data.json" not in real and "data.json.gz" not in real:
        rep.errors.append(f"{rel}: meta.json without a data file")
        return
    try:
        data_doc = _data_skeleton(archive.load_data_bytes(entry.key), rel, rep.errors)
    except _READ_ERRORS as e:
        rep.errors.append(f"{rel}: data file unreadable: {describe_error(e)}")
        return
    if not isinstance(data_doc, dict):
        rep.errors.append(f"{rel}/data.json: expected an object of metrics, got {type(data_doc).__name__}")
        return
    v = validate_data(data_doc, where=f"{rel}/data.json")
    rep.errors += v.errors
    rep.add_job_warnings(rel, v.warnings)
