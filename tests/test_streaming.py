"""Streamed data.json writing: same bytes as the whole-text path, the 2000-byte rule, crash safety."""

from __future__ import annotations

import gzip
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccarchive.archive import JobArchive, open_archive
from ccarchive.atomicio import AtomicFile
from ccarchive.core import archive_loaded
from ccarchive.formats import compress
from ccarchive.formats.data import encode_job_data, iter_job_data
from ccarchive.formats.meta import encode_job_meta
from ccarchive.loading import load_job_data
from ccarchive.model import Job, JobData
from ccarchive.sources.synthetic import SyntheticSource, synthetic_job
from ccarchive.statistics import StatisticsReport, compute_data_statistics


def _job_and_data(cluster, nodes: int, duration: int, job_id: int = 77) -> tuple[Job, JobData]:
    job = synthetic_job(cluster, "main", job_id, 1_700_000_000, nodes, duration)
    data, _ = load_job_data(job, cluster, SyntheticSource())
    compute_data_statistics(data, StatisticsReport())
    return job, data


@pytest.mark.parametrize("threads", [1, 2])
def test_block_writer_matches_gzip_bytes_and_is_standard(threads: int) -> None:
    text = b"".join(b'{"x":%d.25,"y":[1.00,2.50,null]},' % i for i in range(200_000))  # ~6.5 MB
    whole = compress.gzip_bytes(text, threads=threads)
    sink = io.BytesIO()
    with compress.GzipBlockWriter(sink, threads=threads) as w:
        for i in range(0, len(text), 123_457):  # arbitrary piece sizes: cut points are fixed
            w.write(text[i : i + 123_457])
    assert sink.getvalue() == whole == compress.gzip_bytes(text, threads=1)
    assert whole[4:8] == b"\0\0\0\0"  # mtime 0
    assert gzip.decompress(whole) == text
    assert compress.gunzip_bytes(whole) == text


def test_empty_and_tiny_gzip_are_valid() -> None:
    assert gzip.decompress(compress.gzip_bytes(b"")) == b""
    assert gzip.decompress(compress.gzip_bytes(b"{}\n", level=0)) == b"{}\n"


@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_job_is_byte_identical(tmp_path: Path, fritz_cluster, threads: int) -> None:
    arch = open_archive(str(tmp_path), create=True)
    assert isinstance(arch, JobArchive)
    job, data = _job_and_data(fritz_cluster, 2, 4 * 3600)
    res = arch.write_stream(job, iter_job_data(data), encode_job_meta(job), threads=threads)
    expected = encode_job_data(data)
    assert res.data_file == "data.json.gz" and res.raw_data_bytes == len(expected)
    stored = Path(res.path, "data.json.gz").read_bytes()
    assert gzip.decompress(stored) == expected
    assert stored == compress.gzip_bytes(expected)  # deterministic, same as the whole-bytes path
    assert arch.load_data_bytes(job) == expected
    assert arch.temporary_files() == []


def test_small_job_stays_plain(tmp_path: Path) -> None:
    arch = open_archive(str(tmp_path), create=True)
    job = ("c", 5, 1_700_000_000)
    res = arch.write_stream(job, [b'{"m":', b"{}", b"}\n"], b"{}")  # type: ignore[arg-type]
    assert res.data_file == "data.json"
    assert Path(res.path, "data.json").read_bytes() == b'{"m":{}}\n'
    assert not Path(res.path, "data.json.gz").exists()


def test_stream_replaces_stale_plain_file(tmp_path: Path) -> None:
    arch = open_archive(str(tmp_path), create=True)
    job = ("c", 6, 1_700_000_000)
    arch.write_encoded(job, b"{}\n", b"{}")  # type: ignore[arg-type]
    big = [b"[" + b"1.25," * 1000, b"0]\n"]
    res = arch.write_stream(job, big, b"{}")  # type: ignore[arg-type]
    assert sorted(os.listdir(res.path)) == ["data.json.gz", "meta.json"]


def _failing(pieces: Iterator[bytes], after: int) -> Iterator[bytes]:
    for i, p in enumerate(pieces):
        if i == after:
            raise RuntimeError("source died")
        yield p


@pytest.mark.parametrize("threads", [1, 2])
def test_crash_in_the_middle_leaves_nothing(tmp_path: Path, fritz_cluster, threads: int) -> None:
    arch = open_archive(str(tmp_path), create=True)
    job, data = _job_and_data(fritz_cluster, 2, 4 * 3600)
    with pytest.raises(RuntimeError, match="source died"):
        arch.write_stream(job, _failing(iter_job_data(data), 3), encode_job_meta(job), threads=threads)
    d = Path(arch.job_dir(job))
    assert not (d / "meta.json").exists() and not (d / "data.json.gz").exists()
    assert arch.temporary_files() == []


