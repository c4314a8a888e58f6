"""Copy jobs between any two archives (file, S3, SQLite, Parquet), resumable and verified.

Why it works the way it does:

* **Bytes, not objects**, between the JSON backends: meta.json and the (decompressed) data.json
  text are copied exactly as stored, so a legacy entry stays what it was (pretty-printed,
  ``stopTime``...) and nothing is re-rounded.  Gzip is re-applied by the target's own rule.
  A Parquet target decodes them into columns; a Parquet source produces the bytes ccarchive's
  encoders give for the stored job.
* **Resumable**: jobs already complete in the target (meta plus data) are skipped, so an
  interrupted run (or a run against a target that was partly filled before) just continues.
  ``overwrite=True`` copies everything again.
* **Verified**: each job is read back from the target after writing and compared with what was
  read from the source — byte for byte for JSON targets, by re-encoding for Parquet (whose
  meta/data bytes are rebuilt).  A job that does not compare equal is reported and, where the
  backend can, removed again so the next run retries it.
* Transient failures (S3 endpoint down, database locked) are retried a bounded number of
  times with backoff before the job is reported failed; the run continues with the next job.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .backends import Archive, JobKey
from .backends.parquet import ParquetArchive
from .errors import CcArchiveError, TransientError
from .formats.data import decode_job_data, encode_job_data
from .formats.meta import decode_job_meta, encode_job_meta

log = logging.getLogger(__name__)
DATA_NAMES = ("data.json", "data.json.gz")


@dataclass
class ConvertReport:
    """What a conversion did; ``ok`` when no job or cluster failed."""

    clusters: int = 0
    total: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def ok(self) -> bool:
        return not self.errors


def complete_keys(archive: Archive, clusters: Iterable[str]) -> set[JobKey]:
    """Keys of the jobs that are complete in ``archive`` (meta.json and a data file present)."""
    out: set[JobKey] = set()
    for c in clusters:
        for e in archive.list_entries(c):
            if "meta.json" in e.names and any(n in e.names for n in DATA_NAMES):
                out.add(e.key)
    return out


def _transient(e: BaseException) -> bool:
    from .backends import is_transient_backend_error

    if isinstance(e, TransientError):
        return True
    import sqlite3

    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return True
    return is_transient_backend_error(e)


def with_retries(fn: Callable[[], Any], what: str, retries: int = 3, backoff: float = 0.5) -> Any:
    """Call ``fn``; retry transient failures ``retries`` times with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == retries or not _transient(e):
                raise
            delay = backoff * 2**attempt
            log.warning("%s: transient failure (%s: %s), retrying in %.1f s", what, type(e).__name__, e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _digest(b: bytes) -> bytes:
    return hashlib.blake2b(b, digest_size=16).digest()


def _label(key: JobKey) -> str:
    return f"job {key[0]}/{key[1]}/{key[2]}"


def convert(
    src: Archive,
    dst: Archive,
    *,
    cluster: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
    progress: bool = True,
    batch_jobs: int = 64,
    retries: int = 3,
    backoff: float = 0.5,
) -> ConvertReport:
    """Copy every job (and cluster config) of ``src`` into ``dst``; see the module doc."""
    from tqdm import tqdm

    rep = ConvertReport()
    clusters = [cluster] if cluster else src.clusters()
    rep.clusters = len(clusters)
    for c in clusters:
        try:
            if src.has_cluster(c) and (overwrite or not dst.has_cluster(c)):
                with_retries(partial(dst.store_cluster, src.load_cluster(c)), f"cluster {c}", retries, backoff)
        except (CcArchiveError, OSError) as e:
            rep.errors.append(f"cluster {c}: config not copied: {e}")
    keys = [k for c in clusters for k in src.iter_job_keys(c)]
    rep.total = len(keys)
    done = set() if overwrite else complete_keys(dst, clusters)
    todo = [k for k in keys if k not in done]
    rep.skipped = rep.total - len(todo)
    sink = dst.sink(max_jobs=max(1, batch_jobs)) if isinstance(dst, ParquetArchive) else None
    pending: list[tuple[JobKey, bytes, bytes]] = []  # parquet: (key, meta digest, data digest)
    bar = tqdm(total=rep.total, initial=rep.skipped, unit="job", desc="convert", disable=not progress,
               dynamic_ncols=True)

    def check_pending() -> None:
        for key, meta_d, data_d in pending:
            try:
                if verify:
                    got_meta = encode_job_meta(dst.load_meta(key))
                    got_data = encode_job_data(dst.load_data(key))
                    if _digest(got_meta) != meta_d or _digest(got_data) != data_d:
                        raise CcArchiveError("read back from the target differs from the source")
                rep.copied += 1
            except Exception as e:  # noqa: BLE001 - report per job, continue
                rep.errors.append(f"{_label(key)}: verification failed: {e}")
        pending.clear()

    def flush() -> None:
        if sink is not None and sink.pending:
            try:
                with_retries(sink.flush, "parquet batch", retries, backoff)
            except Exception as e:  # noqa: BLE001
                rep.errors += [f"{_label(k)}: not written: {type(e).__name__}: {e}" for k, _, _ in pending]
                pending.clear()
                sink.discard()
                return
            check_pending()

    try:
        for key in todo:
            try:
                meta_raw = with_retries(partial(src.load_meta_bytes, key), _label(key), retries, backoff)
                data_raw = with_retries(partial(src.load_data_bytes, key), _label(key), retries, backoff)
                rep.bytes_read += len(meta_raw) + len(data_raw)
                job = decode_job_meta(meta_raw)
                if job.key != key:
                    raise CcArchiveError(f"meta.json describes job {job.cluster}/{job.job_id}/{job.start_time}")
                if sink is not None:
                    data = decode_job_data(data_raw)
                    pending.append((key, _digest(encode_job_meta(job)), _digest(encode_job_data(data))))
                    sink.add(job, data, flush_when_full=False)
                    if sink.full:
                        flush()
                else:
                    _copy_one(dst, key, meta_raw, data_raw, verify, retries, backoff)
                    rep.copied += 1
            except Exception as e:  # noqa: BLE001 - one job's failure must not end the run
                rep.errors.append(f"{_label(key)}: {type(e).__name__}: {e}")
            bar.update()
        flush()
    finally:
        bar.close()
    return rep


def _copy_one(dst: Archive, key: JobKey, meta_raw: bytes, data_raw: bytes, verify: bool,
              retries: int, backoff: float) -> None:
    """Write one job's bytes into a JSON backend and compare what reads back."""
    with_retries(lambda: dst.write_encoded(key, data_raw, meta_raw), _label(key), retries, backoff)
    if not verify:
        return
    got_meta = with_retries(lambda: dst.load_meta_bytes(key), _label(key), retries, backoff)
    got_data = with_retries(lambda: dst.load_data_bytes(key), _label(key), retries, backoff)
    if got_meta != meta_raw or got_data != data_raw:
        what = "meta.json" if got_meta != meta_raw else "data.json"
        try:
            dst.delete_job(key)
        except Exception:  # noqa: BLE001 - the mismatch is the error to report
            log.warning("%s: could not remove the mismatching copy", _label(key), exc_info=True)
        raise CcArchiveError(f"verification failed: {what} read back from the target differs from the source")
