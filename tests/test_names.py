"""Cluster names, job ids and start times that would address anything outside the archive are
refused by every backend, on reads and writes, by ``ccarchive import`` and by the pipeline, and
nothing is written when they are."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_fixtures import RawJob, fixture_clusters, fixture_jobs, small_data

from ccarchive.archive import job_path, open_archive
from ccarchive.cli.main import main
from ccarchive.cluster import Cluster
from ccarchive.errors import InputError
from ccarchive.formats.meta import decode_job_meta, encode_job_meta
from ccarchive.names import (
    MAX_CLUSTER_NAME_CHARS,
    check_cluster_name,
    check_job_key,
    is_cluster_name,
    shown,
)

IMPORT = Path(__file__).parent / "fixtures" / "cc-backend" / "import"
GOOD_NAMES = ["fritz", "alex", "emmy", "woody-ng", "cluster_1", "Test.Cluster", "a" * MAX_CLUSTER_NAME_CHARS]
#: (name, the part of the message that names the rule)
BAD_NAMES = [
    ("../../ESCAPED", "contains '/'"),
    ("ABSOLUTE", "contains '/'"),  # replaced by an absolute path inside tmp_path by the tests
    ("a\x00b", "U+0000, a control character"),
    ("x" * 5000, "is too long"),
    (".", "is a relative path component"),
    ("..", "is a relative path component"),
    ("a\\b", "contains '\\\\'"),
    ("a\nb", "U+000A, a control character"),
    ("", "is empty"),
    (" fritz", "whitespace"),
    ("fritz\t", "control character"),
    ("fritz ", "whitespace"),
    ("\x7fdel", "U+007F, a control character"),
    ("c1\x85", "U+0085, a control character"),
    ("zero\u200bwidth", "invisible or non-printable"),
    (".hidden", "starts with '.'"),
    ("a=b", "contains '='"),
    ("100%", "contains '%'"),
    ("node[1]", "wildcard"),
    ("any*", "wildcard"),
    ("\u00fc" * 60, "bytes long URL-encoded"),
]


def _name(name: str, tmp_path: Path) -> str:
    return str(tmp_path / "ABSOLUTE") if name == "ABSOLUTE" else name


def tree(root: Path) -> dict[str, bytes | None]:
    """Every directory (None) and file (its bytes) under ``root``."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


# -- the rules ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GOOD_NAMES)
def test_real_cluster_names_pass(name: str):
    assert check_cluster_name(name) == name
    assert is_cluster_name(name)


@pytest.mark.parametrize(("name", "rule"), BAD_NAMES, ids=[repr(n[:20]) for n, _ in BAD_NAMES])
def test_bad_cluster_names_are_refused_with_one_line(name: str, rule: str):
    name = "/tmp/x" if name == "ABSOLUTE" else name
    with pytest.raises(InputError) as info:
        check_cluster_name(name)
    msg = str(info.value)
    assert info.value.reason == "bad-input"
    assert msg.startswith(f"cluster name {shown(name)} ") and rule in msg, msg
    assert "\n" not in msg and len(msg) < 300
    assert not is_cluster_name(name)


def test_long_values_are_shown_truncated():
    msg = str(pytest.raises(InputError, check_cluster_name, "y" * 5000).value)
    assert "(5000 characters)" in msg and len(msg) < 200


def test_non_strings_are_refused():
    for value in (None, 5, b"fritz"):
        with pytest.raises(InputError, match="is not a string"):
            check_cluster_name(value)


@pytest.mark.parametrize(("key", "rule"), [
    (("fritz", -1, 1675954353), "job id -1 is negative"),
    (("fritz", 1, -1), "start time -1 is negative"),
    (("fritz", True, 1), "job id True is not an integer but bool"),
    (("fritz", 1, False), "start time False is not an integer"),
    (("fritz", 2**63, 1), "job id 9223372036854775808 is larger than 2**63 - 1"),
    (("fritz", 1.0, 1), "is not an integer but float"),
    (("fritz", "7", 1), "is not an integer but str"),
    (("fritz", 1), "is not a (cluster, jobId, startTime) triple"),
    (("../x", 1, 1), "cluster name '../x' contains '/'"),
])
def test_bad_job_keys_are_refused(key: Any, rule: str):
    with pytest.raises(InputError) as info:
        check_job_key(key)
    assert rule in str(info.value) and info.value.reason == "bad-input"