class _BrokenFile(io.BytesIO):
    def write(self, b) -> int:  # type: ignore[override]
        if self.tell() > 10:
            raise OSError(28, "No space left on device")
        return super().write(b)


def test_failing_fs_leaves_no_meta(tmp_path: Path, fritz_cluster, monkeypatch) -> None:
    arch = open_archive(str(tmp_path), create=True)
    job, data = _job_and_data(fritz_cluster, 2, 4 * 3600)
    import builtins

    real_open = builtins.open

    def fake_open(path, mode="r", *a, **k):
        if mode in ("wb", "xb") and ".ccarchive-tmp-" in str(path) and str(path).endswith(".gz.partial"):
            f = real_open(path, mode, *a, **k)
            f.write = _BrokenFile().write  # type: ignore[method-assign]
            return f
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(OSError, match="No space"):
        arch.write_stream(job, iter_job_data(data), encode_job_meta(job))
    monkeypatch.undo()
    assert not Path(arch.job_dir(job), "meta.json").exists()
    assert arch.temporary_files() == []


def test_memory_fs_stream_and_archive_loaded(fritz_cluster) -> None:
    arch = open_archive(f"memory://ccarchive-stream-{uuid.uuid4().hex}", create=True)
    job, data = _job_and_data(fritz_cluster, 2, 4 * 3600)
    res = archive_loaded(job, data, archive=arch, cluster=fritz_cluster)
    assert arch.load_data_bytes(job) == encode_job_data(data)
    assert res.raw_data_bytes == len(encode_job_data(data))
    assert {"statistics", "encode", "compress", "write"} <= res.phases.keys()


def test_failing_object_store_discards_upload(fritz_cluster, monkeypatch) -> None:
    """A non-local fsspec file system: the partial object is discarded, never closed (uploaded)."""
    arch = open_archive(f"memory://ccarchive-stream-{uuid.uuid4().hex}", create=True)
    assert isinstance(arch, JobArchive)
    events: list[str] = []

    class Upload:  # like fsspec's AbstractBufferedFile: close() uploads, also from __del__
        closed = False

        def write(self, b: bytes) -> int:
            return len(b)

        def discard(self) -> None:
            events.append("discard")

        def close(self) -> None:
            events.append("close")
            self.closed = True

        def __del__(self) -> None:
            if not self.closed:
                self.close()

    monkeypatch.setattr("ccarchive.atomicio.BUFFERED_PROTOCOLS", frozenset())
    monkeypatch.setattr(arch.fs, "open", lambda path, mode="rb", **kw: Upload())
    job, data = _job_and_data(fritz_cluster, 2, 4 * 3600)
    with pytest.raises(RuntimeError):
        arch.write_stream(job, _failing(iter_job_data(data), 2), encode_job_meta(job))
    import gc

    gc.collect()
    assert events == ["discard"]
    assert not arch.exists(job)


# -- the streamed archiver: load -> statistics -> encode -> write one metric at a time -------------
def test_chunked_loading_gives_the_same_bytes(tmp_path: Path, fritz_cluster, monkeypatch) -> None:
    """Host chunks (here one host per fetch) aggregate to exactly what one fetch per metric gives."""
    from ccarchive import loading
    from ccarchive.core import archive_job

    job = synthetic_job(fritz_cluster, "main", 91, 1_700_000_000, 3, 2 * 3600)
    whole = archive_job(job, source=SyntheticSource(), archive=None, cluster=fritz_cluster)
    fetches: list[int] = []
    source = SyntheticSource()
    original_fetch = source.fetch

    def counting_fetch(*args, **kwargs):
        fetches.append(len(args[-1]))
        return original_fetch(*args, **kwargs)

    monkeypatch.setattr(source, "fetch", counting_fetch)
    monkeypatch.setattr(loading, "NATIVE_CHUNK_SAMPLES", 1)
    arch = open_archive(str(tmp_path), create=True)
    chunked = archive_job(job, source=source, archive=arch, cluster=fritz_cluster, keep_data=False)
    assert set(fetches) == {1}  # every fetch asked for one host
    assert arch.load_data_bytes(job) == encode_job_data(whole.data)
    assert encode_job_meta(chunked.job) == encode_job_meta(whole.job)
    assert chunked.job.statistics == whole.job.statistics and chunked.job.footprint == whole.job.footprint


