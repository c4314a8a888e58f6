"""The planning and loading shortcuts give what the plain computation gives: cached host layouts,
series shared between metrics, the usual answer recognised without a row dictionary."""

from __future__ import annotations

import numpy as np
import pytest

from ccarchive import loading, scopes
from ccarchive.cluster import load_cluster
from ccarchive.loading import PlanRows, _aggregate_plan, _aggregate_rows, native_requests
from ccarchive.model import Job, JobMetric, Resource, Unit
from ccarchive.scopes import plan_job

A40_GPUS = ["00000000:01:00.0", "00000000:25:00.0", "00000000:41:00.0", "00000000:61:00.0"]


def tiny(core: list[list[int]], memory_domain: list[list[int]] | None = None):
    """8 hwthreads; hwthread-, core- and memoryDomain-native metrics; the core groups as given."""
    def metric(name: str, scope: str, aggregation: str) -> dict:
        return {"name": name, "unit": {"base": ""}, "scope": scope, "aggregation": aggregation, "timestep": 10,
                "peak": 1, "normal": 1, "caution": 1, "alert": 1}
    return load_cluster({
        "name": "tiny", "metricConfig": [metric("hw", "hwthread", "sum"), metric("hw2", "hwthread", "avg"),
                                         metric("co", "core", "avg"), metric("md", "memoryDomain", "sum")],
        "subClusters": [{"name": "s", "nodes": "n[01-04]", "topology": {
            "node": list(range(8)), "socket": [[0, 1, 4, 5], [2, 3, 6, 7]],
            "memoryDomain": memory_domain or [[0, 4], [1, 5], [2, 6], [3, 7]], "core": core}}]})


SMT = [[0, 4], [1, 5], [2, 6], [3, 7]]


def job(cluster: str, sub: str, resources: list[Resource], num_acc: int = 0) -> Job:
    return Job(cluster=cluster, sub_cluster=sub, job_id=1, start_time=1_700_000_000, duration=600,
               resources=resources, num_nodes=len(resources), num_acc=num_acc)


def cold(j: Job, cluster) -> list[scopes.ScopePlan]:
    scopes._LAYOUTS.clear()
    return plan_job(j, cluster)


def jobs(fritz, alex):
    return [
        (job("fritz", "main", [Resource("f0101")]), fritz),
        (job("fritz", "main", [Resource("f0102", hwthreads=list(range(72)))]), fritz),
        (job("fritz", "main", [Resource("f0103", hwthreads=[40, 2, 3, 2]), Resource("f0104", hwthreads=[36])]), fritz),
        (job("fritz", "spr1tb", [Resource("f2157"), Resource("f2158", hwthreads=list(range(50)))]), fritz),
        (job("alex", "a40", [Resource("a0121", hwthreads=list(range(16)), accelerators=A40_GPUS[:2]),
                             Resource("a0122", accelerators=[A40_GPUS[3], A40_GPUS[0], A40_GPUS[3]])], 4), alex),
        (job("alex", "a40", [Resource("a0123", accelerators=A40_GPUS[:1]), Resource("a0124")], 1), alex),
    ]


def test_cached_layouts_give_the_plans_computed_afresh(fritz, alex):
    cases = jobs(fritz, alex)
    want = [cold(j, c) for j, c in cases]
    for j, c in cases + cases:  # warm, in another order of first use
        assert plan_job(j, c) == want[cases.index((j, c))]
    # other hosts, same layouts: only the hostnames differ
    j, c = cases[2]
    moved = job("fritz", "main", [Resource("f0201", hwthreads=[40, 2, 3, 2]), Resource("f0202", hwthreads=[36])])
    for got, plan in zip(plan_job(moved, c), want[2], strict=True):
        renamed = {"f0103": "f0201", "f0104": "f0202"}
        assert [(renamed[s.hostname], s.id, s.members) for s in plan.series] == \
            [(s.hostname, s.id, s.members) for s in got.series]


def test_layouts_belong_to_their_topology():
    """Two clusters with the same hosts and hwthreads but other cores: each gets its own series."""
    smt, paired = tiny(SMT), tiny([[0, 1], [2, 3], [4, 5], [6, 7]])
    j = job("tiny", "s", [Resource("n01", hwthreads=[0, 1, 4, 5])])
    a, b = plan_job(j, smt), plan_job(j, paired)
    assert a == cold(j, smt) and b == cold(j, paired)
    core = {p.metric.name: p for p in a if p.scope == "core"}["hw"]
    assert [s.members for s in core.series] == [("0", "4"), ("1", "5")]
    core = {p.metric.name: p for p in b if p.scope == "core"}["hw"]
    assert [s.members for s in core.series] == [("0", "1"), ("4", "5")]


def test_metrics_do_not_share_mutable_series(fritz):
    plans = plan_job(job("fritz", "main", [Resource("f0101")]), fritz)
    core = [p for p in plans if p.scope == "core"]
    assert len(core) > 1 and core[0].series == core[1].series
    core[0].series.clear()
    assert len(core[1].series) == 72
    assert len(next(p for p in plan_job(job("fritz", "main", [Resource("f0101")]), fritz)
                    if p.scope == "core").series) == 72


def test_layout_cache_is_bounded(fritz, monkeypatch):
    monkeypatch.setattr(scopes, "_LAYOUTS_MAX", 5)
    scopes._LAYOUTS.clear()
    for n in range(1, 30):
        j = job("fritz", "main", [Resource("f0101", hwthreads=list(range(n)))])
        got = plan_job(j, fritz)
        assert len(scopes._LAYOUTS) <= 5
        assert got == cold(j, fritz)


