"""cc-backend's SQLite archive: exact DDL and pragmas, upsert semantics, and rows that
cc-backend's own queries (sqliteBackend.go) read back, checked with plain sqlite3."""

from __future__ import annotations

import gzip
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from backend_fixtures import fixture_clusters, fixture_jobs, small_data

from ccarchive.archive import open_archive
from ccarchive.backends.sqlite import SCHEMA, SqliteArchive
from ccarchive.errors import ArchiveVersionError, ClusterConfigError, InputError
from ccarchive.formats.meta import decode_job_meta

# cc-backend's statements, verbatim (be:pkg/archive/sqliteBackend.go)
GO_LOAD_META = "SELECT meta_json FROM jobs WHERE job_id = ? AND cluster = ? AND start_time = ?"
GO_LOAD_DATA = "SELECT data_json, data_compressed FROM jobs WHERE job_id = ? AND cluster = ? AND start_time = ?"
GO_ITER = ("SELECT job_id, cluster, start_time, meta_json, data_json, data_compressed FROM jobs "
           "ORDER BY cluster, start_time")
GO_EXISTS = "SELECT COUNT(*) FROM jobs WHERE job_id = ? AND cluster = ? AND start_time = ?"
GO_CLUSTERS = "SELECT DISTINCT cluster FROM jobs ORDER BY cluster"


def _filled(path: Path) -> SqliteArchive:
    arch = SqliteArchive(str(path), create=True)
    for c in fixture_clusters():
        arch.store_cluster(c)
    for j in fixture_jobs():
        arch.write_encoded(j.key, j.data, j.meta)
    return arch


