"""bench's straightforward implementation is an independent, plain-numpy reading of spec §3: its
data.json must equal ccarchive's byte for byte, or bench/ would compare unequal work."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from ccarchive.core import archive_loaded
from ccarchive.formats.data import encode_job_data
from ccarchive.loading import load_job_data
from ccarchive.sources.synthetic import SyntheticSource, synthetic_job

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.e2e import baseline_archive  # noqa: E402


@pytest.mark.parametrize("seed", [1, 2])
def test_baseline_equals_ccarchive_on_adversarial_data(tmp_path: Path, fritz_cluster, seed: int) -> None:
    job = synthetic_job(fritz_cluster, "main", 600 + seed, 1_700_000_000, 2, 179 * 60, seed=seed)
    data, _ = load_job_data(job, fritz_cluster, SyntheticSource(seed=seed, nan_gap_probability=0.05))
    rng = np.random.default_rng(seed)
    core = next(scopes["core"] for scopes in data.values() if "core" in scopes)
    core.data[0, :] = np.nan  # a series without any sample
    core.lengths[1] = 100  # a shorter series: statisticsSeries null beyond it
    core.data[1, 100:] = np.nan
    core.data[2, :50] = np.round(rng.normal(0, 0.006, 50), 3)  # values on rounding boundaries, signed
    core.data[3:, 60:63] = np.nan  # time steps with fewer than 3 values
    core.data[2:, 63] = np.nan
    theirs = copy.deepcopy(data)
    ours = encode_job_data(archive_loaded(job, data, archive=None, cluster=fritz_cluster).data)
    _, text = baseline_archive(theirs, str(tmp_path / "baseline.json.gz"))
    assert text == ours
    assert b'"statisticsSeries"' in ours and b"null" in ours
