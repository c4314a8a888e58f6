"""The cc-metric-store source against faults (tests/ccms_server.py, a stand-in that fails on demand).

Correctness against the real server is tests/test_source_ccms_real.py; here the stand-in answers
like cc-metric-store v0.1.1 (or, with ``missing = "omit"``, like v1.5) and then breaks: HTTP 500,
garbage, slowness, wrong counts, and a gate that holds requests to observe the client's concurrency.
"""

from __future__ import annotations

import socket
import time

import jwt
import numpy as np
import pytest
from ccms_server import CCMSServer, Store, assert_archived, expected_data, make_truth, run_pipeline
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ccarchive.archive import open_archive
from ccarchive.core import archive_job
from ccarchive.demo import embedded_cluster
from ccarchive.errors import FormatError, InputError, TransientError
from ccarchive.loading import native_requests
from ccarchive.scopes import plan_job
from ccarchive.sources.ccms import CCMetricStoreSource
from ccarchive.sources.registry import source_from_spec
from ccarchive.sources.router import RouterSource, routes_from_cc_backend
from ccarchive.sources.synthetic import synthetic_job
from ccarchive.worker import is_transient

START = 1_767_225_600
HWTHREADS = [0, 1, 2, 3, 10, 11, 20, 33]  # numeric order differs from string order


@pytest.fixture(scope="module")
def fritz():
    return embedded_cluster("fritz")


@pytest.fixture(scope="module")
def keys():
    private = Ed25519PrivateKey.generate()
    token = jwt.encode({"sub": "ccarchive", "roles": ["api"]}, private, algorithm="EdDSA")
    return private.public_key(), token


def new_store(cluster) -> Store:
    return Store(metrics={m.name: (m.timestep, m.aggregation) for m in cluster.metric_config})


def fill(store: Store, cluster, job, truth) -> None:
    scope = {m.name: m.scope for m in cluster.metric_config}
    for metric, series in truth.items():
        for (host, i), v in series.items():
            store.write(cluster.name, host, metric, job.start_time, v.tolist(), None if i is None else scope[metric], i)


def a_job(cluster, job_id=4242, nodes=2, duration=3600, sub="main", hw=HWTHREADS, first_node=0):
    return synthetic_job(cluster, sub, job_id, START + job_id, nodes, duration, hwthreads=hw, first_node=first_node)


@pytest.mark.parametrize("missing", ["error-entry", "omit"])
def test_missing_series_as_error_entries_or_left_out(tmp_path, fritz, missing):
    """v0.1.1 answers a missing id with an error entry in its slot (used as it is); v1.5 leaves it
    out, so the host is asked again id by id and later ids never shift."""
    job = a_job(fritz)
    h0, h1 = job.hostnames
    truth = make_truth(job, fritz, seed=1)
    stored = {m: dict(s) for m, s in truth.items()}
    del stored["ib_xmit"]  # a metric without any data
    del stored["nfs4_read"][(h1, None)]  # a host without data for one metric
    del stored["cpu_user"][(h0, "3")]  # one hwthread missing
    store = new_store(fritz)
    fill(store, fritz, job, stored)
    with CCMSServer(store) as srv:
        srv.missing = missing
        srv.read_errors = {(h1, "mem_used")}
        arch = open_archive(f"file://{tmp_path}/archive", create=True)
        result = archive_job(job, source=CCMetricStoreSource(srv.url), archive=arch, cluster=fritz)
    expected_truth = {m: dict(s) for m, s in stored.items()}
    del expected_truth["mem_used"][(h1, None)]
    assert_archived(arch, job, expected_data(job, fritz, expected_truth))
    text = "\n".join(result.warnings)
    assert f"ib_xmit: no data for {h0}: cc-metric-store has no such series" in text
    assert f"nfs4_read: no data for {h1}: cc-metric-store has no such series" in text
    assert f"cpu_user: no data for {h0} id 3: cc-metric-store has no such series" in text
    assert f"mem_used: no data for {h1}: cc-metric-store error: injected read error" in text
    single = [(q["metric"], q["host"]) for r in srv.requests for q in r["body"]["queries"]
              if len(q.get("type-ids") or ()) == 1 and q["metric"] == "cpu_user"]
    if missing == "omit":  # only the ambiguous host is asked again, id by id
        assert single == [("cpu_user", h0)] * len(HWTHREADS)
    else:
        assert single == []


