"""Documents from outside, mutated at random: every decoder answers with its own one-line error
(FormatError, ClusterConfigError, ConfigError), never another exception that would reach a user
as a traceback.

The mutations replace, drop or descend into one member at a time, with values that broke
decoders before: integers beyond 64 bits and beyond the float range, non-finite numbers,
containers where scalars belong, lone surrogates.  Seeds are fixed, so a failure reproduces.
"""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from backend_fixtures import FIXTURES, fixture_jobs
from test_config import ENV, EXAMPLE

from ccarchive.cluster import encode_cluster, load_cluster
from ccarchive.config import load_config
from ccarchive.errors import CcArchiveError
from ccarchive.formats.data import decode_job_data, encode_job_data
from ccarchive.formats.meta import decode_job_meta, encode_job_meta

VALUES: list[Any] = [None, True, False, 0, -1, 2**63, -(2**63) - 1, 10**400, -(10**309), 1.5, -0.0, 1e308,
                     math.inf, math.nan, "x", "", "\ud800", "1e999", "-5m", [], {}, [1], [None], {"a": 1}]
ROUNDS = 400


def _mutate(obj: Any, rng: random.Random) -> None:
    """Replace (40 %), drop (10 %) or descend into (50 %) one member of ``obj``."""
    while isinstance(obj, (dict, list)) and obj:
        key = rng.choice(list(obj)) if isinstance(obj, dict) else rng.randrange(len(obj))
        r = rng.random()
        if r < 0.4:
            obj[key] = rng.choice(VALUES)
            return
        if r < 0.5:
            del obj[key]
            return
        obj = obj[key]


def _variants(doc: Any, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(ROUNDS):
        d = copy.deepcopy(doc)
        for _ in range(rng.randint(1, 3)):
            _mutate(d, rng)
        out.append(json.dumps(d))
    return out


def _only_our_errors(decode: Any, texts: list[str]) -> int:
    """Decode each text; returns how many were refused (each with one of ccarchive's errors)."""
    refused = 0
    for text in texts:
        try:
            decode(text)
        except CcArchiveError as e:
            assert "\n" not in str(e), str(e)
            refused += 1
    return refused


@pytest.mark.parametrize("form", ["text", "object"])
def test_mutated_meta_and_data_json(form: str) -> None:
    def meta(text: str) -> None:
        encode_job_meta(decode_job_meta(text.encode() if form == "text" else json.loads(text)))

    def data(text: str) -> None:
        encode_job_data(decode_job_data(text.encode() if form == "text" else json.loads(text)))

    refused = 0
    for k, job in enumerate(fixture_jobs()):
        refused += _only_our_errors(meta, _variants(json.loads(job.meta), 10 + k))
        if len(job.data) < 1 << 20:  # the Go-written fritz jobs (emmy's 13 MB legacy file: too slow to vary)
            refused += _only_our_errors(data, _variants(json.loads(job.data), 20 + k))
    assert refused > ROUNDS // 4  # the mutations do reach the checks


def test_mutated_cluster_json() -> None:
    docs = [json.loads(p.read_text()) for p in sorted((FIXTURES / "archive").glob("*/cluster.json"))]

    def cluster(text: str) -> None:
        encode_cluster(load_cluster(text.encode(), name_hint="x/cluster.json"))

    assert sum(_only_our_errors(cluster, _variants(d, 30 + k)) for k, d in enumerate(docs)) > ROUNDS // 4


def test_mutated_service_config(tmp_path: Path) -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["main"]["db"], doc["archive"]["path"] = str(tmp_path / "job.db"), str(tmp_path / "arch")
    path = tmp_path / "config.json"

    def config(text: str) -> None:
        path.write_text(text)
        load_config(str(path), env=ENV)

    assert _only_our_errors(config, _variants(doc, 40)) > ROUNDS // 4


def test_mutated_job_db_rows_fail_their_job_with_a_named_cause(tmp_path: Path) -> None:
    """Rows of cc-backend's job DB with a value of another type or shape in one column (SQLite
    keeps anything anywhere): the worker reports each job done or failed for a reason it names
    (job DB, cluster config, input), never an internal error, and writes nothing outside the archive."""
    import sqlite3

    from ccarchive.archive import open_archive
    from ccarchive.demo import embedded_cluster
    from ccarchive.jobdb import JobDB
    from ccarchive.sources.synthetic import synthetic_job
    from ccarchive.worker import JobRef, WorkerConfig, archive_one, open_environment

    rng = random.Random(50)
    cluster = embedded_cluster("fritz")
    open_archive(str(tmp_path / "archive"), create=True).store_cluster(cluster)
    db = JobDB.create(tmp_path / "job.db")
    ids = db.insert_jobs([synthetic_job(cluster, "main", 700 + i, 1_767_225_600 + 97 * i, 1, 600, seed=i)
                          for i in range(60)])
    cfg = WorkerConfig(job_db=str(tmp_path / "job.db"), archive_url=str(tmp_path / "archive"),
                       state_db=str(tmp_path / "state.db"), source={"kind": "synthetic"})
    env = open_environment(cfg)
    columns = ["job_id", "cluster", "subcluster", "start_time", "hpc_user", "cluster_partition", "array_job_id",
               "duration", "walltime", "shared", "smt", "num_nodes", "num_hwthreads", "num_acc", "energy",
               "footprint", "energy_footprint", "resources", "meta_data", "submit_time"]
    values: list[Any] = [-1, 0, 2**62, 1.5, "", "x", "../../etc", "a/b", "[]", "{}", "null", "[1]", b"\xff\xfe",
                         '[{"hostname":"f0101","hwthreads":["a"]}]', '[{"hostname":"../x"}]', '{"a": 1e999}',
                         '[{"hostname":"f0101","accelerators":[1]}]', '{"a": "x"}', "NaN"]
    reasons = []
    with sqlite3.connect(tmp_path / "job.db", isolation_level=None) as conn:
        for db_id in ids:
            try:
                conn.execute(f"UPDATE job SET {rng.choice(columns)} = ? WHERE id = ?", (rng.choice(values), db_id))
            except sqlite3.IntegrityError:  # a NOT NULL or UNIQUE column refused it
                pass
            msg = archive_one(JobRef(db_id, 1), cfg, env, lambda: False)
            assert msg.reason != "internal", msg.message
            reasons.append(msg.reason or msg.kind)
    assert {"job-db", "done"} <= set(reasons)
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {"archive", "job.db", "job.db-wal", "job.db-shm", "state.db", "state.db-wal", "state.db-shm"}
