"""Jobs shared by the backend tests: cc-backend's fixtures as raw bytes, and small synthetic jobs.

The fixture entries are copied as stored (meta.json and the decompressed data.json text), so
every backend must give back exactly these bytes.  Synthetic jobs go through the real archiver
(``ccarchive.core.archive_job``) with the numba kernels on one thread: on the shared 2-core
machine a parallel launch per tiny block costs tens of milliseconds under load, one thread costs
microseconds, and the results are identical.
"""

from __future__ import annotations

import contextlib
import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccarchive.cluster import Cluster, load_cluster
from ccarchive.formats.meta import decode_job_meta

FIXTURES = Path(__file__).parent / "fixtures" / "cc-backend"
EMMY_JOB = FIXTURES / "archive" / "emmy" / "1403" / "244" / "1608923076"


@dataclass
class RawJob:
    key: tuple[str, int, int]
    meta: bytes
    data: bytes  # decompressed data.json text


def fixture_jobs() -> list[RawJob]:
    """The emmy archive entry (legacy, gzipped) and the two fritz import pairs (Go output)."""
    pairs = [((EMMY_JOB / "meta.json").read_bytes(), gzip.decompress((EMMY_JOB / "data.json.gz").read_bytes()))]
    for name in ("fritzMinimal", "fritzError"):
        pairs.append(((FIXTURES / "import" / f"meta-{name}.input").read_bytes(),
                      (FIXTURES / "import" / f"data-{name}.json").read_bytes()))
    return sorted((RawJob(decode_job_meta(m).key, m, d) for m, d in pairs), key=lambda j: j.key)


def fixture_clusters() -> list[Cluster]:
    """emmy and alex from the test archive, fritz as the importer test uses it."""
    out = [load_cluster((FIXTURES / "archive" / n / "cluster.json").read_bytes(), name_hint=n)
           for n in ("alex", "emmy")]
    out.append(load_cluster((FIXTURES / "import" / "cluster-fritz.json").read_bytes(), name_hint="fritz"))
    return out


def small_data(raw: RawJob, metric: str = "cpu_load") -> bytes:
    """A data.json of one node-scope metric of ``raw``: below the 2000-byte gzip threshold."""
    from ccarchive.formats.data import decode_job_data, encode_job_data

    data = decode_job_data(raw.data)
    out = encode_job_data({metric: {"node": data[metric]["node"]}})
    assert len(out) <= 2000, len(out)
    return out


@contextlib.contextmanager
def one_numba_thread() -> Iterator[None]:
    import numba

    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def synthetic_results(n: int, archive: object = None, seed: int = 7) -> list[tuple[Cluster, Any]]:
    """``n`` small synthetic jobs (1-4 nodes, 10-30 min) run through the archiver into ``archive``
    (``None``: in memory only); returns (cluster, ArchiveResult) pairs."""
    from ccarchive.core import archive_job
    from ccarchive.demo import embedded_cluster
    from ccarchive.sources.synthetic import SyntheticSource, synthetic_job

    clusters = {name: embedded_cluster(name) for name in ("fritz", "alex")}
    src = SyntheticSource(seed=seed)
    rng = random.Random(seed)
    out = []
    with one_numba_thread():
        for i in range(n):
            if i % 4 == 3:
                c, sc = clusters["alex"], rng.choice(("a40", "a100"))
                nodes = rng.choice((1, 1, 2))
                acc = nodes * len(c.sub_cluster(sc).topology.accelerators or [])
            else:
                c, sc, nodes, acc = clusters["fritz"], "main", rng.choice((1, 1, 2, 4)), 0
            # start times spread over ~3 months, so the dataset has several start_month partitions
            job = synthetic_job(c, sc, 3_000_000 + i, 1_767_225_600 + i * 28_807, nodes,
                                rng.randrange(600, 1800, 60), num_acc=acc, seed=seed + i)
            out.append((c, archive_job(job, source=src, archive=archive, cluster=c)))  # type: ignore[arg-type]
    return out