def test_one_metric_in_memory_at_a_time(tmp_path: Path, fritz_cluster, monkeypatch) -> None:
    """With keep_data=False a metric's arrays are gone before the next metric is fetched."""
    import weakref

    from ccarchive import loading
    from ccarchive.core import archive_job

    job = synthetic_job(fritz_cluster, "main", 92, 1_700_000_000, 4, 3600)
    alive: list[tuple[str, weakref.ref]] = []
    overlaps: list[str] = []
    original = loading.JobLoader.load_metric

    def tracking(self, name):
        overlaps.extend(f"{prev} alive while loading {name}" for prev, ref in alive if ref() is not None)
        scopes = original(self, name)
        alive.extend((name, weakref.ref(b.data)) for b in scopes.values())
        return scopes

    monkeypatch.setattr(loading.JobLoader, "load_metric", tracking)
    res = archive_job(job, source=SyntheticSource(), archive=open_archive(str(tmp_path), create=True),
                      cluster=fritz_cluster, keep_data=False)
    assert len(alive) >= 10 and not overlaps, overlaps
    node = res.data["cpu_load"]["node"]  # the result keeps series names and statistics, no samples
    assert node.data.shape == (4, 0) and node.statistics is not None and node.statistics.shape == (4, 3)


def test_failure_in_a_later_metric_writes_nothing(tmp_path: Path, fritz_cluster) -> None:
    """The data file is complete before meta.json is written: an error mid-stream leaves no entry."""
    from ccarchive.core import archive_job
    from ccarchive.errors import TransientError

    job = synthetic_job(fritz_cluster, "main", 93, 1_700_000_000, 2, 4 * 3600)

    class FailsLate(SyntheticSource):
        def fetch(self, job, cluster, metric, scope, requests):
            if metric.name > "mem":  # after several metrics went into the compressor
                raise TransientError(f"{job.label}: metric store went away at {metric.name}")
            return super().fetch(job, cluster, metric, scope, requests)

    arch = open_archive(str(tmp_path), create=True)
    with pytest.raises(TransientError, match="went away"):
        archive_job(job, source=FailsLate(), archive=arch, cluster=fritz_cluster, keep_data=False)
    assert not arch.exists(job)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("version.txt", "cluster.json")]
    assert leftovers == []


@pytest.mark.parametrize("url_kind", ["local", "memory"])
@pytest.mark.parametrize("size", ["large", "small"])
def test_rearchive_killed_before_meta_never_pairs_old_meta_with_new_data(
        tmp_path: Path, fritz_cluster, monkeypatch, url_kind: str, size: str) -> None:
    """Re-archiving: the old meta.json goes just before the new data replaces the old, so a writer
    killed between data and meta leaves an incomplete entry, never a stale "complete" one; a write
    that fails before the data is published leaves the old entry whole."""
    url = str(tmp_path) if url_kind == "local" else f"memory://ccarchive-rearchive-{uuid.uuid4().hex}"
    arch = open_archive(url, create=True)
    hours = 4 if size == "large" else 0
    job, old = _job_and_data(fritz_cluster, 2 if hours else 1, hours * 3600 + 60)
    arch.write_stream(job, iter_job_data(old), encode_job_meta(job))
    old_meta, old_data = arch.load_meta_bytes(job), arch.load_data_bytes(job)

    # 1. the new data fails half-way: the old entry is untouched
    def broken() -> Iterator[bytes]:
        yield from list(iter_job_data(old))[:1]
        raise OSError(28, "No space left on device")

    if size == "large":
        with pytest.raises(OSError):
            arch.write_stream(job, broken(), encode_job_meta(job))
        assert arch.exists(job) and arch.load_meta_bytes(job) == old_meta and arch.load_data_bytes(job) == old_data

    # 2. killed after the new data is in, before meta.json
    _, new = _job_and_data(fritz_cluster, 2 if hours else 1, hours * 3600 + 60, job_id=job.job_id)
    for scopes in new.values():
        for block in scopes.values():
            block.data += 1.0
    compute_data_statistics(new, StatisticsReport())
    real_put, real_commit = JobArchive._put, AtomicFile.commit

    def killed_at_meta(self, path, payload, **kw):  # object stores: the meta.json upload
        if path.endswith("meta.json"):
            raise KeyboardInterrupt("killed")
        return real_put(self, path, payload, **kw)

    def killed_at_meta_rename(self):  # local disks: meta.json is synced, its rename never happens
        if self.path.endswith("meta.json"):
            raise KeyboardInterrupt("killed")
        return real_commit(self)

    monkeypatch.setattr(JobArchive, "_put", killed_at_meta)
    monkeypatch.setattr(AtomicFile, "commit", killed_at_meta_rename)
    with pytest.raises(KeyboardInterrupt):
        arch.write_stream(job, iter_job_data(new), encode_job_meta(job))
    monkeypatch.undo()
    assert not arch.exists(job)  # incomplete: no meta.json beside the new data
    assert arch.load_data_bytes(job) == encode_job_data(new)


