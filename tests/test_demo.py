"""``ccarchive demo``: the archive it makes verifies clean, a re-run says it is complete in one
line, ``--fresh`` starts over (and only removes a demo), a first run says it is compiling."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest

from ccarchive.cli.batch import BatchSummary
from ccarchive.cli.demo import COMPILE_NOTICE, watch_compiles
from ccarchive.validate import get_validator, validate_cluster

TIMEOUT = 300
# seed 4: four small jobs (1-4 nodes, the fourth a GPU job on alex), a few MB in all
SMALL = ["--jobs", "4", "--seed", "4", "--no-progress"]


def _ccarchive(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccarchive", *args], capture_output=True, text=True,
                          timeout=TIMEOUT)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The work folder of a demo run and its summary."""
    work = tmp_path_factory.mktemp("demo") / "work"
    r = _ccarchive("demo", "--workdir", str(work), *SMALL)
    assert r.returncode == 0, r.stderr
    assert "jobs archived              4" in r.stdout
    return work, r.stdout


@pytest.fixture
def demo_dir(first_run: tuple[Path, str]) -> Path:
    return first_run[0]


def test_demo_archive_verifies_without_errors_or_warnings(demo_dir: Path) -> None:
    r = _ccarchive("verify", str(demo_dir / "archive"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified 4 jobs in 2 clusters: 0 errors, 0 warnings" in r.stdout + r.stderr
    assert len(list((demo_dir / "archive" / "alex").glob("*/*/*/meta.json"))) == 1  # the GPU job


def test_demo_summary_labels_sizes_and_orders_phases(first_run: tuple[Path, str]) -> None:
    out = first_run[1]
    assert "written (gzip + meta.json)" in out and "archive on disk" in out and "warm-up" in out
    phases = [line.split()[3] for line in out.splitlines() if line.strip().startswith("worker time in")]
    assert phases == ["load", "statistics", "encode", "compress", "write", "db"]


def test_rerun_prints_one_line(demo_dir: Path) -> None:
    r = _ccarchive("demo", "--workdir", str(demo_dir), *SMALL)
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        f"ccarchive demo: archive already complete: 4 jobs in {demo_dir / 'archive'} "
        f"({r.stdout.split('(')[1].split(')')[0]}); --fresh rebuilds it"
    ]
    assert "MB on disk" in r.stdout
    assert r.stderr == ""
    j = _ccarchive("demo", "--workdir", str(demo_dir), "--json", *SMALL)
    doc = json.loads(j.stdout)
    assert doc["already_complete"] is True and doc["archived_now"] == 4 and doc["archived"] == 0


def test_fresh_starts_over(demo_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(demo_dir, work)
    (work / "archive" / "fritz" / "stale-marker").write_text("x")
    r = _ccarchive("demo", "--workdir", str(work), "--jobs", "1", "--seed", "4", "--no-progress", "--fresh")
    assert r.returncode == 0, r.stderr
    assert "jobs archived              1" in r.stdout and "(created now)" in r.stdout
    assert not (work / "archive" / "fritz" / "stale-marker").exists()
    assert len(list((work / "archive").glob("*/*/*/*/meta.json"))) == 1


def test_fresh_keeps_an_archive_that_is_not_a_demo(tmp_path: Path) -> None:
    (tmp_path / "archive" / "mycluster").mkdir(parents=True)
    r = _ccarchive("demo", "--workdir", str(tmp_path), "--fresh", *SMALL)
    assert r.returncode != 0
    assert r.stderr.startswith("ccarchive demo: error: --fresh: ") and "Traceback" not in r.stderr
    assert (tmp_path / "archive" / "mycluster").is_dir()


def test_embedded_cluster_configs_pass_the_unchanged_schema() -> None:
    for name in ("fritz", "alex"):
        doc = json.loads(resources.files("ccarchive").joinpath("clusters", f"{name}.json").read_bytes())
        assert [e.message for e in get_validator("cluster").iter_errors(doc)] == []
        assert validate_cluster(doc).warnings == []


def test_compile_notice_once_and_only_on_a_compile() -> None:
    from numba import njit

    out = io.StringIO()
    with watch_compiles(out) as watch:
        f = njit(lambda x: x + 1)
        assert f(1) == 2 and f(2) == 3
        assert f(1.5) == 2.5  # a second signature: a second compile, no second notice
    assert out.getvalue() == COMPILE_NOTICE + "\n"
    assert watch.compiled == 2
    out2 = io.StringIO()
    with watch_compiles(out2) as watch2:
        assert f(3) == 4  # compiled already
    assert out2.getvalue() == "" and watch2.compiled == 0


def test_compile_notice_not_printed_for_kernels_from_the_disk_cache(tmp_path: Path) -> None:
    """A first process compiles into an empty NUMBA_CACHE_DIR and says so; the second loads the
    cached code and prints nothing."""
    (tmp_path / "kern.py").write_text(textwrap.dedent("""
        from numba import njit

        @njit(cache=True)
        def twice(x):
            return 2 * x
    """))
    script = textwrap.dedent("""
        import sys
        from ccarchive.cli.demo import watch_compiles
        with watch_compiles(sys.stdout) as w:
            import kern
            assert kern.twice(21) == 42
        print("compiled", w.compiled)
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [COMPILE_NOTICE, "compiled 1"]
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["compiled 0"]


def test_throughput_excludes_the_warm_up() -> None:
    s = BatchSummary(archived=10, wall_s=7.0, warmup_s=2.0, phases={"db": 0.1, "load": 1.0, "write": 0.5})
    assert s.jobs_per_s == pytest.approx(2.0)
    assert s.to_dict()["warmup_s"] == 2.0 and s.to_dict()["jobs_per_s"] == pytest.approx(2.0)
    buf = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, buf
    try:
        s.print("t")
    finally:
        sys.stdout = sys_stdout
    text = buf.getvalue()
    assert "(2.0 jobs/s)" in text
    assert text.index("in load") < text.index("in write") < text.index("in db")
