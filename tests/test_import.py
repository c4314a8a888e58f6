"""``ccarchive import``: the fritz import pairs and the legacy emmy job, plus bad input."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ccarchive.archive import open_archive
from ccarchive.cli.main import main
from conftest import ARCHIVE, EMMY_JOB, IMPORT

PAIRS = {
    "fritzMinimal": (IMPORT / "meta-fritzMinimal.input", IMPORT / "data-fritzMinimal.json"),
    "fritzError": (IMPORT / "meta-fritzError.input", IMPORT / "data-fritzError.json"),
}
CLUSTER_CFG = {"fritz": IMPORT / "cluster-fritz.json", "emmy": ARCHIVE / "emmy" / "cluster.json"}


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _import(arch: Path, meta: Path, data: Path, cluster: str, capsys) -> tuple[int, str, str]:
    return run_cli("import", "--archive", str(arch), "--cluster-config", str(CLUSTER_CFG[cluster]),
                   str(meta), str(data), capsys=capsys)


def _input_series(doc):
    for metric, scopes in doc.items():
        for scope, jm in scopes.items():
            for s in jm["series"]:
                yield metric, scope, s


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_import_fritz_pair(tmp_path: Path, name: str, capsys):
    meta_p, data_p = PAIRS[name]
    arch_dir = tmp_path / "arch"
    rc, out, err = _import(arch_dir, meta_p, data_p, "fritz", capsys)
    assert rc == 0, err
    golden = json.loads((IMPORT / f"{name}-golden.json").read_text())
    assert f"job fritz/{golden['jobId']}/{golden['startTime']}" in out
    arch = open_archive(str(arch_dir))
    key = ("fritz", golden["jobId"], golden["startTime"])
    job = arch.load_meta(key)
    assert (job.job_id, job.cluster, job.start_time, job.duration) == (
        golden["jobId"], golden["cluster"], golden["startTime"], golden["duration"])
    assert job.monitoring_status == 3
    assert arch.has_cluster("fritz")

    in_doc = json.loads(data_p.read_bytes())
    stored = json.loads(arch.load_data_bytes(key))
    # per-series statistics equal a recomputation from the data (tolerance 0.011)
    n = 0
    for metric, scope, s in _input_series(stored):
        vals = np.array([np.nan if v is None else v for v in s["data"]], dtype=float)
        ok = vals[~np.isnan(vals)]
        st = s["statistics"]
        assert abs(st["avg"] - ok.mean()) <= 0.011, (metric, scope, s.get("id"))
        assert abs(st["min"] - ok.min()) <= 0.011 and abs(st["max"] - ok.max()) <= 0.011
        n += 1
    assert n == sum(1 for _ in _input_series(in_doc))
    # blocks of >= 8 series got statisticsSeries with a mean
    assert stored["cpu_user"]["core"]["statisticsSeries"]["mean"][0] is not None
    # reading back gives the input arrays at archive precision (float32, 2 decimals)
    # (series keep their order: the old fritz fixtures have two socket series both with id "0")
    for metric, scopes in in_doc.items():
        for scope, jm in scopes.items():
            for s, got in zip(jm["series"], stored[metric][scope]["series"], strict=True):
                assert (got["hostname"], got.get("id")) == (s["hostname"], s.get("id"))
                want = [None if v is None else float(format(float(np.float32(v)), ".2f")) for v in s["data"]]
                assert got["data"] == want
    # job statistics within the tolerances of reference §9 (avg 0.1, min/max 0.011) of the input meta
    in_meta = json.loads(meta_p.read_text())
    for metric, st in in_meta["statistics"].items():
        mine = job.statistics[metric]
        assert abs(mine.avg - st["avg"]) <= 0.1 and abs(mine.min - st["min"]) <= 0.011
        assert abs(mine.max - st["max"]) <= 0.011, metric
    # footprint of the fritz config (cpu_load avg, mem_used max, flops_any avg, mem_bw avg)
    assert job.footprint == {
        "cpu_load_avg": job.statistics["cpu_load"].avg,
        "flops_any_avg": job.statistics["flops_any"].avg,
        "mem_bw_avg": job.statistics["mem_bw"].avg,
        "mem_used_max": job.statistics["mem_used"].max,
    }
    rc, out, err = run_cli("verify", str(arch_dir), capsys=capsys)
    assert rc == 0, out + err
    assert "0 errors" in out


def test_import_emmy_legacy(tmp_path: Path, capsys):
    arch_dir = tmp_path / "arch"
    rc, out, err = _import(arch_dir, EMMY_JOB / "meta.json", EMMY_JOB / "data.json.gz", "emmy", capsys)
    assert rc == 0, err
    assert "rapl_power" in err and "not in the cluster config" in err  # kept, reported
    arch = open_archive(str(arch_dir))
    key = ("emmy", 1403244, 1608923076)
    job = arch.load_meta(key)
    in_meta = json.loads((EMMY_JOB / "meta.json").read_text())
    for metric, st in in_meta["statistics"].items():
        if metric == "ipc":  # the legacy ipc statistics are inconsistent with its data
            continue
        mine = job.statistics[metric]
        assert abs(mine.avg - st["avg"]) <= 0.1, metric
        assert abs(mine.min - st["min"]) <= 0.011 and abs(mine.max - st["max"]) <= 0.011, metric
    assert job.statistics["rapl_power"].unit.base == "W"  # unit of the data
    assert "rapl_power_avg" not in (job.footprint or {})
    stored = json.loads(arch.load_data_bytes(key))
    # node scope only, 32 series: statisticsSeries present for every metric
    assert all("statisticsSeries" in stored[m]["node"] for m in stored)
    in_doc = json.loads(gzip.decompress((EMMY_JOB / "data.json.gz").read_bytes()))
    for metric, scope, s in _input_series(in_doc):
        got = next(x for x in stored[metric][scope]["series"] if x["hostname"] == s["hostname"])
        vals = [v for v in s["data"] if v is not None]
        assert abs(got["statistics"]["avg"] - sum(vals) / len(vals)) <= 0.011
    rc, out, err = run_cli("verify", str(arch_dir), capsys=capsys)
    assert rc == 0, out + err


# -- bad input: one line naming the file/job, exit code 1, nothing written --------------------

def _bad_meta(tmp_path: Path, **changes) -> Path:
    doc = json.loads(PAIRS["fritzMinimal"][0].read_text())
    doc.update(changes)
    p = tmp_path / "meta.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing-meta", "no such file"),
        ("malformed", "malformed JSON"),
        ("unknown-subcluster", "unknown subcluster 'nosuch'"),
        ("negative-duration", "negative duration -5"),
        ("foreign-host", "host 'f9999'"),
        ("unknown-cluster", "unknown cluster 'mars'"),
    ],
)
def test_bad_input(tmp_path: Path, case: str, expect: str, capsys):
    meta, data = PAIRS["fritzMinimal"]
    cfg = str(CLUSTER_CFG["fritz"])
    args = None
    if case == "missing-meta":
        meta = tmp_path / "nope.json"
    elif case == "malformed":
        meta = tmp_path / "meta.json"
        meta.write_text('{"jobId": 1,')
    elif case == "unknown-subcluster":
        meta = _bad_meta(tmp_path, subCluster="nosuch")
    elif case == "negative-duration":
        meta = _bad_meta(tmp_path, duration=-5)
    elif case == "foreign-host":
        doc = json.loads(data.read_text())
        doc["cpu_load"]["node"]["series"][0]["hostname"] = "f9999"
        data = tmp_path / "data.json"
        data.write_text(json.dumps(doc))
    elif case == "unknown-cluster":
        meta = _bad_meta(tmp_path, cluster="mars")
        args = ["import", "--archive", str(tmp_path / "arch"), str(meta), str(data)]
    if args is None:
        args = ["import", "--archive", str(tmp_path / "arch"), "--cluster-config", cfg, str(meta), str(data)]
    rc, out, err = run_cli(*args, capsys=capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], err
    arch = tmp_path / "arch"
    if arch.exists():
        assert not [p for p in arch.rglob("*") if p.is_file() and p.name != "version.txt"]


def test_import_subprocess_exit_code_and_message(tmp_path: Path):
    """The installed entry point behaves the same: exit 1, one line on stderr."""
    meta = tmp_path / "meta.json"
    meta.write_text("not json")
    proc = subprocess.run(
        [sys.executable, "-m", "ccarchive.cli.main", "import", "--archive", str(tmp_path / "a"),
         str(meta), str(PAIRS["fritzMinimal"][1])],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("ccarchive import: error: ")
    assert "meta.json: malformed JSON" in proc.stderr


def test_reimport_is_idempotent(tmp_path: Path, capsys):
    meta, data = PAIRS["fritzError"]
    arch_dir = tmp_path / "arch"
    assert _import(arch_dir, meta, data, "fritz", capsys)[0] == 0

    def snapshot():
        return {p.relative_to(arch_dir): gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
                for p in arch_dir.rglob("*") if p.is_file()}

    before = snapshot()
    assert _import(arch_dir, meta, data, "fritz", capsys)[0] == 0
    assert snapshot() == before


def test_import_into_fixture_archive_uses_its_cluster(fixture_archive: Path, tmp_path: Path, capsys):
    meta, data = PAIRS["fritzMinimal"]
    rc, out, err = run_cli("import", "--archive", str(fixture_archive), str(meta), str(data), capsys=capsys)
    assert rc == 0, err
    shutil.rmtree(fixture_archive)