def test_job_key_bounds_pass():
    import numpy as np

    assert check_job_key(("fritz", 0, 0)) == ("fritz", 0, 0)
    assert check_job_key(("fritz", 2**63 - 1, 2**63 - 1)) == ("fritz", 2**63 - 1, 2**63 - 1)
    key = check_job_key(("fritz", np.int64(5), np.int64(6)))
    assert key == ("fritz", 5, 6) and type(key[1]) is int


# -- ccarchive import ---------------------------------------------------------------------------------

def _import_inputs(inputs: Path, cluster: str, job_id: int | None = None) -> list[str]:
    """meta.json naming ``cluster`` (and ``job_id``), a cluster config of the same name, data.json."""
    inputs.mkdir(exist_ok=True)
    meta = json.loads((IMPORT / "meta-fritzMinimal.input").read_bytes())
    meta["cluster"] = cluster
    if job_id is not None:
        meta["jobId"] = job_id
    config = json.loads((IMPORT / "cluster-fritz.json").read_bytes())
    config["name"] = cluster
    (inputs / "meta.json").write_text(json.dumps(meta))
    (inputs / "cluster.json").write_text(json.dumps(config))
    return ["--cluster-config", str(inputs / "cluster.json"), str(inputs / "meta.json"),
            str(IMPORT / "data-fritzMinimal.json")]


def _existing_archive(path: Path) -> Path:
    arch = open_archive(str(path), create=True)
    arch.store_cluster(next(c for c in fixture_clusters() if c.name == "emmy"))
    return path


@pytest.mark.parametrize("name", ["../../ESCAPED", "ABSOLUTE", "a\x00b", "x" * 5000, ".", "..", "a\\b", "a\nb"],
                         ids=["relative", "absolute", "nul", "5000-chars", "dot", "dotdot", "backslash", "newline"])
def test_import_refuses_a_traversing_cluster_and_writes_nothing(tmp_path: Path, name: str, capsys):
    name = _name(name, tmp_path)
    archive = _existing_archive(tmp_path / "work" / "archive")
    args = _import_inputs(tmp_path / "in", name)
    before = tree(tmp_path)
    rc = main(["import", "--archive", str(archive), *args])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    assert err.startswith("ccarchive import: error: cluster name ") and shown(name) in err, err
    assert tree(tmp_path) == before  # nothing outside the archive, nothing inside it (no cluster.json)


def test_import_without_cluster_config_does_not_read_a_config_outside(tmp_path: Path, capsys):
    """No --cluster-config: the archive is asked for ``../outside/cluster.json``, which exists."""
    archive = _existing_archive(tmp_path / "archive")
    (tmp_path / "outside").mkdir()
    config = {**json.loads((IMPORT / "cluster-fritz.json").read_bytes()), "name": "../outside"}
    (tmp_path / "outside" / "cluster.json").write_text(json.dumps(config))
    args = _import_inputs(tmp_path / "in", "../outside")
    before = tree(tmp_path)
    rc = main(["import", "--archive", str(archive), *args[2:]])
    _, err = capsys.readouterr()
    assert rc == 1 and err.count("\n") == 1 and "cluster name '../outside' contains '/'" in err, err
    assert tree(tmp_path) == before


def test_import_of_a_negative_job_id_stores_no_cluster_config(tmp_path: Path, capsys):
    """The job key is checked before the missing cluster config is stored."""
    archive = _existing_archive(tmp_path / "archive")
    args = _import_inputs(tmp_path / "in", "fritz", job_id=-5)
    before = tree(tmp_path)
    rc = main(["import", "--archive", str(archive), *args])
    _, err = capsys.readouterr()
    assert rc == 1 and err.count("\n") == 1 and "job id -5 is negative" in err, err
    assert tree(tmp_path) == before
    assert not (archive / "fritz").exists()


