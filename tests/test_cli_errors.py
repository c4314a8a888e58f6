"""Every command, given bad input, answers with exactly one line on stderr and the right exit code.

Each case runs ``python -m ccarchive`` as a subprocess, the way users meet it, and checks: the exit
code (1 for bad input, 2 for usage errors), exactly one non-empty stderr line, no "Traceback", and
that the line is the precise message for the case, never the error boundary's last resort
("internal error").  Damaged archives are copies of cc-backend's fixture archive with one file
broken; nothing here needs a network or a server except the busy-port case (a socket of the test).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ARCHIVE, IMPORT

EMMY_KEY = "emmy/1403244/1608923076"
EMMY_REL = "emmy/1403/244/1608923076"
RUN_TIMEOUT = 120


def _public_key() -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class World:
    """The files the cases point at, built once per module under one temporary directory."""

    def __init__(self, root: Path) -> None:
        from ccarchive.jobdb import JobDB

        self.root = root
        self.good = self._copy_archive("good")
        self.missing = root / "does-not-exist"
        self.empty = root / "empty-dir"
        self.empty.mkdir()
        self.a_file = root / "a-file.txt"
        self.a_file.write_text("just text\n")
        self.v2 = root / "v2-archive"
        self.v2.mkdir()
        (self.v2 / "version.txt").write_text("2\n")
        self.not_archive_root = root / "holds-a-foreign-archive-dir"
        (self.not_archive_root / "archive").mkdir(parents=True)
        (self.not_archive_root / "archive" / "notes.txt").write_text("not a job archive\n")
        gz = (ARCHIVE / EMMY_REL / "data.json.gz").read_bytes()
        self.truncated = self._damaged("truncated-gzip", gz[: len(gz) // 2])
        self.bad_gzip = self._damaged("bad-gzip", b"\x1f\x8b" + b"this is no deflate stream" * 4)
        self.not_json = self._damaged("not-json", gzip.compress(b"this is not JSON " * 200))
        self.wrong_shape = self._damaged("wrong-shape", gzip.compress(b"[" + b"1, " * 1000 + b"2]"))
        self.bad_meta = self._copy_archive("bad-meta")
        (self.bad_meta / EMMY_REL / "meta.json").write_text('{"jobId": 1403244, "cluster": ')

        self.job_db = root / "job.db"
        JobDB.create(self.job_db).close()
        self.text_db = root / "text.db"
        self.text_db.write_text("not a database\n")
        self.corrupt_db = root / "corrupt.db"
        self.corrupt_db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4080)

        self.cfg_ok = self._config("ok.json", {"ccarchive": {"sources": {"*": {"kind": "synthetic"}}}})
        self.cfg_no_source = self._config("no-source.json", {})
        self.cfg_bad = root / "malformed.json"
        self.cfg_bad.write_text('{"main": {"db": "x",}}')
        self.unused_port = _free_port()
        self.cfg_store_down = self._config("store-down.json", {"metric-store-external": [
            {"scope": "*", "url": f"http://127.0.0.1:{self.unused_port}", "token": "t0ken"}]})
        self.busy_port = _free_port()
        self.cfg_busy = self._config("busy.json", {"ccarchive": {"sources": {"*": {"kind": "synthetic"}},
                                                                 "listen": f"127.0.0.1:{self.busy_port}"}})

        meta = json.loads((IMPORT / "meta-fritzMinimal.input").read_text())
        self.meta_nul = self._json("meta-nul.json", {**meta, "cluster": "fri\u0000tz"})
        self.meta_long = self._json("meta-long.json", {**meta, "cluster": "c" * 5000})
        self.meta_bad = root / "meta-malformed.json"
        self.meta_bad.write_text('{"jobId": 1,')
        self.deep = root / "deep.json"
        self.deep.write_text("[" * 100_000 + "]" * 100_000)
        self.meta = IMPORT / "meta-fritzMinimal.input"
        self.data = IMPORT / "data-fritzMinimal.json"
        self.cluster_cfg = IMPORT / "cluster-fritz.json"

        self.no_s3fs = root / "no-s3fs"
        (self.no_s3fs / "s3fs").mkdir(parents=True)
        (self.no_s3fs / "s3fs" / "__init__.py").write_text('raise ImportError("No module named \'s3fs\'")\n')
        self.no_matplotlib = root / "no-matplotlib"
        (self.no_matplotlib / "matplotlib").mkdir(parents=True)
        (self.no_matplotlib / "matplotlib" / "__init__.py").write_text(
            'raise ImportError("No module named \'matplotlib\'")\n')
        self.jwt_key = _public_key()

    def _copy_archive(self, name: str) -> Path:
        dst = self.root / name
        shutil.copytree(ARCHIVE, dst)
        return dst

    def _damaged(self, name: str, data_gz: bytes) -> Path:
        dst = self._copy_archive(name)
        (dst / EMMY_REL / "data.json.gz").write_bytes(data_gz)
        return dst

    def _config(self, name: str, sections: dict) -> Path:
        doc = {"main": {"db": str(self.job_db)}, "archive": {"kind": "file", "path": str(self.good)}, **sections}
        return self._json(name, doc)

    def _json(self, name: str, doc: dict) -> Path:
        p = self.root / name
        p.write_text(json.dumps(doc))
        return p


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("cli-errors"))


@dataclass
class Case:
    """``args(world)`` run as ``ccarchive ...``; ``message`` must be in the one stderr line."""

    name: str
    args: Callable[[World], list[str]]
    code: int
    message: str
    env: Callable[[World], dict[str, str]] = field(default=lambda w: {})

    @property
    def command(self) -> str:
        return self.name.split("-")[0]


def _no_s3fs(w: World) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(w.no_s3fs), os.environ.get("PYTHONPATH")]))}


def _no_matplotlib(w: World) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(w.no_matplotlib), os.environ.get("PYTHONPATH")]))}


def _jwt(w: World) -> dict[str, str]:
    return {"JWT_PUBLIC_KEY": w.jwt_key}


S = str  # paths become arguments
SYNTH = ["--source", "synthetic"]

CASES = [
    # -- serve
    Case("serve-missing-config", lambda w: ["serve", "--config", S(w.missing)], 1, "cannot read"),
    Case("serve-malformed-config", lambda w: ["serve", "--config", S(w.cfg_bad), "--check"], 1, "malformed JSON"),
    Case("serve-config-is-directory", lambda w: ["serve", "--config", S(w.empty), "--check"], 1, "cannot read"),
    Case("serve-no-jwt-key", lambda w: ["serve", "--config", S(w.cfg_ok), "--check"], 1, "JWT_PUBLIC_KEY is not set"),
    Case("serve-bad-jwt-key", lambda w: ["serve", "--config", S(w.cfg_ok), "--check"], 1,
         "JWT_PUBLIC_KEY: not valid base64", env=lambda w: {"JWT_PUBLIC_KEY": "not base64!"}),
    Case("serve-no-metric-source", lambda w: ["serve", "--config", S(w.cfg_no_source), "--check"], 1,
         "no metric source", env=_jwt),
    Case("serve-unknown-set-key", lambda w: ["serve", "--config", S(w.cfg_ok), "--check", "--set", "nokey=1"], 1,
         "ccarchive.nokey: unknown key", env=_jwt),
    Case("serve-bad-listen", lambda w: ["serve", "--config", S(w.cfg_ok), "--check", "--listen", "8090"], 1,
         "ccarchive.listen: expected \"host:port\"", env=_jwt),
    Case("serve-busy-port", lambda w: ["serve", "--config", S(w.cfg_busy)], 1,
         "Address already in use", env=_jwt),
    Case("serve-probe-store-down", lambda w: ["serve", "--config", S(w.cfg_store_down), "--probe"], 1,
         "probe failed: metric source '*' (cc-metric-store", env=_jwt),
    # -- demo
    Case("demo-zero-jobs", lambda w: ["demo", "--jobs", "0"], 1, "--jobs must be at least 1"),
    Case("demo-jobs-not-a-number", lambda w: ["demo", "--jobs", "many"], 2, "invalid int value: 'many'"),
    Case("demo-workdir-is-a-file", lambda w: ["demo", "--workdir", S(w.a_file), "--no-progress"], 1,
         "exists and is not a directory"),
    Case("demo-archive-dir-not-an-archive", lambda w: ["demo", "--workdir", S(w.not_archive_root), "--no-progress"],
         1, "has no version.txt but is not empty"),
    # -- archive
    Case("archive-without-source-or-config", lambda w: ["archive", "--job-db", S(w.job_db), "--archive", S(w.good),
                                                        "--id", "1"], 2, "no metric source"),
    Case("archive-without-archive", lambda w: ["archive", "--job-db", S(w.job_db), "--id", "1", *SYNTH], 2,
         "no archive: give --archive URL or --config FILE"),
    Case("archive-without-job-db", lambda w: ["archive", "--archive", S(w.good), "--id", "1", *SYNTH], 2,
         "no job DB"),
    Case("archive-no-selection", lambda w: ["archive", "--job-db", S(w.job_db), *SYNTH], 2,
         "one of the arguments --id --job-id --from is required"),
    Case("archive-bad-iso-time", lambda w: ["archive", "--job-db", S(w.job_db), "--from", "2026-13-45",
                                            "--to", "0", *SYNTH], 2, "'2026-13-45' is neither Unix seconds nor"),
    Case("archive-bad-unix-time", lambda w: ["archive", "--job-db", S(w.job_db), "--from", "0",
                                             "--to", "12x", *SYNTH], 2, "'12x' is neither Unix seconds nor"),
    Case("archive-from-without-to", lambda w: ["archive", "--job-db", S(w.job_db), "--from", "2026-01-01", *SYNTH],
         2, "--from needs --to"),
    Case("archive-job-id-without-cluster", lambda w: ["archive", "--job-db", S(w.job_db), "--job-id", "5", *SYNTH],
         2, "--job-id needs --cluster and --start-time"),
    Case("archive-unknown-job", lambda w: ["archive", "--job-db", S(w.job_db), "--archive", S(w.good), "--id", "42",
                                           *SYNTH], 1, "has no job with id 42"),
    Case("archive-unknown-job-key", lambda w: ["archive", "--job-db", S(w.job_db), "--archive", S(w.good),
                                               "--job-id", "5", "--cluster", "nope", "--start-time", "1", *SYNTH], 1,
         "job nope/5/1: not in"),
    Case("archive-missing-job-db", lambda w: ["archive", "--job-db", S(w.missing), "--archive", S(w.good),
                                              "--id", "1", *SYNTH], 1, "does not exist"),
    Case("archive-text-file-as-job-db", lambda w: ["archive", "--job-db", S(w.text_db), "--archive", S(w.good),
                                                   "--id", "1", *SYNTH], 1, "file is not a database"),
    Case("archive-empty-archive-dir", lambda w: ["archive", "--job-db", S(w.job_db), "--archive", S(w.empty),
                                                 "--id", "1", *SYNTH], 1, "not a job archive (no version.txt)"),
    Case("archive-wrong-archive-version", lambda w: ["archive", "--job-db", S(w.job_db), "--archive", S(w.v2),
                                                     "--id", "1", *SYNTH], 1, "unsupported job archive version '2'"),
    Case("archive-unknown-source-kind", lambda w: ["archive", "--job-db", S(w.job_db), "--archive", S(w.good),
                                                   "--id", "1", "--source", "influx"], 1, "unknown kind 'influx'"),
    Case("archive-malformed-source-json", lambda w: ["archive", "--job-db", S(w.job_db), "--archive", S(w.good),
                                                     "--id", "1", "--source", '{"kind": '], 1,
         "--source: malformed JSON"),
    Case("archive-source-without-url", lambda w: ["archive", "--job-db", S(w.job_db), "--archive", S(w.good), "--id",
                                                  "1", "--source", '{"kind": "cc-metric-store"}'], 1, "needs \"url\""),
    Case("archive-missing-config", lambda w: ["archive", "--config", S(w.missing), "--id", "1"], 1, "cannot read"),
    Case("archive-malformed-config", lambda w: ["archive", "--config", S(w.cfg_bad), "--id", "1"], 1, "malformed JSON"),
    Case("archive-config-without-source", lambda w: ["archive", "--config", S(w.cfg_no_source), "--id", "1"], 1,
         "no metric source: set metric-store-external or ccarchive.sources"),
    Case("archive-config-unknown-job", lambda w: ["archive", "--config", S(w.cfg_ok), "--id", "7"], 1,
         "has no job with id 7"),
    Case("archive-config-archive-override-empty", lambda w: ["archive", "--config", S(w.cfg_ok), "--archive",
                                                             S(w.empty), "--id", "7"], 1, "not a job archive"),
    # -- retry
    Case("retry-without-source-or-config", lambda w: ["retry", "--job-db", S(w.job_db), "--archive", S(w.good)], 2,
         "no metric source"),
    Case("retry-bad-since", lambda w: ["retry", "--job-db", S(w.job_db), "--since", "yesterday", *SYNTH], 2,
         "'yesterday' is neither Unix seconds nor"),
    Case("retry-corrupt-job-db", lambda w: ["retry", "--job-db", S(w.corrupt_db), "--archive", S(w.good), *SYNTH],
         1, "job DB"),
    Case("retry-config-without-source", lambda w: ["retry", "--config", S(w.cfg_no_source)], 1, "no metric source"),
    Case("retry-missing-archive", lambda w: ["retry", "--job-db", S(w.job_db), "--archive", S(w.missing), *SYNTH], 1,
         "not a job archive"),
    # -- status
    Case("status-without-job-db", lambda w: ["status"], 2, "no job DB: give --job-db PATH or --config FILE"),
    Case("status-missing-job-db", lambda w: ["status", "--job-db", S(w.missing)], 1, "does not exist"),
    Case("status-directory-as-job-db", lambda w: ["status", "--job-db", S(w.empty)], 1, "is not a file"),
    Case("status-text-file-as-job-db", lambda w: ["status", "--job-db", S(w.text_db)], 1, "file is not a database"),
    Case("status-corrupt-job-db", lambda w: ["status", "--job-db", S(w.corrupt_db)], 1, "job DB"),
    Case("status-tiny-file-as-job-db", lambda w: ["status", "--job-db", S(w.good / "version.txt")], 1, "job DB"),
    Case("status-malformed-config", lambda w: ["status", "--config", S(w.cfg_bad)], 1, "malformed JSON"),
    # -- import
    Case("import-missing-meta", lambda w: ["import", "--archive", S(w.root / "imp1"), S(w.missing), S(w.data)], 1,
         "no such file"),
    Case("import-directory-as-data", lambda w: ["import", "--archive", S(w.root / "imp2"), S(w.meta), S(w.empty)], 1,
         "is a directory"),
    Case("import-malformed-meta", lambda w: ["import", "--archive", S(w.root / "imp3"), S(w.meta_bad), S(w.data)], 1,
         "meta-malformed.json"),
    Case("import-unknown-cluster", lambda w: ["import", "--archive", S(w.root / "imp4"), S(w.meta), S(w.data)], 1,
         "unknown cluster 'fritz'"),
    Case("import-wrong-archive-version", lambda w: ["import", "--archive", S(w.v2), "--cluster-config",
                                                    S(w.cluster_cfg), S(w.meta), S(w.data)], 1,
         "unsupported job archive version '2'"),
    Case("import-file-as-archive", lambda w: ["import", "--archive", S(w.a_file), "--cluster-config",
                                              S(w.cluster_cfg), S(w.meta), S(w.data)], 1, "Not a directory"),
    Case("import-missing-cluster-config", lambda w: ["import", "--archive", S(w.root / "imp5"), "--cluster-config",
                                                     S(w.missing), S(w.meta), S(w.data)], 1, "no such file"),
    Case("import-nul-in-cluster-name", lambda w: ["import", "--archive", S(w.root / "imp6"), S(w.meta_nul),
                                                  S(w.data)], 1, "cluster"),
    Case("import-5000-character-cluster-name", lambda w: ["import", "--archive", S(w.root / "imp7"), "--cluster-config",
                                                          S(w.cluster_cfg), S(w.meta_long), S(w.data)], 1, "cluster"),
    Case("import-deep-json-meta", lambda w: ["import", "--archive", S(w.root / "imp8"), S(w.deep), S(w.data)], 1,
         "deep.json"),
    Case("import-deep-json-data", lambda w: ["import", "--archive", S(w.root / "imp9"), "--cluster-config",
                                             S(w.cluster_cfg), S(w.meta), S(w.deep)], 1, "deep.json"),
    # -- ls
    Case("ls-missing-archive", lambda w: ["ls", S(w.missing)], 1, "not a job archive"),
    Case("ls-empty-dir", lambda w: ["ls", S(w.empty)], 1, "not a job archive (no version.txt)"),
    Case("ls-file-as-archive", lambda w: ["ls", S(w.a_file)], 1, "cannot open the archive: Not a directory"),
    Case("ls-wrong-version", lambda w: ["ls", S(w.v2)], 1, "unsupported job archive version '2'"),
    Case("ls-unknown-protocol", lambda w: ["ls", "nosuchfs://bucket/archive"], 1, "Protocol not known: nosuchfs"),
    Case("ls-empty-url", lambda w: ["ls", ""], 2, "the archive URL is empty"),
    Case("ls-s3-without-s3fs", lambda w: ["ls", "s3://bucket/archive"], 1,
         "s3:// archives need the package s3fs, which is not installed: pip install 'ccarchive[s3]'", env=_no_s3fs),
    Case("ls-unknown-cluster", lambda w: ["ls", S(w.good), "--cluster", "nope"], 1,
         "unknown cluster 'nope' (clusters: alex, emmy, fritz)"),
    Case("ls-malformed-meta-of-one-job", lambda w: ["ls", S(w.bad_meta)], 1, f"{EMMY_REL}/meta.json: "),
    Case("ls-sqlite-url-missing", lambda w: ["ls", f"sqlite://{w.missing}.db"], 1, "no such SQLite archive"),
    Case("ls-job-db-as-archive", lambda w: ["ls", S(w.job_db)], 1, "not a cc-backend SQLite archive"),
    # -- jobs
    Case("jobs-missing-archive", lambda w: ["jobs", S(w.missing)], 1, "not a job archive"),
    Case("jobs-unknown-protocol", lambda w: ["jobs", "nosuchfs://bucket/archive"], 1, "Protocol not known: nosuchfs"),
    Case("jobs-bad-since", lambda w: ["jobs", S(w.good), "--since", "yesterday"], 2,
         "'yesterday' is neither Unix seconds nor"),
    Case("jobs-bad-until", lambda w: ["jobs", S(w.good), "--until", "2026-13-45"], 2,
         "'2026-13-45' is neither Unix seconds nor"),
    Case("jobs-unknown-cluster", lambda w: ["jobs", S(w.good), "--cluster", "nope"], 1,
         "unknown cluster 'nope' (clusters: alex, emmy, fritz)"),
    Case("jobs-unknown-state", lambda w: ["jobs", S(w.good), "--state", "done"], 1, "unknown job state 'done'"),
    Case("jobs-bad-format", lambda w: ["jobs", S(w.good), "--format", "xlsx"], 2, "invalid choice: 'xlsx'"),
    Case("jobs-parquet-to-stdout", lambda w: ["jobs", S(w.good), "--format", "parquet"], 2, "give -o FILE"),
    Case("jobs-unwritable-output", lambda w: ["jobs", S(w.good), "-o", S(w.missing / "jobs.csv")], 1,
         "jobs.csv: cannot write: No such file or directory"),
    Case("jobs-output-is-directory", lambda w: ["jobs", S(w.good), "-o", S(w.empty)], 1, "cannot write"),
    Case("jobs-unknown-column", lambda w: ["jobs", S(w.good), "--columns", "job_id,nope"], 2,
         "--columns: no column 'nope'"),
    Case("jobs-malformed-meta", lambda w: ["jobs", S(w.bad_meta)], 1, f"{EMMY_REL}/meta.json"),
    # -- show
    Case("show-bad-job-key", lambda w: ["show", S(w.good), "emmy/x/1"], 1, "expected CLUSTER/JOBID/STARTTIME"),
    Case("show-unknown-job", lambda w: ["show", S(w.good), "emmy/1/2"], 1, "no archived job emmy/0/001/2"),
    Case("show-unknown-cluster", lambda w: ["show", S(w.good), "nope/1/2"], 1, "no archived job nope/0/001/2"),
    Case("show-missing-archive", lambda w: ["show", S(w.missing), EMMY_KEY], 1, "not a job archive"),
    Case("show-truncated-gzip", lambda w: ["show", S(w.truncated), EMMY_KEY], 1, f"{EMMY_REL}: damaged (EOFError"),
    Case("show-bad-gzip", lambda w: ["show", S(w.bad_gzip), EMMY_KEY], 1, f"{EMMY_REL}"),
    Case("show-data-not-json", lambda w: ["show", S(w.not_json), EMMY_KEY], 1, f"{EMMY_REL}"),
    Case("show-data-wrong-shape", lambda w: ["show", S(w.wrong_shape), EMMY_KEY], 1, f"{EMMY_REL}"),
    Case("show-malformed-meta", lambda w: ["show", S(w.bad_meta), EMMY_KEY], 1, "meta.json"),
    Case("show-json-and-meta-json", lambda w: ["show", S(w.good), EMMY_KEY, "--json", "--meta-json"], 2,
         "--meta-json prints meta.json exactly as stored"),
    # -- plot
    Case("plot-unknown-job", lambda w: ["plot", S(w.good), "emmy/1/2", "-o", S(w.root / "p.png")], 1,
         "no archived job emmy/0/001/2"),
    Case("plot-unknown-metric", lambda w: ["plot", S(w.good), EMMY_KEY, "--metric", "nope", "-o", S(w.root / "p.png")],
         1, "unknown metric 'nope' (the job has: "),
    Case("plot-unknown-scope", lambda w: ["plot", S(w.good), EMMY_KEY, "--scope", "accelerator",
                                          "-o", S(w.root / "p.png")], 1, "no metric has scope 'accelerator'"),
    Case("plot-bad-extension", lambda w: ["plot", S(w.good), EMMY_KEY, "-o", S(w.root / "p.jpg")], 1,
         "unsupported plot format '.jpg': use .png, .svg, .pdf"),
    Case("plot-no-output", lambda w: ["plot", S(w.good), EMMY_KEY], 2, "the following arguments are required: -o"),
    Case("plot-unwritable-output", lambda w: ["plot", S(w.good), EMMY_KEY, "--metric", "mem_used",
                                              "-o", S(w.missing / "p.png")], 1, "p.png: cannot write the plot"),
    Case("plot-roofline-with-metric", lambda w: ["plot", S(w.good), EMMY_KEY, "--roofline", "--metric", "mem_used",
                                                 "-o", S(w.root / "p.png")], 1,
         "--roofline plots flops_any and mem_bw"),
    Case("plot-without-matplotlib", lambda w: ["plot", S(w.good), EMMY_KEY, "-o", S(w.root / "p.png")], 1,
         "ccarchive plot needs the package matplotlib, which is not installed: pip install 'ccarchive[plot]'",
         env=_no_matplotlib),
    # -- convert
    Case("convert-missing-source", lambda w: ["convert", S(w.missing), S(w.root / "conv1")], 1, "not a job archive"),
    Case("convert-target-not-an-archive", lambda w: ["convert", S(w.good), S(w.not_archive_root / "archive")], 1,
         "has no version.txt but is not empty"),
    Case("convert-target-wrong-version", lambda w: ["convert", S(w.good), S(w.v2)], 1,
         "unsupported job archive version '2'"),
    Case("convert-unknown-cluster", lambda w: ["convert", S(w.good), S(w.root / "conv2"), "--cluster", "nope"], 1,
         "no cluster 'nope'"),
    Case("convert-zero-batch", lambda w: ["convert", S(w.good), S(w.root / "conv3"), "--batch-jobs", "0"], 1,
         "--batch-jobs must be at least 1"),
    Case("convert-missing-ccconfig", lambda w: ["convert", f"ccconfig:{w.missing}", S(w.root / "conv4")], 1,
         "no such file"),
    Case("convert-malformed-ccconfig", lambda w: ["convert", f"ccconfig:{w.cfg_bad}", S(w.root / "conv5")], 1,
         "malformed JSON"),
    Case("convert-s3-without-s3fs", lambda w: ["convert", S(w.good), "s3://bucket/copy"], 1,
         "pip install 'ccarchive[s3]'", env=_no_s3fs),
    Case("convert-damaged-job", lambda w: ["convert", S(w.truncated), S(w.root / "conv6"), "--no-progress"], 1,
         "error: job emmy/1403244/1608923076: "),
    # -- verify
    Case("verify-missing-archive", lambda w: ["verify", S(w.missing)], 1, "not a job archive"),
    Case("verify-wrong-version", lambda w: ["verify", S(w.v2)], 1, "unsupported job archive version '2'"),
    Case("verify-unknown-cluster", lambda w: ["verify", S(w.good), "--cluster", "nope"], 1, "unknown cluster 'nope'"),
    Case("verify-s3-without-s3fs", lambda w: ["verify", "s3://bucket/archive"], 1, "pip install 'ccarchive[s3]'",
         env=_no_s3fs),
    Case("verify-truncated-gzip", lambda w: ["verify", "-q", S(w.truncated)], 1,
         f"error: {EMMY_REL}: data file unreadable: EOFError"),
    Case("verify-bad-gzip", lambda w: ["verify", "-q", S(w.bad_gzip)], 1, f"error: {EMMY_REL}: data file unreadable: "),
    Case("verify-data-not-json", lambda w: ["verify", "-q", S(w.not_json)], 1,
         f"error: {EMMY_REL}: data file unreadable: JSONDecodeError"),
    Case("verify-data-wrong-shape", lambda w: ["verify", "-q", S(w.wrong_shape)], 1,
         f"error: {EMMY_REL}/data.json: expected an object of metrics, got list"),
    Case("verify-malformed-meta", lambda w: ["verify", "-q", S(w.bad_meta)], 1,
         f"error: {EMMY_REL}/meta.json: not valid JSON"),
]


def ccarchive(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccarchive", *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)


def test_every_command_has_cases():
    from ccarchive.cli.main import COMMANDS

    assert {c.command for c in CASES} == set(COMMANDS)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line(world: World, case: Case):
    env = {k: v for k, v in os.environ.items() if k != "JWT_PUBLIC_KEY"}
    env.update(case.env(world))
    busy = None
    if case.name == "serve-busy-port":
        busy = socket.socket()
        busy.bind(("127.0.0.1", world.busy_port))
        busy.listen()
    try:
        run = subprocess.run([sys.executable, "-m", "ccarchive", *case.args(world)], capture_output=True, text=True,
                             env=env, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL, cwd=world.root)
    finally:
        if busy is not None:
            busy.close()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert "Traceback" not in run.stderr + run.stdout
    assert "internal error" not in run.stderr, run.stderr
    assert len(lines) == 1, run.stderr
    assert run.returncode == case.code, run.stderr
    line = lines[0]
    assert line.startswith((f"ccarchive {case.command}: ", "error: ")), line
    assert case.message in line, line


def test_damaged_job_does_not_stop_ls_or_verify(world: World, tmp_path: Path):
    """The bad job is reported, the good ones are still listed and checked."""
    from ccarchive.archive import open_archive
    from ccarchive.cluster import load_cluster

    arch = tmp_path / "mixed"
    shutil.copytree(world.truncated, arch)
    src = open_archive(str(world.good))
    job = src.load_meta(("emmy", 1403244, 1608923076))
    data = src.load_data(job)
    job.job_id, job.start_time = 1403245, job.start_time + 100
    dst = open_archive(str(arch))
    dst.store_cluster(load_cluster(src.load_cluster_bytes("emmy"), name_hint="emmy"))
    dst.write_job(job, data)
    listing = ccarchive(["ls", str(arch), "--json"])
    assert listing.returncode == 0  # ls reads meta.json only: the damaged data file does not matter to it
    assert [json.loads(x)["jobId"] for x in listing.stdout.splitlines()] == [1403244, 1403245]
    verify = ccarchive(["verify", "-q", str(arch)])
    assert verify.returncode == 1
    assert verify.stderr.splitlines() == [
        f"error: {EMMY_REL}: data file unreadable: EOFError: "
        "Compressed file ended before the end-of-stream marker was reached"]
    assert "verified 2 jobs in 3 clusters: 1 errors" in verify.stdout


def test_last_resort_is_one_line_and_traceback_only_at_vv(monkeypatch, capsys):
    """An exception nobody expected: one line naming it, exit 1; the traceback only with -vv."""
    from ccarchive.cli import pipeline_cmds
    from ccarchive.cli.main import main

    def broken(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(pipeline_cmds, "_status", broken)
    assert main(["status", "--job-db", "x.db"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["ccarchive status: internal error: TypeError: unsupported operand type(s) for +: "
                                "'int' and 'str' (run with -vv for the traceback)"]
    assert main(["-vv", "status", "--job-db", "x.db"]) == 1
    err = capsys.readouterr().err
    assert "internal error: TypeError" in err and "Traceback (most recent call last)" in err


def test_archive_from_config_uses_its_source_job_db_and_archive(tmp_path: Path):
    """``archive --config`` archives with the config's source into the config's archive; the
    ``--archive`` flag replaces the config's archive."""
    from ccarchive.archive import open_archive
    from ccarchive.demo import DEMO_CLUSTERS, demo_jobs, embedded_cluster
    from ccarchive.jobdb import JobDB

    clusters = {c: embedded_cluster(c) for c in DEMO_CLUSTERS}
    db = JobDB.create(tmp_path / "job.db")
    ids = db.insert_jobs(demo_jobs(8, clusters, seed=3, first_start=1_700_000_000))
    first, second = sorted((db.get_job(i) for i in ids), key=lambda j: j.num_nodes * j.duration)[:2]
    db.close()
    for name in ("from-config", "from-flag"):
        arch = open_archive(str(tmp_path / name), create=True)
        for c in clusters.values():
            arch.store_cluster(c)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "main": {"db": str(tmp_path / "job.db")}, "archive": {"kind": "file", "path": str(tmp_path / "from-config")},
        "ccarchive": {"sources": {"*": {"kind": "synthetic", "seed": 3}}}}))
    run = ccarchive(["archive", "--config", str(config), "--id", str(first.id), "--no-progress"])
    assert run.returncode == 0, run.stderr
    assert open_archive(str(tmp_path / "from-config")).exists(first)
    run = ccarchive(["archive", "--config", str(config), "--archive", str(tmp_path / "from-flag"),
                     "--id", str(second.id), "--no-progress"])
    assert run.returncode == 0, run.stderr
    assert open_archive(str(tmp_path / "from-flag")).exists(second)
    assert not open_archive(str(tmp_path / "from-config")).exists(second)
