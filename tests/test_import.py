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


# -- large and hostile data files ----------------------------------------------------------------

#: Runs the command given as its arguments and prints the peak RSS (KiB) of that one child:
#: RUSAGE_CHILDREN of this small wrapper covers exactly the import and nothing else of the test.
_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=600)\n"
    "sys.stderr.write(proc.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, proc.returncode)\n"
)


def _import_peak_rss(arch: Path, cfg: Path, meta: Path, data: Path) -> int:
    """Peak RSS in bytes of ``ccarchive import`` in a fresh process (exit code 0 checked)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "ccarchive.cli.main", "import",
         "--archive", str(arch), "--cluster-config", str(cfg), str(meta), str(data)],
        capture_output=True, text=True, timeout=900,
    )
    kib, rc = proc.stdout.split()
    assert int(rc) == 0, proc.stderr
    return int(kib) * 1024


def _synthetic_pair(tmp_path: Path, name: str, samples: int) -> tuple[Path, Path, Path]:
    """meta.json, data.json and cluster.json of a 64-node fritz job with 10 node-scope metrics of
    ``samples`` samples (2 decimals, some nulls), written the way Go writes them."""
    from ccarchive.cluster import encode_cluster
    from ccarchive.demo import embedded_cluster
    from ccarchive.formats.data import iter_job_data
    from ccarchive.formats.meta import encode_job_meta
    from ccarchive.model import JobMetric
    from ccarchive.sources.synthetic import synthetic_job

    cluster = embedded_cluster("fritz")
    job = synthetic_job(cluster, "main", 4711, 1_767_225_600, 64, (samples - 1) * 60, seed=3)
    rng = np.random.default_rng(0)
    data = {}
    for i, metric in enumerate(cluster.metrics_for("main")[:10]):
        rows = np.round(rng.gamma(2.0, 30.0 * (i + 1), (64, samples)), 2)
        rows[rng.random(rows.shape) < 0.01] = np.nan
        data[metric.name] = {"node": JobMetric(metric.unit, 60, list(job.hostnames), [None] * 64, rows,
                                               np.full(64, samples), np.zeros((64, 3)))}
    paths = tmp_path / f"{name}-meta.json", tmp_path / f"{name}-data.json", tmp_path / "cluster.json"
    paths[0].write_bytes(encode_job_meta(job))
    with paths[1].open("wb") as f:
        for piece in iter_job_data(data):
            f.write(piece)
    paths[2].write_bytes(encode_cluster(cluster))
    return paths


def test_import_large_file_peak_memory(tmp_path: Path, capsys):
    """Peak RSS of importing a ~77 MB data.json (and the same gzipped) stays within three times
    the text above the RSS of importing a tiny one: the text is read into one array, parsed in
    place (samples: 8 bytes each) and dropped; json.loads' object tree needed 8x."""
    meta, small, cfg = _synthetic_pair(tmp_path, "small", 10)
    _, big, _ = _synthetic_pair(tmp_path, "big", 15_000)
    size = big.stat().st_size
    assert 60e6 < size < 100e6
    zipped = tmp_path / "big-data.json.gz"
    zipped.write_bytes(gzip.compress(big.read_bytes(), 1))
    # compile and cache every kernel here first, so no measured run pays for the JIT
    assert run_cli("import", "--archive", str(tmp_path / "warm"), "--cluster-config", str(cfg), str(meta),
                   str(small), capsys=capsys)[0] == 0
    baseline = _import_peak_rss(tmp_path / "a0", cfg, meta, small)
    for data in (big, zipped):
        peak = _import_peak_rss(tmp_path / f"arch-{data.name}", cfg, meta, data)
        assert peak - baseline <= 3 * size, (
            f"{data.name}: peak {peak / 2**20:.0f} MiB, baseline {baseline / 2**20:.0f} MiB, "
            f"text {size / 2**20:.0f} MiB: {(peak - baseline) / size:.2f}x")
    stored = open_archive(str(tmp_path / f"arch-{zipped.name}")).load_data(("fritz", 4711, 1_767_225_600))
    assert stored["cpu_load"]["node"].data.shape == (64, 15_000)


@pytest.mark.parametrize("which", ["meta", "data"])
def test_import_deeply_nested_json(tmp_path: Path, which: str, capsys):
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000)
    meta, data = PAIRS["fritzMinimal"]
    meta, data = (deep, data) if which == "meta" else (meta, deep)
    rc, out, err = _import(tmp_path / "arch", meta, data, "fritz", capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(deep) in lines[0] and "nested" in lines[0], err


def test_import_broken_gzip_data(tmp_path: Path, capsys):
    meta, data = PAIRS["fritzMinimal"]
    broken = tmp_path / "data.json.gz"
    broken.write_bytes(gzip.compress(data.read_bytes())[:-100])
    rc, out, err = _import(tmp_path / "arch", meta, broken, "fritz", capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{broken}: broken gzip data" in lines[0], err
