"""The cc-metric-store source against the real server (cc-metric-store v0.1.1, tests/ccms_real.py).

One server runs for the session with a fresh store; every test writes its own hosts with the line
protocol, relative to now, and compares what the client returns or archives with what it wrote
(``ccms_server.expected_data``).  The first tests pin down the server behaviour the client relies
on, so a different server release shows up here first.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from ccms_real import RealCCMS, line_protocol, metrics_of, now_minute, require_binary, running
from ccms_server import assert_archived, expected_data, make_truth, run_pipeline

from ccarchive.archive import open_archive
from ccarchive.core import archive_job
from ccarchive.demo import embedded_cluster
from ccarchive.errors import InputError
from ccarchive.jobdb import JobDB
from ccarchive.loading import load_job_data, native_requests
from ccarchive.scopes import plan_job
from ccarchive.sources.ccms import NOT_FOUND, CCMetricStoreSource
from ccarchive.sources.http import TimeoutPolicy
from ccarchive.sources.registry import source_from_spec
from ccarchive.sources.synthetic import synthetic_job
from ccarchive.worker import JobRef, WorkerConfig, archive_one, is_transient, look_ahead, open_environment

FRITZ = embedded_cluster("fritz")
ALEX = embedded_cluster("alex")
HOUR = 3600


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    yield from running(tmp_path_factory.mktemp("ccms-real"), metrics_of(FRITZ, ALEX))


def fill(store: RealCCMS, cluster, job, truth, *, late: dict | None = None) -> None:
    """Write ``truth`` (on the job's grid) in one request; ``late[(metric, host, id)] = k`` starts
    that series at sample k."""
    scope = {m.name: m.scope for m in cluster.metric_config}
    body = []
    for metric, series in truth.items():
        for (host, i), v in series.items():
            k = (late or {}).get((metric, host, i), 0)
            times = job.start_time + 60 * np.arange(len(v))
            body.append(line_protocol(metric, host, times[k:], v[k:], type_=scope[metric], type_id=i))
    store.write(b"".join(body), cluster.name)


def spy(src: CCMetricStoreSource) -> list[dict]:
    """Record every request body and answer size of a source."""
    sent: list[dict] = []
    send = src.client.request

    def recording(method, path, **kw):
        raw = send(method, path, **kw)
        sent.append({"body": json.loads(kw["body"]), "bytes": len(raw), "timeout": kw["timeout"]})
        return raw

    src.client.request = recording
    return sent


def source(store: RealCCMS, **kw) -> CCMetricStoreSource:
    return CCMetricStoreSource(store.url, store.token, **kw)


def query(store: RealCCMS, frm: int, to: int, *queries: dict) -> list[list[dict]]:
    body = {"cluster": "fritz", "from": frm, "to": to, "with-stats": False, "with-data": True,
            "queries": [{"resolution": 0, "aggreg": False, **q} for q in queries]}
    return store.query(body)["results"]


# ---- the server's behaviour the client relies on ---------------------------------------------------


def test_store_answers_in_query_order_with_error_entries_for_missing_series(store):
    t0 = now_minute() - 3 * HOUR
    times = t0 + 60 * np.arange(100)
    for hw in (0, 1, 10):
        store.write_series("fritz", "cpu_user", "f1201", times, np.arange(100) + hw / 100, type_="hwthread",
                           type_id=hw, decimals=3)
    store.write_series("fritz", "cpu_load", "f1201", times, np.arange(100) * 1.5)
    results = query(store, t0, t0 + 600,
                    {"type": "hwthread", "metric": "cpu_user", "host": "f1201", "type-ids": ["10", "2", "0"]},
                    {"metric": "cpu_load", "host": "f1299"},  # a host the store never saw
                    {"metric": "mem_used", "host": "f1201"},  # a metric never written for the host
                    {"metric": "no_such_metric", "host": "f1201"},
                    {"metric": "cpu_load", "host": "f1201"})
    hw10, hw2, hw0 = results[0]  # one entry per type-id, in the order asked
    assert hw10["data"][:2] == [0.1, 1.1] and hw0["data"][:2] == [0.0, 1.0]
    assert hw2["error"] == NOT_FOUND and "data" not in hw2  # v0.1.1: an error entry in its slot
    assert [e["error"] for e in results[1] + results[2]] == [NOT_FOUND, NOT_FOUND]
    assert results[3][0]["error"] == "unkown metric: no_such_metric"
    node = results[4][0]
    assert (node["from"], node["to"], node["resolution"]) == (t0, t0 + 600, 60) and len(node["data"]) == 10
    status, headers, raw = store.request("GET", "/api/query?version=v2", json.dumps(
        {"cluster": "fritz", "from": t0, "to": t0 + 6000, "queries": [
            {"type": "hwthread", "metric": "cpu_user", "host": "f1201", "type-ids": ["0", "1", "10"]},
            {"metric": "cpu_load", "host": "f1201"}]}).encode())
    assert status == 200 and headers.get("transfer-encoding") == "chunked"  # answers above 4 KiB
    assert b'"data":[0.000,1.500,3.000,' in raw  # 3 decimals


def test_store_pads_the_front_cuts_at_to_and_takes_the_nearest_sample(store):
    t0 = now_minute() - 2 * HOUR
    values = np.arange(20, dtype=float)
    values[[5, 6]] = np.nan  # a gap: lines not written
    store.write_series("fritz", "cpu_load", "f1202", t0 + 60 * np.arange(20), values)
    padded = query(store, t0 - 300, t0 + 300, {"metric": "cpu_load", "host": "f1202"})[0][0]
    assert padded["from"] == t0 and padded["to"] == t0 + 300  # `from` stays at the first real sample
    assert padded["data"] == [None] * 5 + [0.0, 1.0, 2.0, 3.0, 4.0]
    gap = query(store, t0 + 240, t0 + 481, {"metric": "cpu_load", "host": "f1202"})[0][0]
    assert gap["data"] == [4.0, None, None, 7.0, 8.0] and gap["to"] == t0 + 540  # `to` exclusive, on the grid
    off = query(store, t0 + 20, t0 + 200, {"metric": "cpu_load", "host": "f1202"})[0][0]
    assert off["from"] == t0 + 20 and off["data"] == [0.0, 1.0, 2.0]  # nearest sample, on the request's times
    tie = query(store, t0 + 30, t0 + 200, {"metric": "cpu_load", "host": "f1202"})[0][0]
    assert tie["data"] == [1.0, 2.0, 3.0]  # half a step: the later sample
    after = query(store, t0 + 3000, t0 + 3600, {"metric": "cpu_load", "host": "f1202"})[0][0]
    assert "data" not in after and after["from"] == after["to"]
    assert query(store, t0 + 60, t0, {"metric": "cpu_load", "host": "f1202"})[0][0]["error"] == "invalid time range"


def test_store_aggregates_members_found_and_depends_on_member_order(store):
    t0 = now_minute() - 2 * HOUR
    times = t0 + 60 * np.arange(10)
    for hw, start in ((0, 0), (1, 0), (2, 3)):  # hwthread 2 starts 3 samples late
        store.write_series("fritz", "flops_any", "f1203", times[start:], np.full(10 - start, 1.0 + hw),
                           type_="hwthread", type_id=hw)
    aligned = query(store, t0, t0 + 600, {"type": "hwthread", "metric": "flops_any", "host": "f1203",
                                          "type-ids": ["0", "1", "7"], "aggreg": True})[0]
    assert len(aligned) == 1 and aligned[0]["data"] == [3.0] * 10  # sum of the members found (7 is not)
    late_last = query(store, t0, t0 + 600, {"type": "hwthread", "metric": "flops_any", "host": "f1203",
                                            "type-ids": ["0", "1", "2"], "aggreg": True})[0][0]
    assert late_last["error"] == "data from lower granularities does not align"
    late_first = query(store, t0, t0 + 600, {"type": "hwthread", "metric": "flops_any", "host": "f1203",
                                             "type-ids": ["2", "0", "1"], "aggreg": True})[0][0]
    assert late_first["from"] == t0 + 180 and late_first["data"] == [None] * 3 + [6.0] * 7  # cut to member 2
    wavy = np.round(np.sin(np.arange(200) / 7) * 50, 2)
    store.write_series("fritz", "cpu_load", "f1203", t0 - 12000 + 60 * np.arange(200), wavy)
    lttb = query(store, t0 - 12000, t0, {"metric": "cpu_load", "host": "f1203", "resolution": 120})[0][0]
    assert lttb["resolution"] == 120 and len(lttb["data"]) == 100  # LTTB: kept samples at uneven times
    assert lttb["data"] != wavy[::2].tolist() and lttb["data"] != wavy[1::2].tolist()


def test_store_refuses_a_bad_token_with_text(store):
    status, headers, body = store.request("GET", "/api/query?version=v2", b"{}", token="not-a-jwt")
    assert status == 401 and headers["content-type"].startswith("text/plain") and body.strip()


# ---- the client against it ----------------------------------------------------------------------------


def test_small_job_archived_equal_to_what_was_written(tmp_path, store):
    """Node, socket and hwthread metrics (node + core scopes from native series), gaps, a host
    5 min late, a metric without data, a host without data for one metric, a missing hwthread."""
    job = synthetic_job(FRITZ, "main", 1, now_minute() - 3 * HOUR, 2, HOUR, first_node=100,
                        hwthreads=[0, 1, 2, 3, 10, 33])
    h0, h1 = job.hostnames
    truth = make_truth(job, FRITZ, seed=1)
    truth["cpu_load"][(h1, None)][:8] = [np.nan] * 5 + [1.11, 2.22, 3.33]
    stored = {m: dict(s) for m, s in truth.items()}
    del stored["ib_xmit"]
    del stored["nfs4_read"][(h1, None)]
    del stored["cpu_user"][(h0, "3")]
    fill(store, FRITZ, job, stored, late={("cpu_load", h1, None): 5})
    src = source(store)
    sent = spy(src)
    arch = open_archive(f"file://{tmp_path}/archive", create=True)
    result = archive_job(job, source=src, archive=arch, cluster=FRITZ)

    assert_archived(arch, job, expected_data(job, FRITZ, stored))
    late = arch.load_data(job)["cpu_load"]["node"]
    assert np.isnan(late.series(1)[:5]).all() and late.series(1)[5:8].tolist() == [1.11, 2.22, 3.33]
    text = "\n".join(result.warnings)
    assert f"ib_xmit: no data for {h0}: cc-metric-store has no such series" in text
    assert f"nfs4_read: no data for {h1}: cc-metric-store has no such series" in text
    assert f"cpu_user: no data for {h0} id 3: cc-metric-store has no such series" in text
    assert arch.load_meta(job).monitoring_status == 3
    assert len(sent) == 1  # a small job is one round trip
    queries = sent[0]["body"]["queries"]
    assert sent[0]["body"]["from"] == job.start_time and sent[0]["body"]["to"] == job.start_time + HOUR + 1
    assert all(q["resolution"] == 0 and q["aggreg"] is False for q in queries)
    hw = [q["type-ids"] for q in queries if q.get("type") == "hwthread"]
    assert hw and all(ids == ["0", "1", "2", "3", "10", "33"] for ids in hw)  # strings, numeric order, no retry


def test_gpu_job_accelerator_metrics(tmp_path, store):
    job = synthetic_job(ALEX, "a40", 2, now_minute() - 4 * HOUR, 2, 2 * HOUR, num_acc=5, first_node=0, hwthreads=4)
    truth = make_truth(job, ALEX, seed=2)
    stored = {m: dict(s) for m, s in truth.items()}
    gpu = next(k for k in stored["acc_utilization"] if k[0] == job.hostnames[1])
    del stored["acc_utilization"][gpu]
    fill(store, ALEX, job, stored)
    arch = open_archive(f"file://{tmp_path}/archive", create=True)
    result = archive_job(job, source=source(store), archive=arch, cluster=ALEX)
    assert_archived(arch, job, expected_data(job, ALEX, stored))
    assert {s for s in arch.load_data(job)["acc_utilization"]} == {"node", "accelerator"}
    assert f"acc_utilization: no data for {gpu[0]} id {gpu[1]}" in "\n".join(result.warnings)


def test_large_job_node_scope_aggregated_by_the_store(tmp_path, store):
    """Above the core-scope limit a hwthread or socket metric is asked for as the store's node
    aggregate.  A cut answer (the first member starts late) is what local aggregation gives; hosts
    whose answer is an error (a later member starts late) or has no sample are rebuilt from their
    native series."""
    job = synthetic_job(FRITZ, "main", 3, now_minute() - 3 * HOUR, 10, HOUR, first_node=120)
    truth = make_truth(job, FRITZ, seed=3, gap_rate=0.0)
    rng = np.random.default_rng(3)
    for metric in ("cpu_user", "flops_any"):
        for v in truth[metric].values():
            v[1:-1][rng.random(len(v) - 2) < 0.01] = np.nan  # inner gaps: NaN in the node series
    hosts = job.hostnames
    late = {("cpu_user", hosts[0], "0"): 3,  # the first member late: the store's answer is cut
            ("cpu_user", hosts[1], "5"): 3}  # a later member late: the store answers an error
    stored = {m: dict(s) for m, s in truth.items()}
    del stored["flops_sp"][(hosts[5], "0")]  # the first member has samples only before the job:
    store.write_series("fritz", "flops_sp", hosts[5], job.start_time - 600 + 60 * np.arange(5), np.ones(5),
                       type_="hwthread", type_id=0)  # the store's answer has none
    for i in ("0", "1"):
        del stored["flops_any"][(hosts[2], i)]  # missing members: not counted, by the store as by us
    del stored["mem_bw"][(hosts[3], "0")]
    for key in [k for k in stored["clock"] if k[0] == hosts[4]]:
        del stored["clock"][key]  # a host without the metric
    fill(store, FRITZ, job, stored, late=late)
    expected_truth = {m: dict(s) for m, s in stored.items()}
    for (metric, host, i), k in late.items():
        expected_truth[metric][(host, i)] = np.concatenate([np.full(k, np.nan), stored[metric][(host, i)][k:]])

    src = source(store)
    sent = spy(src)
    arch = open_archive(f"file://{tmp_path}/archive", create=True)
    result = archive_job(job, source=src, archive=arch, cluster=FRITZ)
    assert_archived(arch, job, expected_data(job, FRITZ, expected_truth), atol=0.0101)  # 3 decimals, then 2
    assert np.isnan(arch.load_data(job)["cpu_user"]["node"].series(0)[:3]).all()
    assert f"clock: no data for {hosts[4]}: cc-metric-store has no such series" in "\n".join(result.warnings)
    queries = [q for s in sent for q in s["body"]["queries"]]
    native = {(q["metric"], q["host"]) for q in queries if q.get("type") in ("hwthread", "socket") and not q["aggreg"]}
    assert native == {("cpu_user", hosts[1]), ("flops_sp", hosts[5])}  # the fallback, only where needed
    agg = [q for q in queries if q["aggreg"]]
    aggregated_metrics = [m for m in FRITZ.metric_config if m.scope != "node"]
    assert {q["type"] for q in agg} == {"hwthread", "socket"} and len(agg) == len(aggregated_metrics) * 10
    assert all(q["type-ids"] == [str(i) for i in range(72)] for q in agg if q["type"] == "hwthread")

    windowed = source(store, max_points_per_request=40)  # aggregates in 2 time windows, natives in 61
    windowed_sent = spy(windowed)
    again = archive_job(job, source=windowed, archive=None, cluster=FRITZ)
    assert len({(s["body"]["from"], s["body"]["to"]) for s in windowed_sent}) > 2
    for metric, scopes in arch.load_data(job).items():
        np.testing.assert_allclose(again.data[metric]["node"].data, scopes["node"].data, atol=0.0051, equal_nan=True)

    native_src = source(store, store_aggregation=False)
    native_sent = spy(native_src)
    data, _ = load_job_data(job, FRITZ, native_src)
    ours = arch.load_data(job)
    for metric in ("cpu_user", "flops_any", "mem_bw"):
        a, b = ours[metric]["node"], data[metric]["node"]
        assert a.hostnames == b.hostnames
        np.testing.assert_allclose(a.data, b.data, atol=0.0101, equal_nan=True)  # rounded to 3, then 2 decimals
    moved, moved_native = sum(s["bytes"] for s in sent), sum(s["bytes"] for s in native_sent)
    assert moved * 10 < moved_native, (moved, moved_native)


@pytest.mark.parametrize("offset", [20, 30, -20])
def test_job_off_the_store_grid_gets_the_nearest_sample(store, offset):
    t0 = now_minute() - 3 * HOUR
    job = synthetic_job(FRITZ, "main", 4, t0 + 600 + offset, 1, 1800, first_node=200 + offset // 10)
    values = np.round(np.random.default_rng(offset + 100).uniform(0, 100, 100), 2)
    store.write_series("fritz", "cpu_load", job.hostnames[0], t0 + 60 * np.arange(100), values)
    metric = FRITZ.metric("cpu_load")
    got = source(store).fetch(job, FRITZ, metric, "node", native_requests(
        [p for p in plan_job(job, FRITZ) if p.metric.name == "cpu_load"]))
    # grid point start + 60 j reads the store's sample nearest in time (half a step: the later one)
    first = (600 + offset + 30) // 60
    np.testing.assert_array_equal(got.block.data[0], values[first:first + 31])


def test_long_job_split_into_time_windows_and_host_groups(store):
    job = synthetic_job(FRITZ, "main", 5, now_minute() - 3 * 86400, 3, 2 * 86400, first_node=140, hwthreads=8)
    metric = FRITZ.metric("cpu_user")
    truth = make_truth(job, FRITZ, seed=5, metrics={"cpu_user"})
    fill(store, FRITZ, job, truth, late={("cpu_user", job.hostnames[1], "2"): 700})  # crosses 512-sample buffers
    src = source(store, max_points_per_request=5_000, max_concurrency=3,
                 timeout=TimeoutPolicy(base_s=5, per_million_s=100, max_s=60))
    sent = spy(src)
    result = src.fetch(job, FRITZ, metric, "hwthread", native_requests(
        [p for p in plan_job(job, FRITZ) if p.metric.name == "cpu_user"]))
    assert result.missing == []
    for n, key in enumerate(zip(result.block.hostnames, result.block.ids, strict=True)):
        want = truth["cpu_user"][key].copy()
        if key == (job.hostnames[1], "2"):
            want[:700] = np.nan
        np.testing.assert_array_equal(result.block.data[n], want)
    windows = sorted({(s["body"]["from"], s["body"]["to"]) for s in sent})
    points = [sum(len(q["type-ids"]) for q in s["body"]["queries"]) * len(range(s["body"]["from"], s["body"]["to"], 60))
              for s in sent]
    assert len(windows) > 1 and max(points) <= 5_000
    assert [s["timeout"] for s in sent] == [5 + 100 * p / 1e6 for p in points]  # sized by the samples asked for
    assert windows[0][0] == job.start_time and windows[-1][1] == job.start_time + 2 * 86400 + 1
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False))
    assert len({tuple(q["host"] for q in s["body"]["queries"]) for s in sent}) > 1  # host groups


def test_rejected_token_is_one_line_input_error(store):
    job = synthetic_job(FRITZ, "main", 6, now_minute() - 2 * HOUR, 1, 600, first_node=150)
    bad = source_from_spec({"kind": "cc-metric-store", "url": store.url, "token": store.token[:-4] + "AAAA"})
    with pytest.raises(InputError, match="HTTP 401") as e:
        archive_job(job, source=bad, archive=None, cluster=FRITZ)
    msg = str(e.value)
    assert "\n" not in msg and job.label in msg and store.url in msg and not is_transient(e.value)


def test_pipeline_archives_jobs_from_the_real_store(tmp_path, store):
    """Queue, worker process, real store, file archive and job DB."""
    start = now_minute() - 4 * HOUR
    jobs = [synthetic_job(FRITZ, "main", 7000 + k, start + 600 * k, 1 + k, HOUR, first_node=160 + 4 * k)
            for k in range(3)]
    truths = [make_truth(job, FRITZ, seed=70 + k) for k, job in enumerate(jobs)]
    for job, truth in zip(jobs, truths, strict=True):
        fill(store, FRITZ, job, truth)
    db, arch, ids, _ = run_pipeline(tmp_path, FRITZ, jobs,
                                    {"kind": "cc-metric-store", "url": store.url, "token": store.token})
    assert [db.get_job(i).monitoring_status for i in ids] == [3, 3, 3]
    for job, truth in zip(jobs, truths, strict=True):
        assert_archived(arch, job, expected_data(job, FRITZ, truth))


def _worker_env(root, store, **spec):
    arch = open_archive(f"file://{root}/archive", create=True)
    arch.store_cluster(FRITZ)
    cfg = WorkerConfig(job_db=str(root / "job.db"), archive_url=f"file://{root}/archive",
                       state_db=str(root / "state.db"),
                       source={"kind": "cc-metric-store", "url": store.url, "token": store.token, **spec})
    return cfg, open_environment(cfg), arch


def test_worker_looking_ahead_archives_what_one_request_per_metric_archives(tmp_path, store):
    """The worker opens the next job's requests while it archives the current one (all of a small
    job's metrics in one or two requests): the same archive, byte for byte, as archiving one job
    at a time with one request per metric, and what was written."""
    start = now_minute() - 5 * HOUR
    jobs = [synthetic_job(FRITZ, "main", 7100 + k, start + 900 * k, 1, HOUR, first_node=180 + k)
            for k in range(4)]  # every fritz metric, 72 hwthreads: 35 k samples a job
    truths = [make_truth(job, FRITZ, seed=80 + k) for k, job in enumerate(jobs)]
    del truths[1]["ipc"][(jobs[1].hostnames[0], "2")]  # a missing id: an error entry amid the block
    for job, truth in zip(jobs, truths, strict=True):
        fill(store, FRITZ, job, truth)
    archives = {}
    for name, spec in (("ahead", {}), ("per-metric", {"max-points-per-request": 72 * 61})):
        root = tmp_path / name
        root.mkdir()
        ids = JobDB.create(root / "job.db").insert_jobs(jobs)
        cfg, env, archives[name] = _worker_env(root, store, **spec)
        sent = spy(env["source"])
        for k, ref in enumerate(JobRef(i) for i in ids):
            if name == "ahead" and k + 1 < len(ids):
                look_ahead(JobRef(ids[k + 1]), cfg, env, lambda: False)
                assert ids[k + 1] in env["ahead"]
            assert archive_one(ref, cfg, env, lambda: False).kind == "done"
        env["source"].close()
        per_request = [[q["metric"] for q in s["body"]["queries"]] for s in sent]
        if name == "ahead":  # a small job is one request, sent once (ahead), used by its turn
            assert len(sent) == len(jobs)
        else:  # at most 72 x 61 samples a request: one hwthread metric each
            hw = {m.name for m in FRITZ.metric_config if m.scope == "hwthread"}
            assert sum(len(set(ms) & hw) == 1 and len(ms) == 1 for ms in per_request) == len(hw) * len(jobs)
    for job, truth in zip(jobs, truths, strict=True):
        assert_archived(archives["ahead"], job, expected_data(job, FRITZ, truth))
        assert archives["ahead"].load_data_bytes(job) == archives["per-metric"].load_data_bytes(job)


def test_a_job_opened_ahead_that_changed_meanwhile_is_read_again(tmp_path, store):
    job = synthetic_job(FRITZ, "main", 7200, now_minute() - 5 * HOUR, 1, 600, first_node=190)
    fill(store, FRITZ, job, make_truth(job, FRITZ, seed=90))
    db = JobDB.create(tmp_path / "job.db")
    (db_id,) = db.insert_jobs([job])
    cfg, env, arch = _worker_env(tmp_path, store)
    look_ahead(JobRef(db_id), cfg, env, lambda: False)
    loader = env["ahead"][db_id][1]
    db.mark_archived(db_id, {}, {}, 0.0)  # archived by someone else meanwhile
    msg = archive_one(JobRef(db_id), cfg, env, lambda: False)
    assert msg.kind == "skipped" and "already archived" in msg.message
    assert db_id not in env["ahead"] and loader._answers is None  # its requests dropped
    with pytest.raises(InputError, match="no archived job"):
        arch.load_meta_bytes(job)
    env["source"].close()


def test_missing_binary_fails_under_ci_and_skips_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("CCARCHIVE_CCMS_BINARY", str(tmp_path / "no-such-binary"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-binary"):
        require_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="CCARCHIVE_CCMS_BINARY"):
        require_binary()
    assert os.environ["CCARCHIVE_CCMS_BINARY"].endswith("no-such-binary")
