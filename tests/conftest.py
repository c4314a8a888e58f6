"""Shared fixtures: paths of the copied cc-backend / cc-lib test data and small helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CCB = FIXTURES / "cc-backend"
IMPORT = CCB / "import"
ARCHIVE = CCB / "archive"
EMMY_JOB = ARCHIVE / "emmy" / "1403" / "244" / "1608923076"


@pytest.fixture
def fixture_archive(tmp_path: Path) -> Path:
    """A writable copy of cc-backend's test archive (version.txt, emmy/alex/fritz, one emmy job)."""
    dst = tmp_path / "fixture-archive"
    shutil.copytree(ARCHIVE, dst)
    return dst


@pytest.fixture(scope="session")
def fritz_cluster():
    from ccarchive.cluster import load_cluster

    return load_cluster((IMPORT / "cluster-fritz.json").read_bytes(), name_hint="cluster-fritz.json")


@pytest.fixture(scope="module")
def fritz():
    """cc-backend's test-archive fritz cluster (one fresh object per test module)."""
    from ccarchive.cluster import load_cluster

    return load_cluster(ARCHIVE / "fritz" / "cluster.json")


@pytest.fixture(scope="module")
def alex():
    """cc-backend's test-archive alex cluster (GPU nodes)."""
    from ccarchive.cluster import load_cluster

    return load_cluster(ARCHIVE / "alex" / "cluster.json")


@pytest.fixture(scope="session")
def demo_clusters():
    from ccarchive.demo import DEMO_CLUSTERS, embedded_cluster

    return {name: embedded_cluster(name) for name in DEMO_CLUSTERS}
