"""The fsspec v3 archive: version handling, layout, atomic writes, stale files, reading back."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from ccarchive.archive import TMP_PREFIX, job_path, open_archive
from ccarchive.core import archive_job
from ccarchive.errors import ArchiveVersionError, InputError
from ccarchive.sources.synthetic import SyntheticSource, synthetic_job


def test_job_path_layout():
    assert job_path("emmy", 1403244, 1608923076) == "emmy/1403/244/1608923076"
    assert job_path("c", 42, 7) == "c/0/042/7"
    assert job_path("c", 1234005, 7) == "c/1234/005/7"


@pytest.mark.parametrize("scheme", ["plain", "file"])
def test_create_writes_version_and_reopens(tmp_path: Path, scheme: str):
    root = tmp_path / "arch"
    url = str(root) if scheme == "plain" else f"file://{root}"
    open_archive(url, create=True)
    assert (root / "version.txt").read_bytes() == b"3\n"
    assert open_archive(url).clusters() == []


def test_memory_archive_roundtrip(demo_clusters):
    url = f"memory://ccarchive-test-{uuid.uuid4().hex}"
    arch = open_archive(url, create=True)
    cluster = demo_clusters["fritz"]
    job = synthetic_job(cluster, "main", 4242, 1_700_000_000, 2, 3600)
    res = archive_job(job, source=SyntheticSource(), archive=arch, cluster=cluster)
    assert arch.exists(job)
    assert arch.load_meta(job).statistics.keys() == res.job.statistics.keys()
    assert arch.clusters() == ["fritz"]


def test_version_mismatch_is_refused(tmp_path: Path):
    (tmp_path / "version.txt").write_text("2\n")
    with pytest.raises(ArchiveVersionError, match="unsupported job archive version '2', ccarchive needs 3"):
        open_archive(str(tmp_path))


def test_version_without_newline_accepted(tmp_path: Path):
    (tmp_path / "version.txt").write_text("3")
    open_archive(str(tmp_path))


def test_nonempty_dir_without_version_refused(tmp_path: Path):
    (tmp_path / "something").mkdir()
    with pytest.raises(InputError, match="not empty"):
        open_archive(str(tmp_path), create=True)
    with pytest.raises(InputError, match="no version.txt"):
        open_archive(str(tmp_path))


def test_fixture_archive_reads(fixture_archive: Path):
    arch = open_archive(str(fixture_archive))
    assert arch.clusters() == ["alex", "emmy", "fritz"]
    keys = list(arch.iter_job_keys())
    assert keys == [("emmy", 1403244, 1608923076)]
    job = arch.load_meta(keys[0])
    assert job.num_nodes == 32 and job.sub_cluster == "haswell"
    data = arch.load_data(job)
    assert data["cpu_load"]["node"].data.shape == (32, 1441)
    assert arch.load_cluster("emmy").name == "emmy"


def _archive_one(tmp_path: Path, demo_clusters, duration: int, nodes: int = 1):
    arch = open_archive(str(tmp_path / "arch"), create=True)
    cluster = demo_clusters["fritz"]
    job = synthetic_job(cluster, "main", 123456, 1_700_000_000, nodes, duration)
    res = archive_job(job, source=SyntheticSource(), archive=arch, cluster=cluster)
    return arch, job, res


def test_gzip_rule_and_stale_file_removed(tmp_path: Path, demo_clusters):
    arch, job, res = _archive_one(tmp_path, demo_clusters, 3600)
    d = Path(arch.job_dir(job))
    assert res.raw_data_bytes > 2000
    assert sorted(p.name for p in d.iterdir()) == ["data.json.gz", "meta.json"]
    # a stale plain data.json left by an older writer must disappear on re-archive
    (d / "data.json").write_bytes(b"{}\n")
    archive_job(job, source=SyntheticSource(), archive=arch, cluster=demo_clusters["fritz"])
    assert sorted(p.name for p in d.iterdir()) == ["data.json.gz", "meta.json"]
    # the decoder's read: inflated into a uint8 array, the same text as load_data_bytes
    text = arch.load_data_text(job)
    assert isinstance(text, np.ndarray) and text.dtype == np.uint8
    assert text.tobytes() == arch.load_data_bytes(job) == gzip.decompress((d / "data.json.gz").read_bytes())


def test_small_data_is_plain_json(tmp_path: Path, demo_clusters):
    from ccarchive.model import JobMetric, Unit

    arch = open_archive(str(tmp_path / "arch"), create=True)
    cluster = demo_clusters["fritz"]
    job = synthetic_job(cluster, "main", 77, 1_700_000_000, 1, 60)
    data = {"cpu_load": {"node": JobMetric.from_rows(Unit(), 60, [job.resources[0].hostname], [None],
                                                     [[1.0, 2.0]])}}
    from ccarchive.core import archive_loaded

    res = archive_loaded(job, data, archive=arch, cluster=cluster)
    d = Path(res.path)
    assert sorted(p.name for p in d.iterdir()) == ["data.json", "meta.json"]
    text = (d / "data.json").read_bytes()
    assert len(text) <= 2000 and text.endswith(b"}\n")
    assert arch.load_data_text(job) == text  # plain data.json: its bytes
    assert json.loads(text)["cpu_load"]["node"]["series"][0]["statistics"] == {"min": 1.0, "avg": 1.5, "max": 2.0}


def test_crash_before_meta_leaves_no_entry(tmp_path: Path, demo_clusters, monkeypatch):
    arch = open_archive(str(tmp_path / "arch"), create=True)
    cluster = demo_clusters["fritz"]
    job = synthetic_job(cluster, "main", 99, 1_700_000_000, 1, 1800)
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("meta.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        archive_job(job, source=SyntheticSource(), archive=arch, cluster=cluster)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not arch.exists(job)
    assert list(arch.iter_job_keys()) == []
    assert arch.temporary_files() == []
    # the next attempt completes the entry
    archive_job(job, source=SyntheticSource(), archive=arch, cluster=cluster)
    assert arch.exists(job)


def test_read_back_equals_input_at_archive_precision(tmp_path: Path, demo_clusters):
    arch, job, res = _archive_one(tmp_path, demo_clusters, 4 * 3600, nodes=2)
    back = arch.load_data(job)
    assert back.keys() == res.data.keys()
    for metric, scopes in res.data.items():
        for scope, block in scopes.items():
            got = back[metric][scope]
            assert got.hostnames == block.hostnames and got.ids == block.ids
            np.testing.assert_array_equal(got.lengths, block.lengths)
            want = np.round(block.data.astype(np.float32).astype(np.float64), 2)
            np.testing.assert_allclose(got.data, want, rtol=0, atol=0.0051, equal_nan=True)
            np.testing.assert_array_equal(got.statistics, block.statistics)
    meta = arch.load_meta(job)
    assert meta.monitoring_status == 3
    assert meta.statistics == res.job.statistics


def test_no_temp_files_after_writes(tmp_path: Path, demo_clusters):
    arch, job, _ = _archive_one(tmp_path, demo_clusters, 600)
    assert not [p for p in (tmp_path / "arch").rglob("*") if p.name.startswith(TMP_PREFIX)]


def test_has_cluster_sees_a_cluster_stored_by_another_writer(tmp_path: Path, demo_clusters):
    """has_cluster remembers what it has seen (the worker asks before every job), but never a
    missing cluster: one stored later through another archive object is found."""
    root = str(tmp_path / "arch")
    worker_view = open_archive(root, create=True)
    other = open_archive(root)
    assert not worker_view.has_cluster("fritz")
    other.store_cluster(demo_clusters["fritz"])
    assert worker_view.has_cluster("fritz")
    assert not worker_view.has_cluster("alex")
    worker_view.store_cluster(demo_clusters["alex"])
    assert worker_view.has_cluster("alex") and other.has_cluster("alex")


@pytest.mark.parametrize("kind", ["dir", "sqlite"])
def test_write_encoded_awaits_a_compression_late(tmp_path: Path, demo_clusters, kind: str):
    """``gzipped`` may be a function (the worker's background compression): on a local disk it is
    called once the entry's temporary files exist, so creating them overlaps the compression;
    a compression that fails leaves neither an entry nor a temporary file."""
    from ccarchive.formats.compress import gzip_bytes
    from ccarchive.formats.meta import encode_job_meta

    url = str(tmp_path / "arch") if kind == "dir" else f"sqlite://{tmp_path / 'arch.db'}"
    arch = open_archive(url, create=True)
    cluster = demo_clusters["fritz"]
    job = synthetic_job(cluster, "main", 4242, 1_700_000_000, 1, 1800)
    encoded = b'{"x": "' + b"1" * 5000 + b'"}\n'
    seen: list[list[str]] = []

    def compressed() -> bytes:
        seen.append(sorted(os.path.basename(p) for p in arch.temporary_files()))
        return gzip_bytes(encoded)

    written = arch.write_encoded(job, encoded, encode_job_meta(job), gzipped=compressed)
    assert len(seen) == 1
    if kind == "dir":
        assert len(seen[0]) == 2 and all(n.startswith(TMP_PREFIX) for n in seen[0])
        assert any("data.json.gz" in n for n in seen[0]) and any("meta.json" in n for n in seen[0])
    assert arch.load_data_bytes(job) == encoded
    assert written.bytes_written == len(gzip_bytes(encoded)) + len(encode_job_meta(job))

    other = synthetic_job(cluster, "main", 4243, 1_700_000_000, 1, 1800)

    def broken() -> bytes:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        arch.write_encoded(other, encoded, encode_job_meta(other), gzipped=broken)
    assert not arch.exists(other)
    assert arch.temporary_files() == []


def test_rewrite_removes_a_killed_writers_temporary_files(tmp_path: Path, demo_clusters):
    """A job directory that exists already (a writer was killed in it, or the job is archived
    again) keeps no temporary file after the next write; a new one is made with its parents."""
    arch, job, _ = _archive_one(tmp_path, demo_clusters, 600)
    d = Path(arch.job_dir(job))
    left = d / f"{TMP_PREFIX}killed-writer-data.json.gz.partial"
    left.write_bytes(b"half")
    assert arch.temporary_files() != []
    archive_job(job, source=SyntheticSource(), archive=arch, cluster=demo_clusters["fritz"])
    assert not left.exists() and arch.temporary_files() == []
    assert sorted(p.name for p in d.iterdir()) == ["data.json.gz", "meta.json"]
    other = synthetic_job(demo_clusters["fritz"], "main", 987_654_321, 1_700_000_000, 1, 600)
    archive_job(other, source=SyntheticSource(), archive=arch, cluster=demo_clusters["fritz"])
    assert arch.exists(other) and Path(arch.job_dir(other)).parent.parent.name == "987654"