def test_requests_in_flight_across_metrics(fritz):
    """Fetches are sent ahead of the consumer: requests of several metrics are in flight
    together, never more than max-concurrency."""
    job = a_job(fritz, nodes=4, duration=4 * 3600)
    truth = make_truth(job, fritz, seed=2)
    store = new_store(fritz)
    fill(store, fritz, job, truth)
    with CCMSServer(store) as srv:
        srv.gate = 3
        src = source_from_spec({"kind": "router", "routes": {"*": {  # as serve builds it from cc-backend's config
            "kind": "cc-metric-store", "url": srv.url, "max-concurrency": 3, "max-points-per-request": 20_000}}})
        t0 = time.monotonic()
        result = archive_job(job, source=src, archive=None, cluster=fritz)
        assert time.monotonic() - t0 < 10  # the gate opened: 3 requests were in flight
    assert srv.max_in_flight == 3 and len(srv.together) == 1 and len(srv.together[0]) >= 2
    assert not result.warnings


def test_unreachable_store_and_5xx_and_timeout_are_transient(fritz):
    job = a_job(fritz)
    metric = fritz.metric("cpu_load", "main")
    reqs = native_requests([p for p in plan_job(job, fritz) if p.metric.name == "cpu_load"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(TransientError, match="unreachable") as e:
        CCMetricStoreSource(f"http://127.0.0.1:{port}").fetch(job, fritz, metric, "node", reqs)
    assert is_transient(e.value) and job.label in str(e.value) and "cpu_load" in str(e.value)

    with CCMSServer(new_store(fritz)) as srv:
        srv.fault = "status-500"
        with pytest.raises(TransientError, match="HTTP 500"):
            CCMetricStoreSource(srv.url).fetch(job, fritz, metric, "node", reqs)
        srv.fault, srv.slow_s = "slow", 30
        t0 = time.monotonic()
        src = source_from_spec({"kind": "cc-metric-store", "url": srv.url, "timeout-s": 0.3, "max-timeout-s": 0.3})
        with pytest.raises(TransientError, match="did not answer within") as e:
            src.fetch(job, fritz, metric, "node", reqs)
        assert time.monotonic() - t0 < 10 and is_transient(e.value)


@pytest.mark.parametrize("fault", ["bad-json", "wrong-count", "non-numeric"])
def test_malformed_answer_names_job_metric_and_host(fritz, fault):
    job = a_job(fritz)
    truth = make_truth(job, fritz, seed=3, metrics={"cpu_load"})
    store = new_store(fritz)
    fill(store, fritz, job, truth)
    with CCMSServer(store) as srv:
        srv.fault = fault
        with pytest.raises(FormatError) as e:
            archive_job(job, source=CCMetricStoreSource(srv.url), archive=None, cluster=fritz)
    msg = str(e.value)
    named_metric = any(f" {p.metric.name}," in msg for p in plan_job(job, fritz)) and " metric" in msg
    assert job.label in msg and named_metric and job.hostnames[0] in msg and "\n" not in msg, msg
    assert not is_transient(e.value)


def test_token_from_env_and_rejected_token(fritz, keys, monkeypatch):
    public, token = keys
    job = a_job(fritz)
    truth = make_truth(job, fritz, seed=4, metrics={"cpu_load"})
    store = new_store(fritz)
    fill(store, fritz, job, truth)
    metric = fritz.metric("cpu_load", "main")
    reqs = native_requests([p for p in plan_job(job, fritz) if p.metric.name == "cpu_load"])
    with CCMSServer(store, public_key=public) as srv:
        monkeypatch.setenv("CCMS_TOKEN", token)
        ok = source_from_spec({"kind": "cc-metric-store", "url": srv.url, "token-env": "CCMS_TOKEN"})
        assert ok.fetch(job, fritz, metric, "node", reqs).block.num_series == 2
        bad = source_from_spec({"kind": "cc-metric-store", "url": srv.url, "token": token[:-4] + "AAAA"})
        with pytest.raises(InputError, match="HTTP 401") as e:
            bad.fetch(job, fritz, metric, "node", reqs)
        assert not is_transient(e.value)
    with pytest.raises(InputError, match="NO_SUCH_VAR"):
        source_from_spec({"kind": "cc-metric-store", "url": "http://x", "token-env": "NO_SUCH_VAR"})
    with pytest.raises(InputError, match="unknown option"):
        source_from_spec({"kind": "cc-metric-store", "url": "http://x", "tokn": "t"})


def test_router_selects_subcluster_then_cluster_then_star(fritz):
    main_job = a_job(fritz, job_id=1)
    spr_job = synthetic_job(fritz, "spr1tb", 2, START, 1, 600, hwthreads=4)
    other = synthetic_job(embedded_cluster("alex"), "a40", 3, START, 1, 600)
    with CCMSServer(new_store(fritz)) as a, CCMSServer(new_store(fritz)) as b:
        router = source_from_spec({"kind": "router", "routes": {
            "fritz": {"kind": "cc-metric-store", "url": a.url},
            "fritz-spr1tb": {"kind": "cc-metric-store", "url": b.url}}})
        assert isinstance(router, RouterSource)
        assert router.route_key(main_job, fritz) == "fritz"
        assert router.route_key(spr_job, fritz) == "fritz-spr1tb"
        assert router.source_for(spr_job, fritz).url == b.url
        assert router.source_for(main_job, fritz) is router.source_for(main_job, fritz)  # built once
        with pytest.raises(InputError, match="no metric source configured for cluster 'alex'"):
            router.route_key(other, embedded_cluster("alex"))
    spec = routes_from_cc_backend([{"scope": "*", "url": "http://ccms:8082", "token": "T"}], **{"max-concurrency": 2})
    assert spec == {"kind": "router", "routes": {"*": {"kind": "cc-metric-store", "url": "http://ccms:8082",
                                                       "token": "T", "max-concurrency": 2}}}
    star = RouterSource.from_spec(spec)
    assert star.route_key(other, embedded_cluster("alex")) == "*"


def test_pipeline_archives_jobs_from_ccms_and_retries_transient_errors(tmp_path, fritz, keys):
    public, token = keys
    jobs = [a_job(fritz, job_id=9000 + k, nodes=1 + k, duration=1800 + 600 * k, first_node=4 * k) for k in range(3)]
    store = new_store(fritz)
    truths = []
    for k, job in enumerate(jobs):
        truths.append(make_truth(job, fritz, seed=10 + k))
        fill(store, fritz, job, truths[-1])
    with CCMSServer(store, public_key=public) as srv:
        srv.fail_requests = 2  # the first attempts fail with HTTP 500
        db, arch, ids, messages = run_pipeline(
            tmp_path, fritz, jobs, {"kind": "cc-metric-store", "url": srv.url, "token": token})
    assert [db.get_job(i).monitoring_status for i in ids] == [3, 3, 3]
    failed = [m for m in messages if m.kind == "failed"]
    assert failed and all(m.transient and "HTTP 500" in m.message for m in failed)
    for job, truth in zip(jobs, truths, strict=True):
        assert_archived(arch, job, expected_data(job, fritz, truth))


# ---- the answer decoder: the usual answer as one block, anything else entry by entry -------------

def _answer(*entries: str) -> bytes:
    return ('{"results":[[' + ",".join(entries) + "]]}").encode()


def test_decoder_takes_a_host_s_ids_over_the_same_times_as_one_block():
    from ccarchive.sources.ccms import decode_answer

    (entries,), _ = decode_answer(_answer('{"data":[1.5,2],"from":60,"to":180,"resolution":60,"avg":1}',
                                          '{"data":[null,4.25],"from":60,"to":180,"resolution":60,"avg":4}'))
    assert len(entries) == 1 and entries[0].rows == 2 and (entries[0].frm, entries[0].to) == (60, 180)
    np.testing.assert_array_equal(entries[0].values, [[1.5, 2.0], [np.nan, 4.25]])
    single = entries[0].split()
    assert [e.rows for e in single] == [1, 1]
    np.testing.assert_array_equal(np.vstack([e.values for e in single]), entries[0].values)


@pytest.mark.parametrize("second", [
    '{"error":"metric or host not found","from":60,"to":180,"resolution":60}',  # v0.1.1's missing id
    '{"data":[3],"from":60,"to":180,"resolution":60}',  # shorter
    '{"data":[3,4],"from":120,"to":240,"resolution":60}',  # other times
])
def test_decoder_reads_entry_by_entry_where_they_differ(second):
    from ccarchive.sources.ccms import decode_answer

    (entries,), _ = decode_answer(_answer('{"data":[1,2],"from":60,"to":180,"resolution":60}', second))
    assert [e.rows for e in entries] == [1, 1]
    assert entries[0].values.tolist() == [[1.0, 2.0]] and entries[0].error is None
    assert (entries[1].error is not None) == ("error" in second)


@pytest.mark.parametrize("second, why", [
    ('{"data":[true],"from":60,"to":120,"resolution":60}', "not numeric"),  # [true] == [1] in Python
    ('{"data":[3],"from":60,"resolution":60}', "from/to"),
    ('{"data":[3],"from":60.0,"to":120,"resolution":60}', "from/to"),
    ('[3]', "not an object"),
])
def test_decoder_names_a_bad_entry_after_a_good_one(second, why):
    from ccarchive.sources.ccms import BadEntry, decode_answer

    with pytest.raises(BadEntry, match=why) as e:
        decode_answer(_answer('{"data":[1.5],"from":60,"to":120,"resolution":60}', second))
    assert (e.value.query, e.value.index) == (0, 1)


def _decoded(decode, raw: bytes):
    """What a decoder makes of ``raw``: its entries (values by bit pattern) or its exception."""
    try:
        results, base = decode(raw)
    except ValueError as e:
        return type(e).__name__, str(e), getattr(e, "query", None), getattr(e, "index", None)
    return base.tobytes(), [[(e.error, e.frm, e.to, e.resolution, e.rows, e.count, e.offset, e.values.tobytes())
                             for e in entries] for entries in results]


_USUAL = ('{"data":[1.5,null,2],"from":60,"to":240,"resolution":60,"avg":0.000,"min":0.000,"max":0.000}',
          '{"error":"metric or host not found","from":60,"to":240,"resolution":60}')


@pytest.mark.parametrize("raw, usual", [
    (_answer(_USUAL[0], _USUAL[0]), True),
    (_answer(_USUAL[0], _USUAL[1], _USUAL[0]), True),
    (b'{"results":[]}', True),
    ('{"results":[[],[' + _USUAL[0] + ']]}\n', True),
    (b' {\n "results" : [ [ { "resolution" : 60 , "to" : 9 , "from" : 3 , "data" : [ 1 , 2 ] } ] ] } ', True),
    (_answer('{"data":[1e400,-0,12345678901234567890],"from":-5,"to":0,"resolution":0,"x":true,"y":"z"}'), True),
    (_answer('{"data":[],"from":1,"to":2,"resolution":60}', '{"data":[],"from":1,"to":2,"resolution":60}'), True),
    # not the usual shape: the general path decides (the same entries, or the same error)
    (_answer('{"data":[1],"from":60,"to":120}'), False),  # no resolution
    (_answer('{"data":null,"from":60,"to":120,"resolution":60}'), False),
    (_answer('{"data":[1],"from":60,"to":120,"resolution":60,"error":null}'), False),
    (_answer('{"error":"caf\u00e9","from":60,"to":120,"resolution":60}'), False),
    (_answer('{"error":"x","from":60,"to":120,"resolution":60,"from":61}'), False),
    (_answer('{"data":[1],"from":60,"to":120,"resolution":60,"stats":[1,2]}'), False),
    (_answer('{"d\\u0061ta":[1],"from":60,"to":120,"resolution":60}'), False),
    (_answer('{"data":[1],"from":60,"to":120,"resolution":1e2}'), False),
    (_answer('{"data":[1],"from":60,"to":120,"resolution":01}'), False),
    (_answer('{"data":[1],"from":1234567890123456789012,"to":120,"resolution":60}'), False),
    (_answer('{"data":[true],"from":60,"to":120,"resolution":60}'), False),
    (_answer('{}'), False),
    (_answer('[1]'), False),
    (b'{"results":[[' + _USUAL[0].encode() + b']],"x":1}', False),
    (b'{"results":[[' + _USUAL[0].encode() + b']]} x', False),
    (b'{"results":[[' + _USUAL[0].encode() + b']', False),
    (b'{"results":{}}', False),
    (b'[]', False),
])
def test_decoder_kernel_reads_the_usual_answer_as_the_general_path_does(raw, usual):
    from ccarchive.kernels.jsonnum import parse_query_answer
    from ccarchive.sources.ccms import _document_entries, decode_answer

    raw = raw if isinstance(raw, bytes) else raw.encode()
    assert (parse_query_answer(raw) is not None) == usual
    assert _decoded(decode_answer, raw) == _decoded(_document_entries, raw)


_spaces = st.sampled_from(["", " ", "\n  "])
_numbers = st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False),
                              st.integers(-10**6, 10**6).map(lambda k: k / 1000)), max_size=5)
