"""Plots: the files decode, have the requested pixel size and show something; bad input is refused.

A real archive of three synthetic jobs (a 2-node CPU job, a 40-node job whose panels become
min/median/max bands, a GPU job) is written once per module; the CLI runs as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from ccarchive import plot  # noqa: E402
from ccarchive.archive import open_archive  # noqa: E402
from ccarchive.cluster import load_cluster  # noqa: E402
from ccarchive.core import archive_job  # noqa: E402
from ccarchive.errors import InputError  # noqa: E402
from ccarchive.sources import SyntheticSource, synthetic_job  # noqa: E402

CLUSTERS = Path(__file__).parents[1] / "src" / "ccarchive" / "clusters"
START = 1_767_225_600


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot") / "archive"
    archive = open_archive(str(root), create=True)
    fritz, alex = load_cluster(CLUSTERS / "fritz.json"), load_cluster(CLUSTERS / "alex.json")
    for cluster, job in ((fritz, synthetic_job(fritz, "main", 1, START, 2, 2 * 3600)),
                         (fritz, synthetic_job(fritz, "main", 2, START, 40, 3600)),
                         (alex, synthetic_job(alex, "a100", 3, START, 1, 3600, num_acc=4))):
        archive_job(job, source=SyntheticSource(seed=3, nan_gap_probability=0.03), archive=archive,
                    cluster=cluster)
    return root, archive, {"fritz": fritz, "alex": alex}


def _pixels(path: Path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    return img


def _not_blank(img: np.ndarray) -> None:
    rgb = img[..., :3]
    assert rgb.std() > 0.05  # lines, text and bands, not an empty canvas
    assert (rgb.min(axis=2) < 0.5).mean() > 0.005  # some dark ink


def test_job_plot_png_size_and_content(arch, tmp_path):
    root, archive, clusters = arch
    job = archive.load_meta(("fritz", 1, START))
    data = archive.load_data(job.key)
    fig = plot.plot_job(job, data, ["cpu_load", "mem_used", "flops_any"], cluster=clusters["fritz"],
                        panel_size=(5.0, 2.0))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3 and "fritz job 1" in fig._suptitle.get_text() and job.user in fig._suptitle.get_text()
    assert axes[0].get_ylabel() == "cpu_load" and axes[1].get_ylabel() == "mem_used [GB]"
    line = axes[0].get_lines()[0]
    assert any(np.isnan(np.asarray(ln.get_ydata(), dtype=float)).any() for ln in axes[0].get_lines()[:2])
    # ^ gaps stay gaps: matplotlib breaks a line at NaN instead of bridging it
    xs = line.get_xdata()
    assert xs[0] == np.datetime64(START, "s") and len(xs) == 2 * 60 + 1  # a real time axis
    out = plot.save_figure(fig, tmp_path / "job.png", dpi=80)
    img = _pixels(out)
    assert img.shape[:2] == (368, 800)  # 2 x 2 panels of 5 x 2 in plus the title, at 80 dpi
    _not_blank(img)


def test_many_series_become_a_band(arch):
    _, archive, clusters = arch
    job = archive.load_meta(("fritz", 2, START))
    data = archive.load_data(job.key)
    fig = plot.plot_job(job, data, ["cpu_load", "flops_any"], scope=None, cluster=clusters["fritz"])
    for ax in fig.axes[:2]:
        assert len(ax.collections) == 1  # the min-max band
        assert [ln.get_label() for ln in ax.get_lines()] == ["median", "peak"]
        assert "40 series: min / median / max" in ax.get_title(loc="left")
    few = plot.plot_job(job, data, ["cpu_load"], band_above=64)
    assert len(few.axes[0].get_lines()) == 40 and not few.axes[0].collections


def test_svg_and_pdf(arch, tmp_path):
    _, archive, _ = arch
    job = archive.load_meta(("alex", 3, START))
    data = archive.load_data(job.key)
    svg = plot.save_job_plot(tmp_path / "gpu.svg", job, data, metrics=["acc_utilization"], scope="accelerator")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 100
    pdf = plot.save_job_plot(tmp_path / "gpu.pdf", job, data, metrics=["acc_power"])
    raw = pdf.read_bytes()
    assert raw.startswith(b"%PDF-") and raw.rstrip().endswith(b"%%EOF") and len(raw) > 5000


def test_job_roofline(arch, tmp_path):
    _, archive, clusters = arch
    job = archive.load_meta(("fritz", 1, START))
    fig = plot.plot_roofline(job, archive.load_data(job.key), clusters["fritz"], size=(6.0, 4.0))
    ax = fig.axes[0]
    pts = ax.collections[0].get_offsets()
    assert len(pts) > 100 and (pts > 0).all()  # a point per node and time step
    roof = ax.get_lines()[0]
    assert np.nanmax(roof.get_ydata()) == pytest.approx(9216)  # the SIMD peak of fritz/main
    assert ax.get_xscale() == ax.get_yscale() == "log"
    img = _pixels(plot.save_figure(fig, tmp_path / "roof.png", dpi=50))
    assert img.shape[:2] == (200, 300)
    _not_blank(img)


def test_table_roofline(arch, tmp_path):
    import pyarrow as pa

    _, _, clusters = arch
    table = pa.table({"cluster": ["fritz"] * 3 + ["alex"] * 2, "subcluster": ["main"] * 3 + ["a100", "a100"],
                      "flops_any_avg": [800.0, 120.0, 0.0, 2000.0, 50.0],
                      "mem_bw_avg": [40.0, 150.0, 10.0, 100.0, None]})
    fig = plot.plot_roofline(table, cluster=clusters)
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 3  # zero flops and missing bandwidth dropped
    assert "3 jobs (2 without flops or bandwidth)" in ax.get_title()
    assert len([ln for ln in ax.get_lines() if ln.get_label().endswith(" roof")]) == 2  # a roof per subcluster
    _not_blank(_pixels(plot.save_figure(fig, tmp_path / "table.png")))
    with pytest.raises(InputError, match="missing: mem_bw_avg"):
        plot.plot_roofline({"cluster": [], "subcluster": [], "flops_any_avg": []})


def test_bad_library_input(arch):
    _, archive, _ = arch
    job = archive.load_meta(("fritz", 1, START))
    data = archive.load_data(job.key)
    with pytest.raises(InputError, match="unknown metric 'nope'"):
        plot.plot_job(job, data, ["nope"])
    with pytest.raises(InputError, match="metric 'mem_used' has no scope 'core'"):
        plot.plot_job(job, data, ["mem_used"], scope="core")
    with pytest.raises(InputError, match="no metric has scope 'accelerator'"):
        plot.plot_job(job, data, scope="accelerator")
    with pytest.raises(InputError, match="unsupported plot format '.jpg'"):
        plot.check_format("x.jpg")


def test_cli_plot(arch, tmp_path):
    root, _, _ = arch
    out = tmp_path / "cli.png"
    run = subprocess.run([sys.executable, "-m", "ccarchive", "plot", str(root), f"fritz/1/{START}",
                          "--metric", "cpu_load", "--metric", "mem_bw", "--dpi", "60", "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"wrote {out}" and run.stderr == ""
    img = _pixels(out)
    assert img.shape[:2] == (int((2.6 + 0.6) * 60), int(2 * 6.0 * 60))
    _not_blank(img)
    roof = tmp_path / "roof.svg"
    run = subprocess.run([sys.executable, "-m", "ccarchive", "plot", str(root), f"fritz/2/{START}",
                          "--roofline", "-o", str(roof)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert ET.parse(roof).getroot().tag.endswith("svg")