def _norm(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def test_ddl_pragmas_and_version_row(tmp_path: Path):
    db = tmp_path / "archive.db"
    SqliteArchive(str(db), create=True).close()
    con = sqlite3.connect(db)
    stored = [_norm(r[0]) for r in con.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                                               "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
    expected = [_norm(s.replace("IF NOT EXISTS ", "")) for s in SCHEMA.split(";") if s.strip()]
    assert stored == expected
    assert "idx_jobs_order" in SCHEMA and "UNIQUE(job_id, cluster, start_time)" in SCHEMA
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT key, value FROM metadata").fetchall() == [("version", "3")]


def test_rows_read_by_cc_backend_queries(tmp_path: Path):
    db = tmp_path / "archive.db"
    _filled(db).close()
    con = sqlite3.connect(db)
    jobs = fixture_jobs()
    for j in jobs:
        cluster, job_id, start = j.key
        (meta,) = con.execute(GO_LOAD_META, (job_id, cluster, start)).fetchone()
        assert bytes(meta) == j.meta
        blob, compressed = con.execute(GO_LOAD_DATA, (job_id, cluster, start)).fetchone()
        assert compressed == (1 if len(j.data) > 2000 else 0)
        assert (gzip.decompress(blob) if compressed else bytes(blob)) == j.data
        assert con.execute(GO_EXISTS, (job_id, cluster, start)).fetchone()[0] == 1
    rows = con.execute(GO_ITER).fetchall()
    assert [(r[1], r[0], r[2]) for r in rows] == sorted((j.key for j in jobs), key=lambda k: (k[0], k[2]))
    assert all(isinstance(r[3], bytes) and isinstance(r[4], bytes) for r in rows)  # BLOB columns
    assert [r[0] for r in con.execute(GO_CLUSTERS)] == ["emmy", "fritz"]
    (cfg,) = con.execute("SELECT config_json FROM clusters WHERE name = 'fritz'").fetchone()
    assert cfg.endswith(b"\n") and b'"name":"fritz"' in cfg


def test_api_reads_back_identical(tmp_path: Path):
    arch = _filled(tmp_path / "a.db")
    jobs = fixture_jobs()
    assert list(arch.iter_job_keys()) == [j.key for j in jobs]
    assert list(arch.iter_job_keys("fritz")) == [j.key for j in jobs if j.key[0] == "fritz"]
    assert [j.key for j in arch.iter_jobs()] == [j.key for j in jobs]
    for j in jobs:
        assert arch.exists(j.key)
        assert arch.load_meta_bytes(j.key) == j.meta
        assert arch.load_data_bytes(j.key) == j.data
        assert bytes(arch.load_data_text(j.key)) == j.data  # gzipped rows inflate into an array
        assert arch.load_meta(j.key).key == j.key
        assert set(arch.load_data(j.key)) == set(__import__("json").loads(j.data))
    assert arch.clusters() == ["alex", "emmy", "fritz"]  # alex: config only (cc-backend would not see it)
    assert arch.load_cluster("emmy").name == "emmy"
    with pytest.raises(ClusterConfigError, match="unknown cluster 'nope'"):
        arch.load_cluster("nope")
    with pytest.raises(InputError, match="no archived job fritz/1/001/2"):
        arch.load_meta(("fritz", 1001, 2))


def test_upsert_keeps_created_at_and_follows_gzip_rule(tmp_path: Path):
    db = tmp_path / "a.db"
    arch = SqliteArchive(str(db), create=True)
    j = next(x for x in fixture_jobs() if x.key[0] == "fritz")
    cluster, job_id, start = j.key
    arch.write_encoded(j.key, small_data(j), j.meta)
    con = sqlite3.connect(db)
    con.execute("UPDATE jobs SET created_at = 1000, updated_at = 1000")
    con.commit()
    before = int(time.time())
    arch.write_encoded(j.key, j.data, j.meta)
    rows = con.execute("SELECT id, created_at, updated_at, data_compressed FROM jobs").fetchall()
    assert len(rows) == 1
    _, created, updated, compressed = rows[0]
    assert created == 1000 and updated >= before and compressed == 1
    arch.write_encoded(j.key, small_data(j, "mem_used"), j.meta)
    blob, compressed = con.execute(GO_LOAD_DATA, (job_id, cluster, start)).fetchone()
    assert compressed == 0 and bytes(blob) == small_data(j, "mem_used")


def test_store_meta_row_without_data_is_not_complete(tmp_path: Path):
    arch = SqliteArchive(str(tmp_path / "a.db"), create=True)
    j = fixture_jobs()[0]
    arch.write_encoded(j.key, j.data, j.meta)
    other = decode_job_meta(j.meta)
    other.job_id += 1
    arch.store_meta(other)
    assert not arch.exists(other) and arch.exists(j.key)
    assert list(arch.iter_job_keys()) == [j.key]
    entries = {e.key: e.names for e in arch.list_entries(j.key[0])}
    assert entries[other.key] == ["meta.json"] and entries[j.key] == ["data.json.gz", "meta.json"]
    with pytest.raises(InputError, match="has no data"):
        arch.load_data(other)
    arch.delete_job(other)
    assert [e.key for e in arch.list_entries(j.key[0])] == [j.key]


def test_open_refuses_wrong_version_foreign_db_and_missing_file(tmp_path: Path):
    db = tmp_path / "a.db"
    SqliteArchive(str(db), create=True).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE metadata SET value = '2' WHERE key = 'version'")
    con.commit()
    with pytest.raises(ArchiveVersionError, match="unsupported job archive version '2'"):
        SqliteArchive(str(db))
    other = tmp_path / "job.db"
    sqlite3.connect(other).execute("CREATE TABLE job (id INTEGER)")
    with pytest.raises(InputError, match="not a cc-backend SQLite archive"):
        open_archive(f"sqlite://{other}")
    with pytest.raises(InputError, match="no such SQLite archive"):
        open_archive(f"sqlite://{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


def test_open_archive_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    db = tmp_path / "a.db"
    _filled(db).close()
    monkeypatch.chdir(tmp_path)
    for url in (f"sqlite://{db}", str(db), "sqlite://a.db", "a.db"):
        arch = open_archive(url)
        assert isinstance(arch, SqliteArchive), url
        assert len(list(arch.iter_job_keys())) == 3


def test_concurrent_writers(tmp_path: Path):
    db = tmp_path / "a.db"
    SqliteArchive(str(db), create=True).close()
    j = next(x for x in fixture_jobs() if x.key[0] == "fritz")
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            arch = SqliteArchive(str(db))  # own connection, as a second process would have
            for i in range(25):
                arch.write_encoded(("fritz", 1000 * offset + i, 1_700_000_000), small_data(j), j.meta)
            arch.close()
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 75
