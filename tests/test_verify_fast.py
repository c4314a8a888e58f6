"""The fast verify (kernel-parsed data.json, compiled schema checks, worker processes) finds what
the straightforward path finds: json.loads and jsonschema's own validators, one job at a time."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from backend_fixtures import fixture_clusters, fixture_jobs, synthetic_results

from ccarchive.archive import open_archive
from ccarchive.formats.data import encode_job_data
from ccarchive.formats.meta import encode_job_meta
from ccarchive.validate import _data_errors, _meta_errors, get_validator
from ccarchive.verify import _data_skeleton, _skeleton, verify_archive


def _plain_found(name: str, doc: Any, relaxed: bool) -> list[tuple[Any, str]]:
    return [(tuple(e.absolute_path), e.message) for e in get_validator(name, relaxed=relaxed).iter_errors(doc)]


def _fast_found(errors: Any) -> list[tuple[Any, str]]:
    return [(path, e.message) for path, e in errors]


def _edit(path: Path, fn: Any) -> None:
    """Rewrite a data.json.gz (or meta.json) through ``fn`` on its text."""
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(fn(gzip.decompress(path.read_bytes()).decode()).encode()))
    else:
        path.write_text(fn(path.read_text()))


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A file archive of fixture and synthetic jobs with one injected problem per job; returns the
    root and, per problem, the job directory it is in."""
    from ccarchive.demo import embedded_cluster

    root = tmp_path_factory.mktemp("verify") / "archive"
    arch = open_archive(str(root), create=True)
    have = {c.name: c for c in fixture_clusters()}
    results = synthetic_results(8)
    for name in sorted(set(have) | {r.job.key[0] for _, r in results}):
        arch.store_cluster(have.get(name) or embedded_cluster(name))
    raws = [(j.key, j.meta, j.data) for j in fixture_jobs()]
    raws += [(r.job.key, encode_job_meta(r.job), encode_job_data(r.data)) for _, r in results]
    for key, meta, data in raws:
        arch.write_encoded(key, data, meta)
    dirs = sorted(p.parent for p in root.glob("*/*/*/*/meta.json"))
    assert len(dirs) >= 8
    rel = {d: str(d.relative_to(root)) for d in dirs}
    data_file = {d: next(d.glob("data.json*")) for d in dirs}
    problems: dict[str, str] = {}
    synth = [d for d in dirs if data_file[d].suffix == ".gz"]

    def inject(name: str, d: Path) -> None:
        problems[name] = rel[d]

    d = synth[0]  # a schema field of the wrong type
    _edit(d / "meta.json", lambda t: re.sub(r'"numNodes":\d+', '"numNodes":"two"', t, count=1))
    inject("bad schema field", d)
    d = synth[1]  # a series statistic that is NaN (null), and a literal NaN sample
    _edit(data_file[d], lambda t: re.sub(r'"avg":[-0-9.]+', '"avg":null', t, count=1)
          .replace('"data":[', '"data":[NaN,', 1))
    inject("NaN", d)
    d = synth[2]  # truncated gzip
    data_file[d].write_bytes(data_file[d].read_bytes()[:-200])
    inject("truncated gzip", d)
    d = synth[3]  # missing data file
    data_file[d].unlink()
    inject("missing file", d)
    d = synth[4]  # wrong statistics: negative, integer-valued, and a string among the samples
    _edit(data_file[d], lambda t: re.sub(r'"min":\[[-0-9.]+,', '"min":[-3,', t, count=1)
          .replace('"data":[', '"data":["x",', 1))
    inject("wrong stats", d)
    d = synth[5]  # not JSON at all
    _edit(data_file[d], lambda t: t[: len(t) // 2])
    inject("not JSON", d)
    return root, problems


def _lines(rep: Any) -> list[str]:
    return [f"{rep.clusters} clusters, {rep.jobs} jobs", *rep.errors, *rep.all_warnings()]


def test_parallel_report_equals_serial_and_names_every_problem(damaged: tuple[Path, dict[str, str]]) -> None:
    root, problems = damaged
    arch = open_archive(str(root))
    serial = verify_archive(arch, workers=1)
    parallel = verify_archive(arch, workers=2)
    assert _lines(parallel) == _lines(serial)
    errors = "\n".join(serial.errors)
    assert f"{problems['bad schema field']}/meta.json: numNodes: 'two' is not of type 'integer'" in errors
    assert f"{problems['NaN']}/data.json: " in errors and "None is not of type 'number'" in errors
    assert f"{problems['truncated gzip']}: data file unreadable" in errors
    assert f"{problems['missing file']}: meta.json without a data file" in errors
    assert f"{problems['wrong stats']}/data.json: " in errors and "'x' is not a number or null" in errors
    assert f"{problems['not JSON']}: data file unreadable" in errors
    warnings = "\n".join(serial.all_warnings())
    assert "-3 is less than the minimum of 0" in warnings  # the integer stays an integer


def test_kernel_sampling_equals_json_loads_sampling(damaged: tuple[Path, dict[str, str]]) -> None:
    """Per job, the sampled data.json built from the kernel's arrays is the one built from json.loads."""
    root, _ = damaged
    arch = open_archive(str(root))
    compared = 0
    for c in arch.clusters():
        for entry in arch.list_entries(c):
            try:
                raw = arch.load_data_bytes(entry.key)
                expected_errors: list[str] = []
                expected = _skeleton(json.loads(raw), entry.rel, expected_errors)
            except Exception:  # noqa: BLE001, S112 - damaged on purpose: covered by the report test
                continue
            got_errors: list[str] = []
            got = _data_skeleton(raw, entry.rel, got_errors)
            assert json.dumps(got) == json.dumps(expected)  # types too: 1 and 1.0 dump differently
            assert got_errors == expected_errors
            compared += 1
    assert compared >= 6


def test_compiled_checks_give_jsonschemas_messages(damaged: tuple[Path, dict[str, str]]) -> None:
    """With the compiled checks skipping what is valid, the errors are jsonschema's own, in order."""
    root, _ = damaged
    arch = open_archive(str(root))
    n = 0
    for c in arch.clusters():
        for entry in arch.list_entries(c):
            if "meta.json" not in entry.names:
                continue
            meta = json.loads(arch.load_meta_bytes(entry.key))
            for relaxed in (True, False):
                assert _fast_found(_meta_errors(meta, relaxed))[: len(_plain_found("job-meta", meta, relaxed))] == \
                    _plain_found("job-meta", meta, relaxed)
            try:
                data = _skeleton(json.loads(arch.load_data_bytes(entry.key)), entry.rel, [])
            except Exception:  # noqa: BLE001, S112 - damaged on purpose
                continue
            for relaxed in (True, False):
                fast = _fast_found(_data_errors(data, relaxed))
                plain = _plain_found("job-data", data, relaxed)
                assert fast[: len(plain)] == plain
                n += len(plain)
    assert n > 0  # some documents did have errors to compare
