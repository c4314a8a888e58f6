"""bench/ must keep working: one quick end-to-end shape through ``python -m bench`` (no figure is
judged here -- speed is bench's business -- only that it runs, reports every field, fits 120
columns, and that ccarchive's output equals the straightforward implementation's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_e2e_run_reports_every_field(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    scratch = tmp_path / "scratch"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "e2e", "--shapes", "S1,S4",
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "CCARCHIVE_BENCH_DIR": str(scratch)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert scratch.is_dir() and list(scratch.iterdir()) == []  # written there, and cleaned up
    assert "phase compress" in run.stdout
    # --quick: figures, no verdicts (the budgets are for full runs)
    assert "Budgets (judged on full runs only; --quick shows the figures)" in run.stdout
    assert "PASS" not in run.stdout and "FAIL" not in run.stdout
    too_wide = [line for line in run.stdout.splitlines() if len(line) > 120]
    assert too_wide == []
    report = json.loads(out.read_text())
    assert report["quick"] is True and all(b["pass"] is None for b in report["budgets"])
    phases = [r for r in report["rows"] if r["impl"].startswith("phase ") and r["impl"] != "phase statistics"]
    assert phases and {r["unit"] for r in phases} == {"% of total"}
    shapes = json.loads(out.read_text())["shapes"]
    s1 = shapes["S1"]
    for key in ("total_s", "baseline_total_s", "archive_s", "speedup", "bytes_out", "gzip_ratio_vs_zlib6",
                "idle_rss_bytes", "peak_rss_bytes", "phases_s"):
        assert key in s1, key
    assert s1["identical"] is True
    assert set(s1["phases_s"]) >= {"load", "statistics", "encode", "compress", "write", "db"}
    assert s1["peak_rss_bytes"] >= s1["idle_rss_bytes"] > 0 and 0 < s1["gzip_ratio_vs_zlib6"] < 2
    assert shapes["S4"]["jobs_per_s"] > 0
    real = [r for r in report["rows"] if r["impl"] == "pipeline, real cc-metric-store"]
    assert len(real) == 1
    if not real[0]["note"].startswith("skipped"):
        assert f"creating a job entry in {scratch} costs " in real[0]["note"]