def test_import_of_a_bad_name_does_not_create_a_new_archive(tmp_path: Path, capsys):
    """A refused import into a path that is not an archive yet leaves no empty archive behind."""
    args = _import_inputs(tmp_path / "in", "../../ESCAPED")
    rc = main(["import", "--archive", str(tmp_path / "new-archive"), *args])
    _, err = capsys.readouterr()
    assert rc == 1 and err.count("\n") == 1 and "cluster name '../../ESCAPED'" in err, err
    assert not (tmp_path / "new-archive").exists()


def test_show_refuses_a_traversing_key(tmp_path: Path, capsys):
    archive = _existing_archive(tmp_path / "archive")
    outside = tmp_path / "1" / "002" / "3"
    outside.mkdir(parents=True)
    (outside / "meta.json").write_bytes(fixture_jobs()[0].meta)  # what "../1002/3" would reach
    rc = main(["show", str(archive), "../1002/3", "--meta-json"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err == ("ccarchive show: error: cluster name '..' is a relative path component "
                   "(cluster names become archive paths)\n")


# -- every backend ---------------------------------------------------------------------------------------

BACKENDS = ["file", "memory", "sqlite", "parquet"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    kind = request.param
    if kind == "memory":
        url = f"memory://ccarchive-names-{uuid.uuid4().hex}/archive"
    else:
        url = {"file": f"file://{tmp_path / 'archive'}", "sqlite": f"sqlite://{tmp_path / 'archive.db'}",
               "parquet": f"parquet+{tmp_path / 'dataset'}"}[kind]
    arch = open_archive(url, create=True)
    yield kind, arch
    if kind == "memory":
        arch.fs.rm(arch.root, recursive=True)  # type: ignore[attr-defined]
    if kind == "sqlite":
        arch.close()  # type: ignore[attr-defined]


def _renamed(raw: RawJob, cluster: str, job_id: int | None = None) -> tuple[tuple[str, int, int], bytes, bytes]:
    """(key, meta.json, data.json) of a fixture job moved to another cluster."""
    job = decode_job_meta(raw.meta)
    job.cluster = cluster
    if job_id is not None:
        job.job_id = job_id
    return (cluster, job.job_id, job.start_time), encode_job_meta(job), small_data(raw)


def name_operations(arch: Any, cluster: Cluster, raw: RawJob, name: str) -> dict[str, Callable[[], object]]:
    """Every archive method that takes a cluster name or a job key, called with ``name``."""
    key, meta, data = _renamed(raw, name, job_id=1002)
    return {
        "store_cluster": lambda: arch.store_cluster(dataclasses.replace(cluster, name=name)),
        "write_encoded": lambda: arch.write_encoded(key, data, meta),
        "has_cluster": lambda: arch.has_cluster(name),
        "load_cluster": lambda: arch.load_cluster(name),
        "load_cluster_bytes": lambda: arch.load_cluster_bytes(name),
        "exists": lambda: arch.exists(key),
        "load_meta": lambda: arch.load_meta(key),
        "load_meta_bytes": lambda: arch.load_meta_bytes(key),
        "load_data": lambda: arch.load_data(key),
        "load_data_bytes": lambda: arch.load_data_bytes(key),
        "iter_job_keys": lambda: list(arch.iter_job_keys(name)),
        "iter_jobs": lambda: list(arch.iter_jobs(name)),
        "list_entries": lambda: list(arch.list_entries(name)),
        "delete_job": lambda: arch.delete_job(key),
    }


def _plant_outside_job(tmp_path: Path, raw: RawJob) -> None:
    """cluster.json and a complete job at ``tmp_path/outside``: what ``../outside`` from the file
    archive would reach, so an unchecked read would succeed instead of failing."""
    _, meta, data = _renamed(raw, "../outside", job_id=1002)
    d = tmp_path / "outside" / "1" / "002" / str(decode_job_meta(meta).start_time)
    d.mkdir(parents=True)
    (d / "meta.json").write_bytes(meta)
    (d / "data.json").write_bytes(data)
    (tmp_path / "outside" / "cluster.json").write_bytes((IMPORT / "cluster-fritz.json").read_bytes())


@pytest.mark.parametrize("name", ["../outside", "ABSOLUTE", ".", "..", "a\x00b", "a/b", ".hidden", "a\nb", "x" * 5000])
def test_every_backend_refuses_bad_cluster_names_on_write_and_read(backend: tuple[str, Any], tmp_path: Path,
                                                                  name: str):
    kind, arch = backend
    name = _name(name, tmp_path)
    raw = next(j for j in fixture_jobs() if j.key[0] == "fritz")
    fritz = next(c for c in fixture_clusters() if c.name == "fritz")
    if kind == "file":
        _plant_outside_job(tmp_path, raw)
    arch.store_cluster(fritz)
    before = tree(tmp_path)
    for op, call in name_operations(arch, fritz, raw, name).items():
        with pytest.raises(InputError) as info:
            call()
        assert info.value.reason == "bad-input", op
        assert str(info.value).startswith(f"cluster name {shown(name)} "), (op, str(info.value))
    assert tree(tmp_path) == before
    assert arch.clusters() == ["fritz"]


@pytest.mark.parametrize("key", [("fritz", -1, 1675954353), ("fritz", 398764, -1), ("fritz", True, 1675954353),
                                 ("fritz", 2**63, 1675954353)])
def test_every_backend_refuses_bad_job_ids_and_start_times(backend: tuple[str, Any], tmp_path: Path, key: Any):
    kind, arch = backend
    raw = next(j for j in fixture_jobs() if j.key[0] == "fritz")
    arch.store_cluster(next(c for c in fixture_clusters() if c.name == "fritz"))
    before = tree(tmp_path)
    calls: dict[str, Callable[[], object]] = {
        "write_encoded": lambda: arch.write_encoded(key, small_data(raw), raw.meta),
        "exists": lambda: arch.exists(key), "load_meta": lambda: arch.load_meta(key),
        "load_meta_bytes": lambda: arch.load_meta_bytes(key), "load_data_bytes": lambda: arch.load_data_bytes(key),
        "delete_job": lambda: arch.delete_job(key),
    }
    for op, call in calls.items():
        with pytest.raises(InputError, match=r"^(job id|start time) ") as info:
            call()
        assert info.value.reason == "bad-input", op
    assert tree(tmp_path) == before


def test_every_backend_stores_and_reads_real_cluster_names(backend: tuple[str, Any]):
    kind, arch = backend
    raw = next(j for j in fixture_jobs() if j.key[0] == "fritz")
    fritz = next(c for c in fixture_clusters() if c.name == "fritz")
    keys = []
    for name in GOOD_NAMES:
        key, meta, data = _renamed(raw, name)
        arch.store_cluster(dataclasses.replace(fritz, name=name))
        arch.write_encoded(key, data, meta)
        keys.append(key)
    assert arch.clusters() == sorted(GOOD_NAMES)
    assert list(arch.iter_job_keys()) == sorted(keys)
    for key in keys:
        name = key[0]
        assert arch.has_cluster(name) and arch.load_cluster(name).name == name
        assert arch.exists(key)
        assert arch.load_meta(key).key == key
        assert arch.load_data(key)["cpu_load"]["node"].num_series == 1
        assert [e.key for e in arch.list_entries(name)] == [key]
        assert list(arch.iter_job_keys(name)) == [key]


def test_parquet_refuses_start_times_beyond_its_month_partitions(tmp_path: Path):
    arch = open_archive(f"parquet+{tmp_path / 'dataset'}", create=True)
    raw = next(j for j in fixture_jobs() if j.key[0] == "fritz")
    job = decode_job_meta(raw.meta)
    job.start_time = 253402300800  # 10000-01-01
    with pytest.raises(InputError, match="after the year 9999"):
        arch.write_encoded(job.key, small_data(raw), encode_job_meta(job))
    assert not (tmp_path / "dataset" / "jobs").exists()


def test_file_listing_skips_directories_that_are_no_cluster_or_job(tmp_path: Path):
    arch = open_archive(str(tmp_path / "archive"), create=True)
    raw = next(j for j in fixture_jobs() if j.key[0] == "fritz")
    arch.write_encoded(raw.key, small_data(raw), raw.meta)
    for rel in ["a=b/1/002/3", ".hidden/1/002/3", "fritz/1/2/3", "fritz/-1/002/3", "fritz/1/002/+3", "fritz/01/002/3"]:
        d = tmp_path / "archive" / rel
        d.mkdir(parents=True)
        (d / "meta.json").write_bytes(raw.meta)
    assert arch.clusters() == ["fritz"]
    assert list(arch.iter_job_keys()) == [raw.key]
    assert [e.key for e in arch.list_entries("fritz")] == [raw.key]


def test_sqlite_listing_skips_rows_other_tools_wrote_with_bad_keys(tmp_path: Path):
    db = tmp_path / "archive.db"
    arch = open_archive(f"sqlite://{db}", create=True)
    raw = next(j for j in fixture_jobs() if j.key[0] == "fritz")
    arch.write_encoded(raw.key, small_data(raw), raw.meta)
    with sqlite3.connect(db) as con:
        for cluster, job_id in [("../x", 1), ("fritz", -7), ("", 2)]:
            con.execute("INSERT INTO jobs (job_id, cluster, start_time, meta_json, data_json, created_at, "
                        "updated_at) VALUES (?, ?, 1, x'7b7d', x'7b7d', 0, 0)", (job_id, cluster))
    assert arch.clusters() == ["fritz"]
    assert list(arch.iter_job_keys()) == [raw.key]
    assert [e.key for e in arch.list_entries("fritz")] == [raw.key]
    arch.close()  # type: ignore[attr-defined]


# -- the pipeline ------------------------------------------------------------------------------------------

def test_pipeline_fails_a_traversing_job_db_row_with_bad_input(tmp_path: Path):
    """A job DB row with cluster ``../evil``, and a cluster.json named ``../evil`` at the place it
    would reach: the job fails with reason bad-input, nothing is written, the next job archives."""
    from ccarchive.demo import embedded_cluster
    from ccarchive.jobdb import JobDB
    from ccarchive.pipeline import Archiver, RetryPolicy
    from ccarchive.sources.synthetic import synthetic_job
    from ccarchive.statestore import StateStore
    from ccarchive.worker import WorkerConfig

    fritz = embedded_cluster("fritz")
    arch = open_archive(str(tmp_path / "archive"), create=True)
    arch.store_cluster(fritz)
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "cluster.json").write_bytes(
        json.dumps({**json.loads((IMPORT / "cluster-fritz.json").read_bytes()), "name": "../evil"}).encode())
    start = int(time.time()) // 3600 * 3600 - 86400
    evil = synthetic_job(fritz, "main", 4242, start, 1, 600)
    evil.cluster = "../evil"
    good = synthetic_job(fritz, "main", 4243, start, 1, 600)
    db = JobDB.create(tmp_path / "job.db")
    evil_id, good_id = db.insert_jobs([evil, good])
    before = {k: v for k, v in tree(tmp_path).items() if not k.startswith(("job.db", "state.db"))}

    config = WorkerConfig(job_db=str(tmp_path / "job.db"), archive_url=f"file://{tmp_path / 'archive'}",
                          state_db=str(tmp_path / "state.db"), source={"kind": "synthetic", "seed": 0})
    archiver = Archiver(config, retry=RetryPolicy(max_attempts=2, base_s=0.05, cap_s=0.1))
    archiver.start()
    try:
        archiver.trigger(evil_id)
        archiver.trigger(good_id)
        assert archiver.wait_idle(120)
    finally:
        archiver.shutdown(30)

    with sqlite3.connect(tmp_path / "job.db") as con:
        status = dict(con.execute("SELECT id, monitoring_status FROM job"))
    assert status == {evil_id: 2, good_id: 3}
    state = StateStore(tmp_path / "state.db").get(evil_id)
    assert state is not None and state.last_error_reason == "bad-input"
    assert state.last_error_message is not None and "cluster name '../evil' contains '/'" in state.last_error_message
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith(("job.db", "state.db"))}
    new = set(after) - set(before)
    assert f"archive/{job_path(*good.key)}/meta.json" in new
    assert all(k.startswith("archive/fritz/4") for k in new), sorted(new)  # the good job's entry only
    assert {k: v for k, v in after.items() if k in before} == before
