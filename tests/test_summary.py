"""The jobstats-like job summary: measures against capacities, and each plain-language note.

Jobs that should trigger a note are built sample by sample (so the expected numbers are known);
the job that should trigger none is a synthetic one, archived and read back through ``show``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ccarchive.archive import open_archive
from ccarchive.cluster import load_cluster
from ccarchive.core import archive_job
from ccarchive.loading import load_job_data
from ccarchive.model import JobMetric, Unit
from ccarchive.sources import SyntheticSource, synthetic_job
from ccarchive.summary import summarize

CLUSTERS = Path(__file__).parents[1] / "src" / "ccarchive" / "clusters"
N = 121  # samples: 2 h at 60 s


@pytest.fixture(scope="module")
def fritz():
    return load_cluster(CLUSTERS / "fritz.json")


@pytest.fixture(scope="module")
def alex():
    return load_cluster(CLUSTERS / "alex.json")


def block(unit: Unit, rows: dict[tuple[str, str | None], float]) -> JobMetric:
    """Constant series (with a little wiggle) at the given levels."""
    wiggle = 0.01 * np.sin(np.arange(N))
    data = np.array([[v * (1 + w) for w in wiggle] for v in rows.values()])
    return JobMetric(unit, 60, [h for h, _ in rows], [i for _, i in rows], data, np.full(len(rows), N))


def cpu_mem(hosts, busy, mem_gb):
    """cpu_user at node scope (percent) and mem_used (GB) per host."""
    return {"cpu_user": {"node": block(Unit(), {(h, None): b for h, b in zip(hosts, busy, strict=True)})},
            "mem_used": {"node": block(Unit("B", "G"), {(h, None): m for h, m in zip(hosts, mem_gb, strict=True)})}}


def test_synthetic_job_has_no_notes_and_plausible_measures(fritz):
    job = synthetic_job(fritz, "main", 31, 1_700_000_000, 3, 4 * 3600)
    data, _ = load_job_data(job, fritz, SyntheticSource(seed=1))
    s = summarize(job, data, fritz)
    assert s.notes == []
    cpu, mem, bw, flops = (s.measure(m) for m in ("cpu", "memory", "mem_bw", "flops_any"))
    assert 70 < cpu.value <= 100 and set(cpu.per_node) == set(job.hostnames)
    assert mem.capacity == 256 and 20 < mem.percent < 90 and mem.value == max(mem.per_node.values())
    assert bw.capacity == 350 and 0 < bw.percent < 100 and bw.unit == "GB/s"
    assert flops.capacity == 9216 and 0 < flops.percent < 100
    assert s.measure("gpu") is None
    doc = json.loads(json.dumps(s.to_dict()))  # JSON-ready
    assert doc["notes"] == [] and doc["measures"][0]["name"] == "cpu"


def test_idle_gpus(alex):
    job = synthetic_job(alex, "a100", 32, 1_700_000_000, 1, 7200, num_acc=4)
    ids = job.resources[0].accelerators
    h = job.hostnames[0]
    data = cpu_mem([h], [95.0], [200.0])
    data["acc_utilization"] = {"accelerator": block(Unit(), {(h, ids[0]): 90, (h, ids[1]): 85,
                                                            (h, ids[2]): 0.5, (h, ids[3]): 0.0})}
    s = summarize(job, data, alex)
    gpu = s.measure("gpu")
    assert len(gpu.per_device) == 4 and gpu.value == pytest.approx((90 + 85 + 0.5) / 4, rel=0.01)
    assert len(s.notes) == 1 and s.notes[0].startswith("2 of 4 GPUs were idle") and ids[2] in s.notes[0]
    data["acc_utilization"] = {"accelerator": block(Unit(), {(h, i): 0.2 for i in ids})}
    notes = summarize(job, data, alex).notes
    assert len(notes) == 1 and notes[0].startswith("All 4 GPUs were idle")


def test_one_busy_node_of_many(fritz):
    job = synthetic_job(fritz, "main", 33, 1_700_000_000, 4, 7200)
    data = cpu_mem(job.hostnames, [97.0, 1.0, 0.5, 0.8], [120.0] * 4)
    s = summarize(job, data, fritz)
    assert s.measure("cpu").per_node[job.hostnames[0]] == pytest.approx(97, rel=0.01)
    busy = [n for n in s.notes if n.startswith(f"only {job.hostnames[0]} was busy; 3 of 4 nodes were idle")]
    assert len(busy) == 1
    assert any(n.startswith("The allocated CPU cores were busy 25 %") for n in s.notes)  # overall too


def test_memory_far_below_allocation(fritz):
    job = synthetic_job(fritz, "main", 34, 1_700_000_000, 2, 7200)
    data = cpu_mem(job.hostnames, [95.0, 96.0], [10.0, 12.0])
    notes = summarize(job, data, fritz).notes
    assert len(notes) == 1 and notes[0].startswith("Memory use peaked at 12.1 GB of 256 GB allocated per node (5 %)")
    job.requested_memory = 16_000  # MB per node: now 12 GB is most of it
    s = summarize(job, data, fritz)
    assert s.measure("memory").capacity == pytest.approx(16.0) and s.notes == []
    job.requested_memory = 13_000
    notes = summarize(job, data, fritz).notes
    assert len(notes) == 1 and notes[0].startswith("Memory use came close to the allocation (93 %")


def test_low_cpu_from_load_of_partial_node(fritz):
    """cpu_load without cpu_user: the load is set against the job's own hwthreads."""
    job = synthetic_job(fritz, "main", 35, 1_700_000_000, 1, 7200, hwthreads=8)
    h = job.hostnames[0]
    data = {"cpu_load": {"node": block(Unit(), {(h, None): 2.0})},
            "mem_used": {"node": block(Unit("B", "G"), {(h, None): 20.0})}}
    s = summarize(job, data, fritz)
    assert s.measure("cpu").value == pytest.approx(25, rel=0.01)
    assert s.measure("memory").capacity == pytest.approx(256 * 8 / 72)  # the job's share of the node
    assert [n[:40] for n in s.notes] == ["The allocated CPU cores were busy 25 % o"]


def test_short_job_gets_no_notes(fritz):
    job = synthetic_job(fritz, "main", 36, 1_700_000_000, 2, 120)
    data = cpu_mem(job.hostnames, [90.0, 0.0], [1.0, 1.0])
    assert summarize(job, data, fritz).notes == []


def test_show_summary_cli(tmp_path, alex):
    arch = open_archive(str(tmp_path / "a"), create=True)
    job = synthetic_job(alex, "a40", 37, 1_700_000_000, 2, 3600, num_acc=8)
    archive_job(job, source=SyntheticSource(), archive=arch, cluster=alex)
    key = f"alex/37/{job.start_time}"
    run = [sys.executable, "-m", "ccarchive", "show", str(tmp_path / "a"), key, "--summary"]
    text = subprocess.run(run, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "GPU utilization" in text and "of 40 GB per GPU" in text and "notes: none" in text
    assert text.count(job.hostnames[1]) == 1  # the per-node table
    doc = json.loads(subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=120,
                                    check=True).stdout)
    gpu = next(m for m in doc["measures"] if m["name"] == "gpu")
    assert len(gpu["per_device"]) == 8 and 0 < gpu["value"] <= 100 and doc["notes"] == []
