"""The Prometheus source against the real Debian ``prometheus`` server with back-filled data.

A module fixture generates a few jobs on the alex GPU cluster (node, hwthread, socket and GPU
metrics, gaps, one metric with jittered scrape times, node_exporter-style ``host:9100``
instances, DCGM-style ``gpu`` index labels), back-fills them with promtool (one file per 2-h
block) and starts the server once; the tests archive the jobs and compare with what was written.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from ccms_server import assert_archived, expected_data, make_truth, run_pipeline
from prom_fixture import (
    PromSeries,
    PromServer,
    backfill,
    free_port,
    node_series,
    require_prometheus,
    small_node_cluster,
)

from ccarchive.archive import open_archive
from ccarchive.core import archive_job
from ccarchive.demo import embedded_cluster
from ccarchive.errors import FormatError, InputError, TransientError
from ccarchive.loading import native_requests
from ccarchive.scopes import plan_job
from ccarchive.sources.prometheus import MAX_STEPS, PrometheusSource
from ccarchive.sources.registry import source_from_spec
from ccarchive.sources.synthetic import synthetic_job
from ccarchive.worker import is_transient


@pytest.fixture(autouse=True, scope="module")
def _prometheus_installed() -> None:
    require_prometheus()  # skips without prometheus, fails under CI=true


NOW = int(time.time())
START = NOW // 3600 * 3600 - 20 * 86400  # in the past: back-filled blocks, nothing in the head
HOSTS = "${hosts}"
TEMPLATES = {
    "cpu_load": 'node_load1{instance=~"' + HOSTS + '"}',  # node_exporter name, raw mode
    "alex/mem_used": {"query": 'node_memory_used_bytes{instance=~"${hosts}"} / 1e9 and '
                               '(time() - timestamp(node_memory_used_bytes{instance=~"${hosts}"}) < ${step_seconds})'},
    "acc_utilization": 'DCGM_FI_DEV_GPU_UTIL{instance=~"${hosts}",gpu=~"${ids}"}',
}
PROM_NAME = {"cpu_load": "node_load1", "mem_used": "node_memory_used_bytes", "acc_utilization": "DCGM_FI_DEV_GPU_UTIL"}
ID_LABEL = {"hwthread": "cpu", "socket": "socket", "accelerator": "gpu"}


def prom_series(job, cluster, truth) -> list[PromSeries]:
    """The truth as Prometheus series: instance=host:9100, cpu/socket/gpu index labels, ipc jittered."""
    sc = cluster.sub_cluster(job.sub_cluster)
    gpu_index = {a: str(n) for n, a in enumerate(sc.topology.accelerator_ids())}
    out = []
    for metric, series in truth.items():
        scope = cluster.metric(metric).scope
        for (host, sid), values in series.items():
            labels = {"instance": f"{host}:9100"}
            if sid is not None:
                labels[ID_LABEL[scope]] = gpu_index[sid] if scope == "accelerator" else sid
            times = job.start_time + 60.0 * np.arange(len(values)) + (7.0 if metric == "ipc" else 0.0)
            scale = 1e9 if metric == "mem_used" else 1.0
            out.append(PromSeries(PROM_NAME.get(metric, metric), labels, times, values * scale))
    return out


@pytest.fixture(scope="module")
def alex():
    return embedded_cluster("alex")


@pytest.fixture(scope="module")
def world(tmp_path_factory, alex):
    """Jobs, their truth (what the archive must hold) and a running server with the data."""
    root = tmp_path_factory.mktemp("prom")
    jobs = [
        synthetic_job(alex, "a40", 501, START, 2, 4 * 3600, num_acc=4, hwthreads=4, first_node=0),
        synthetic_job(alex, "a40", 502, START + 3600, 1, 2 * 3600, num_acc=1, hwthreads=2, first_node=2),
        synthetic_job(alex, "a40", 503, START - 9 * 86400, 1, 8 * 86400, hwthreads=2, first_node=3),  # > 11,000 steps
    ]
    truths = [make_truth(j, alex, seed=50 + k, gap_rate=0.01) for k, j in enumerate(jobs)]
    stored = [{m: dict(s) for m, s in t.items()} for t in truths]
    h1 = jobs[0].hostnames[1]
    del stored[0]["nv_temp"]  # a metric without any data
    for key in [k for k in stored[0]["clock"] if k[0] == h1]:
        del stored[0]["clock"][key]  # a host without data for one metric
    series = [s for j, st in zip(jobs, stored, strict=True) for s in prom_series(j, alex, st)]
    written = backfill(series, root / "data", root / "om")
    server = PromServer(root / "data", root / "prometheus.log").start()
    try:
        assert server.sample_count(START - 10 * 86400, NOW) == written  # promtool dropped none
        yield {"jobs": jobs, "stored": stored, "server": server, "root": root}
    finally:
        server.stop()


def spec(url: str, **extra) -> dict:
    return {"kind": "prometheus", "url": url, "templates": TEMPLATES, **extra}


def spy_requests(src: PrometheusSource) -> list[dict]:
    calls: list[dict] = []
    send = src.client.request

    def spy(method, path, **kw):
        calls.append({"path": path, **kw["params"]})
        return send(method, path, **kw)

    src.client.request = spy
    return calls


def test_jobs_archived_end_to_end_match_generated_values(tmp_path, alex, world):
    arch = open_archive(f"file://{tmp_path}/archive", create=True)
    src = source_from_spec(spec(world["server"].url, **{"max-concurrency": 2}))
    calls = spy_requests(src)
    results = [archive_job(j, source=src, archive=arch, cluster=alex) for j in world["jobs"]]
    for job, stored in zip(world["jobs"], world["stored"], strict=True):
        assert_archived(arch, job, expected_data(job, alex, stored))

    text = "\n".join(results[0].warnings)
    h0, h1 = world["jobs"][0].hostnames
    assert f"nv_temp: no data for {h0} id" in text and f"nv_temp: no data for {h1} id" in text
    assert f"clock: no data for {h1} id" in text and f"clock: no data for {h0}" not in text
    gpu = arch.load_data(world["jobs"][0])["acc_utilization"]["accelerator"]
    assert gpu.ids == ["00000000:01:00.0", "00000000:25:00.0"] * 2  # DCGM gpu index -> cluster ids

    # the 8-day job's expression template went through query_range in chunks of <= 11,000 points
    # that never repeat a boundary step; raw reads are instant range-vector queries
    job = world["jobs"][2]
    chunks = sorted((int(c["start"]), int(c["end"])) for c in calls
                    if c["path"].endswith("query_range") and str(job.start_time) <= c["start"] and
                    int(c["start"]) <= job.start_time + job.duration)
    assert len(chunks) == 2 and chunks[0][0] == job.start_time and chunks[-1][1] == job.start_time + job.duration
    assert all((e - s) // 60 + 1 <= MAX_STEPS for s, e in chunks) and chunks[1][0] == chunks[0][1] + 60
    raw = [c for c in calls if c["path"].endswith("/query")]
    assert raw and all(c["query"].endswith("ms]") for c in raw)


def test_gaps_stay_missing_despite_lookback(alex, world):
    job, stored = world["jobs"][0], world["stored"][0]
    host = job.hostnames[0]
    want = stored["cpu_load"][(host, None)]
    gaps = np.flatnonzero(np.isnan(want))
    assert len(gaps) > 0
    src = PrometheusSource(world["server"].url, templates=TEMPLATES)
    plans = [p for p in plan_job(job, alex) if p.metric.name == "cpu_load"]
    block = src.fetch(job, alex, alex.metric("cpu_load", "a40"), "node", native_requests(plans)).block
    got = block.data[block.hostnames.index(host)]
    np.testing.assert_array_equal(got, want)  # NaN exactly where nothing was stored
    # ... whereas a plain query_range fills the first steps of every gap with the previous value
    q = urllib.parse.urlencode({"query": f'node_load1{{instance="{host}:9100"}}', "start": job.start_time,
                                "end": job.start_time + job.duration, "step": 60})
    with urllib.request.urlopen(f"{world['server'].url}/api/v1/query_range?{q}") as r:
        values = json.loads(r.read())["data"]["result"][0]["values"]
    naive = {int(t) for t, _ in values}
    assert any(job.start_time + 60 * g in naive for g in gaps)


def test_pipeline_archives_jobs_from_prometheus(tmp_path, alex, world):
    jobs, stored = world["jobs"][:2], world["stored"][:2]
    db, arch, ids, _ = run_pipeline(tmp_path, alex, jobs, spec(world["server"].url))
    assert [db.get_job(i).monitoring_status for i in ids] == [3, 3]
    for job, st in zip(jobs, stored, strict=True):
        assert_archived(arch, job, expected_data(job, alex, st))


def test_unreachable_server_is_transient(alex, world):
    job = world["jobs"][1]
    src = PrometheusSource(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="unreachable") as e:
        archive_job(job, source=src, archive=None, cluster=alex)
    assert is_transient(e.value) and job.label in str(e.value)


def test_bad_template_and_ambiguous_series_are_clear_errors(alex, world):
    job = world["jobs"][1]
    bad = PrometheusSource(world["server"].url, templates={"cpu_load": 'node_load1{instance=~"${hosts}"'})
    with pytest.raises(InputError, match=r"metric cpu_load.*refused the query.*check the template") as e:
        archive_job(job, source=bad, archive=None, cluster=alex)
    assert not is_transient(e.value) and job.label in str(e.value)
    two = PrometheusSource(world["server"].url, templates={
        "cpu_user": '{__name__=~"cpu_user|flops_any",instance=~"${hosts}",cpu=~"${ids}"}'})
    with pytest.raises(FormatError, match=f"metric cpu_user, host {job.hostnames[0]} hwthread 0: the query returns "
                                          "several series"):
        archive_job(job, source=two, archive=None, cluster=alex)


def test_regex_escaping_of_ids_is_valid_promql(alex, world):
    """With accelerator-ids "id" the PCI ids (dots!) go into the regex; the server must parse it.
    The back-filled gpu labels are indexes, so every GPU series is then reported missing."""
    job = world["jobs"][0]
    src = PrometheusSource(world["server"].url, templates=TEMPLATES, accelerator_ids="id")
    plans = [p for p in plan_job(job, alex) if p.metric.name == "acc_power"]
    calls = spy_requests(src)
    result = src.fetch(job, alex, alex.metric("acc_power", "a40"), "accelerator", native_requests(plans))
    assert result.block is None and len(result.missing) == 4
    assert '00000000:01:00\\\\.0' in calls[0]["query"]  # regex \. written as \\. in the PromQL string


class _Broken(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("body", [
    b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"instance":"a0124"},"values":[[1,"1',
    b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"instance":"a0124"},'
    b'"values":[[1,"1.5"],[61,"x"]]}]}}',
])
def test_malformed_answer_names_job_metric_and_host(alex, body):
    handler = type("H", (_Broken,), {"body": body})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        job = synthetic_job(alex, "a40", 7, START, 1, 600, hwthreads=2, first_node=3)
        src = PrometheusSource(f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(FormatError) as e:
            archive_job(job, source=src, archive=None, cluster=alex)
    finally:
        httpd.shutdown()
        httpd.server_close()
    msg = str(e.value)
    named_metric = any(f"metric {p.metric.name}," in msg for p in plan_job(job, alex))
    assert job.label in msg and named_metric and "a0124" in msg, msg


@pytest.mark.slow  # 12 s on a quiet machine, 40 s with the 2 cores shared
def test_64_nodes_7_days_loads_with_bounded_concurrency(tmp_path: Path):
    cluster = small_node_cluster(4)
    job = synthetic_job(cluster, "main", 64_000, START - 8 * 86400, 64, 7 * 86400)
    truth = {(m, h): v for m, h, v in node_series(job, [m.name for m in cluster.metric_config], gap_rate=0.001)}
    series = [PromSeries(m, {"instance": h}, job.start_time + 60.0 * np.arange(len(v)), v)
              for (m, h), v in truth.items()]
    written = backfill(series, tmp_path / "data", tmp_path / "om")
    with PromServer(tmp_path / "data", tmp_path / "prometheus.log") as server:
        src = PrometheusSource(server.url, max_concurrency=2)
        in_flight, peak = [0], [0]
        lock = threading.Lock()
        send = src.client.request

        def counting(*a, **kw):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            try:
                return send(*a, **kw)
            finally:
                with lock:
                    in_flight[0] -= 1

        src.client.request = counting
        t0 = time.perf_counter()
        result = archive_job(job, source=src, archive=None, cluster=cluster)
        seconds = time.perf_counter() - t0
    assert written == sum(int((~np.isnan(v)).sum()) for v in truth.values())
    assert result.warnings == [] and 1 <= peak[0] <= 2 and seconds < 120  # (a loose sanity bound)
    for name in ("m00", "m03"):
        block = result.data[name]["node"]
        assert block.num_series == 64 and block.data.shape[1] == 7 * 1440 + 1
        for n, host in enumerate(block.hostnames):
            np.testing.assert_array_equal(block.data[n], truth[(name, host)])