def test_configured_level_applies_to_every_writer_and_bad_environment_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    text = b"".join(b'{"x":%d.25,"y":[1.00,2.50,null]},' % (i * 7919 % 100_003) for i in range(100_000))
    sizes = {}
    try:
        for level in (1, 9):
            compress.configure(level=level, threads=2)
            sink = io.BytesIO()
            with compress.GzipBlockWriter(sink) as w:
                w.write(text)
            sizes[level] = len(sink.getvalue())
            assert sink.getvalue() == compress.gzip_bytes(text, threads=2)  # the same default everywhere
            assert gzip.decompress(sink.getvalue()) == text
    finally:
        compress.configure(level=compress.DEFAULT_LEVEL, threads=compress.DEFAULT_THREADS)
    assert sizes[9] < sizes[1]
    with pytest.raises(ValueError, match="0..9"):
        compress.configure(level=10)
    run = subprocess.run([sys.executable, "-m", "ccarchive", "verify", str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "CCARCHIVE_GZIP_LEVEL": "12"}, timeout=120)
    assert run.returncode == 1 and run.stderr.strip().splitlines() == [
        "ccarchive verify: error: environment CCARCHIVE_GZIP_LEVEL='12': gzip level must be 0..9 (zlib-ng levels), "
        "got 12"]


def test_block_gzip_is_read_by_gnu_gzip(tmp_path: Path) -> None:
    """Another implementation's reader (GNU gzip, as Go's compress/gzip: RFC 1952, CRC and size
    checked) accepts the multi-block, multi-thread output."""
    import shutil
    import subprocess

    gz = shutil.which("gzip")
    assert gz is not None, "gzip(1) is part of every Debian system"
    text = b"".join(b'{"x":%d.25,"y":[1.00,2.50,null]},' % i for i in range(150_000))  # ~5 MB: many blocks
    path = tmp_path / "data.json.gz"
    path.write_bytes(compress.gzip_bytes(text, threads=2))
    subprocess.run([gz, "-t", str(path)], check=True, timeout=60)
    assert subprocess.run([gz, "-dc", str(path)], check=True, capture_output=True, timeout=60).stdout == text


@pytest.mark.parametrize("stream", [True, False])
def test_local_entry_syncs_data_and_meta_before_publishing_either(
        tmp_path: Path, fritz_cluster, monkeypatch, stream: bool) -> None:
    """On a local disk both files of an entry are synced back to back (one journal commit) and
    only then renamed into place, data first, meta.json last."""
    arch = open_archive(str(tmp_path), create=True)
    job, data = _job_and_data(fritz_cluster, 1, 3600)
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync " + os.readlink(f"/proc/self/fd/{fd}").rsplit("-", 1)[-1])
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append("rename " + os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    if stream:
        arch.write_stream(job, iter_job_data(data), encode_job_meta(job))
    else:
        arch.write_encoded(job, encode_job_data(data), encode_job_meta(job))
    monkeypatch.undo()
    assert calls == ["fsync data.json.gz.partial", "fsync meta.json.partial", "rename data.json.gz", "rename meta.json"]
    assert arch.load_data_bytes(job) == encode_job_data(data) and arch.temporary_files() == []


@pytest.mark.parametrize("kind", ["file", "sqlite", "parquet"])
def test_prepared_job_gzipped_in_the_background_stores_what_archive_job_stores(
        tmp_path: Path, fritz_cluster, kind: str) -> None:
    """A prepared job whose data.json is compressed on another thread while the worker goes on
    writes the same bytes as the one-step path, on every backend that stores gzip; the Parquet
    dataset stores no gzip, so nothing is compressed for it."""
    from ccarchive.core import archive_job, prepare_job
    from ccarchive.loading import JobLoader

    def url(name: str) -> str:
        return {"file": str(tmp_path / name), "sqlite": f"sqlite://{tmp_path / name}.db",
                "parquet": f"parquet+{tmp_path / name}"}[kind]

    job = synthetic_job(fritz_cluster, "main", 7301, 1_700_000_000, 1, 3600, seed=4)
    source = SyntheticSource(seed=4)
    ref, out = open_archive(url("ref"), create=True), open_archive(url("out"), create=True)
    archive_job(job, source=source, archive=ref, cluster=fritz_cluster)
    prepared = prepare_job(job, cluster=fritz_cluster, loader=JobLoader(job, fritz_cluster, source),
                           gzip_ahead=out.stores_gzip)
    assert prepared is not None
    assert (prepared.gzipped is not None) == (kind != "parquet")
    result = prepared.write(out)
    assert result.bytes_written > 0 and ("compress" in result.phases) == (kind != "parquet")
    assert out.load_meta_bytes(job) == ref.load_meta_bytes(job)
    assert out.load_data_bytes(job) == ref.load_data_bytes(job)
    if kind == "file":  # the stored file itself, not only its content
        rel = "fritz/7/301/1700000000/data.json.gz"
        assert (tmp_path / "out" / rel).read_bytes() == (tmp_path / "ref" / rel).read_bytes()
