"""The embedded default: realistic synthetic jobs on two real cluster configurations.

``ccarchive demo`` and ``bench/`` draw their jobs from here, so what a user sees in the demo is
what the benchmarks measure.  The cluster configurations are cc-backend's test clusters fritz
(CPU, subcluster overrides) and alex (GPU); see ``clusters/README.md``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources

from .cluster import Cluster, load_cluster
from .model import Job
from .sources.synthetic import synthetic_job

DEMO_CLUSTERS = ("fritz", "alex")
#: Job sizes in nodes and how often they occur: many small jobs, a few large ones.
NODE_CHOICES = (1, 1, 1, 1, 2, 2, 4, 4, 8, 8, 16, 32, 64)
FIRST_JOB_ID = 1_000_000
FIRST_START = 1_767_225_600  # 2026-01-01T00:00:00Z


def embedded_cluster(name: str) -> Cluster:
    """One of the embedded cluster configurations (``fritz`` or ``alex``)."""
    raw = resources.files("ccarchive").joinpath("clusters", f"{name}.json").read_bytes()
    return load_cluster(raw, name_hint=f"embedded {name}.json")


@dataclass
class DemoJobSpec:
    cluster: str
    sub_cluster: str
    num_nodes: int
    num_acc: int  # -1: every accelerator of the job's nodes
    duration: int


def demo_job_specs(n: int, seed: int = 0) -> list[DemoJobSpec]:
    """A reproducible mix: mostly CPU jobs on fritz, every fourth a GPU job on alex."""
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        if i % 4 == 3:
            nodes = rng.choice((1, 1, 2, 4, 8))
            specs.append(DemoJobSpec("alex", rng.choice(("a40", "a100")), nodes, -1,
                                     rng.randrange(600, 12 * 3600, 60)))
        else:
            nodes = rng.choice(NODE_CHOICES)
            specs.append(DemoJobSpec("fritz", "main", nodes, 0, rng.randrange(600, 24 * 3600, 60)))
    return specs


def demo_jobs(n: int, clusters: dict[str, Cluster], seed: int = 0, first_start: int = FIRST_START) -> list[Job]:
    """``n`` stopped synthetic jobs with unique (cluster, jobId, startTime)."""
    jobs = []
    for i, spec in enumerate(demo_job_specs(n, seed)):
        cluster = clusters[spec.cluster]
        start = first_start + i * 317
        num_acc = spec.num_acc
        if num_acc < 0:
            num_acc = spec.num_nodes * len(cluster.sub_cluster(spec.sub_cluster).topology.accelerators or [])
        job = synthetic_job(cluster, spec.sub_cluster, FIRST_JOB_ID + i, start, spec.num_nodes,
                            spec.duration, num_acc=num_acc, seed=seed + i)
        jobs.append(job)
    return jobs