def test_metrics_for_is_computed_once_and_handed_out_as_a_copy(fritz):
    first = fritz.metrics_for("spr1tb")
    assert first == [m for m in (fritz.metric(c.name, "spr1tb") for c in fritz.metric_config) if m is not None]
    first.clear()
    assert len(fritz.metrics_for("spr1tb")) > 0
    assert fritz.metric("cpu_load") is fritz.metric_config[0]


# ---- answers of the store -> planned series

def answer(rows: list[tuple[str, str | None]], width: int = 12, seed: int = 0) -> JobMetric:
    """Native rows of random samples (ragged lengths, NaN gaps) for (hostname, id) keys."""
    rng = np.random.default_rng(seed)
    data = np.round(rng.uniform(-10, 10, (len(rows), width)), 2)
    data[rng.random(data.shape) < 0.1] = np.nan
    lengths = rng.integers(width - 3, width + 1, len(rows)).astype(np.int64)
    for i, n in enumerate(lengths):
        data[i, n:] = np.nan
    return JobMetric(Unit("F"), 10, [h for h, _ in rows], [i for _, i in rows], data, lengths)


def requested_rows(plans) -> list[tuple[str, str | None]]:
    return [(r.hostname, i) for r in native_requests(plans) for i in (r.ids if r.ids is not None else (None,))]


def same_block(a: JobMetric | None, b: JobMetric | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.hostnames, a.ids, a.unit, a.timestep) == (b.hostnames, b.ids, b.unit, b.timestep) and \
        a.data.shape == b.data.shape and np.array_equal(a.data, b.data, equal_nan=True) and \
        a.data.tobytes() == b.data.tobytes() and np.array_equal(a.lengths, b.lengths)


def plan_cases(fritz):
    smt = tiny(SMT)
    out = []
    for j, c in [(job("fritz", "main", [Resource("f0101"), Resource("f0102", hwthreads=[0, 40])]), fritz),
                 (job("tiny", "s", [Resource("n02", hwthreads=[5, 0, 4, 1]), Resource("n01", hwthreads=[6])]), smt)]:
        by_metric: dict[str, list] = {}
        for p in plan_job(j, c):
            by_metric.setdefault(p.metric.name, []).append(p)
        out += list(by_metric.values())
    return out


def test_the_usual_answer_takes_the_shortcut_and_gives_the_same_series(fritz, monkeypatch):
    cases = plan_cases(fritz)
    want = {}
    for k, plans in enumerate(cases):
        native = answer(requested_rows(plans), seed=k)
        for p in plans:
            want[k, p.scope] = _aggregate_rows(p, native)

    def general_path(*_args):
        raise AssertionError("a complete answer in request order must not need the row dictionary")

    monkeypatch.setattr(loading, "_aggregate_rows", general_path)
    for k, plans in enumerate(cases):
        native = answer(requested_rows(plans), seed=k)
        for p in plans:
            got = _aggregate_plan(p, native, PlanRows(p, native_requests(plans)))
            assert same_block(got, want[k, p.scope]), (p.metric.name, p.scope)
            assert got is not None and got.hostnames is not native.hostnames


@pytest.mark.parametrize("change", ["reversed", "missing", "extra", "repeated"])
def test_other_answers_give_what_the_general_path_gives(fritz, change):
    for k, plans in enumerate(plan_cases(fritz)):
        rows = requested_rows(plans)
        if change == "reversed":
            rows = rows[::-1]
        elif change == "missing":
            rows = rows[1:]
        elif change == "extra":
            rows = rows + [("f0999", rows[0][1])]
        else:
            rows = rows[:1] + rows  # the first key twice, with other samples
        native = answer(rows, seed=k)
        for p in plans:
            got = _aggregate_plan(p, native, PlanRows(p, native_requests(plans)))
            assert same_block(got, _aggregate_rows(p, native)), (change, p.metric.name)


def test_a_member_of_two_series_is_taken_for_both(monkeypatch):
    """Overlapping groups put one hwthread into two planned series: a complete answer lists it once,
    and both series get its row."""
    c = tiny([[0, 1], [1, 2], [3], [4, 5, 6, 7]])
    plans = [p for p in plan_job(job("tiny", "s", [Resource("n01", hwthreads=[0, 1, 2, 3])]), c)
             if p.metric.name == "hw"]
    core = next(p for p in plans if p.scope == "core")
    assert [s.members for s in core.series] == [("0", "1"), ("1", "2"), ("3",)]
    rows = PlanRows(core, native_requests(plans))
    assert rows.rows == [0, 1, 1, 2, 3] and rows.groups is not None and rows.groups.tolist() == [0, 0, 1, 1, 2]
    native = answer(requested_rows(plans))
    want = _aggregate_rows(core, native)
    # an answer listing "1" twice: matched by key (the last of them), not by position
    twice = answer([("n01", i) for i in ("0", "1", "1", "2", "3")], seed=3)
    want_twice = _aggregate_rows(core, twice)
    assert same_block(_aggregate_plan(core, twice, rows), want_twice)
    monkeypatch.setattr(loading, "_aggregate_rows", None)  # the complete answer needs no dictionary
    got = _aggregate_plan(core, native, rows)
    assert same_block(got, want)
    assert got is not None and got.ids == ["0", "1", "3"]