_members = {
    "data": st.one_of(_numbers.map(lambda v: "[" + ",".join("null" if x is None else repr(x) for x in v) + "]"),
                      st.sampled_from(["null", "[true]", '"x"'])),
    "from": st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["60", "60.0", "null", '"60"'])),
    "to": st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["120", "1e2"])),
    "resolution": st.sampled_from(["60", "0", "null", "30"]),
    "error": st.sampled_from(['"metric or host not found"', "null", '"a\\"b"', "1"]),
    "avg": st.sampled_from(["0.000", "null", "[1]", "{}", "true"]),
}


@st.composite
def _entry(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(sorted(_members)), max_size=7))
    if draw(st.booleans()):
        keys = ["data", "from", "to", "resolution", *keys]
    ws = draw(_spaces)
    return "{" + ws + ",".join(f'"{k}"{ws}:{ws}{draw(_members[k])}' for k in keys) + "}"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.lists(_entry(), max_size=4),
                          _entry().flatmap(lambda e: st.integers(1, 4).map(lambda k: [e] * k))),  # a block
                max_size=3), _spaces)
def test_decoder_kernel_and_general_path_agree(queries: list[list[str]], ws: str) -> None:
    from ccarchive.sources.ccms import _document_entries, decode_answer

    raw = ('{"results":[' + f",{ws}".join("[" + ",".join(q) + "]" for q in queries) + "]}").encode()
    assert _decoded(decode_answer, raw) == _decoded(_document_entries, raw)
