"""cluster.json: loading rules, subcluster overrides, host lists, topology helpers, Go encoding."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ccarchive.cluster import HostList, encode_cluster, load_cluster
from ccarchive.errors import ClusterConfigError

FIX = Path(__file__).parent / "fixtures" / "cc-backend"
CONFIGS = {
    "alex": FIX / "archive" / "alex" / "cluster.json",
    "emmy": FIX / "archive" / "emmy" / "cluster.json",
    "fritz": FIX / "archive" / "fritz" / "cluster.json",
    "import-fritz": FIX / "import" / "cluster-fritz.json",
}

# Go struct field order (cc-lib schema/cluster.go); "?" = omitempty
ORDER = {
    "cluster": ["name", "metricConfig", "subClusters"],
    "metric": ["name", "unit", "peak", "normal", "caution", "alert", "energy", "scope", "aggregation",
               "footprint?", "subClusters?", "timestep", "restrict", "lowerIsBetter"],
    "override": ["name", "unit", "peak", "normal", "caution", "alert", "footprint?", "energy",
                 "lowerIsBetter", "restrict", "remove"],
    "subcluster": ["name", "nodes", "processorType", "topology", "flopRateScalar", "flopRateSimd",
                   "memoryBandwidth", "metricConfig?", "footprint?", "energyFootprint?", "socketsPerNode",
                   "coresPerSocket", "threadsPerCore"],
    "topology": ["node", "socket", "memoryDomain", "die?", "core", "accelerators?"],
    "unit": ["base", "prefix?"],
    "value": ["unit", "value"],
    "accelerator": ["id", "type", "model"],
}


@pytest.fixture(scope="module")
def clusters():
    return {k: load_cluster(p) for k, p in CONFIGS.items()}


def raw(name: str) -> dict:
    return json.loads(CONFIGS[name].read_text())


def test_load_fixtures(clusters):
    fritz, alex, emmy = clusters["fritz"], clusters["alex"], clusters["emmy"]
    assert [s.name for s in fritz.sub_clusters] == ["main", "spr1tb", "spr2tb"]
    assert [s.name for s in alex.sub_clusters] == ["a40", "a100", "a100m80"]
    assert [s.name for s in emmy.sub_clusters] == ["haswell", "skylake", "kabylake", "icelake"]
    assert len(fritz.metric_config) == 19 and len(alex.metric_config) == 15 and len(emmy.metric_config) == 13
    assert clusters["import-fritz"].name == "fritz"
    mem_bw = fritz.metric("mem_bw")
    assert (mem_bw.scope, mem_bw.aggregation, mem_bw.timestep) == ("socket", "sum", 60)
    assert mem_bw.unit.prefix == "G"
    assert alex.sub_cluster("a40").topology.accelerators[0].id == "00000000:01:00.0"
    assert alex.sub_cluster("a40").memory_bandwidth.value == 400.0
    assert emmy.metric("ipc").alert == 0.25


def _check_order(obj, kind):
    keys = list(obj)
    expected = [k.rstrip("?") for k in ORDER[kind] if not k.endswith("?") or k.rstrip("?") in keys]
    assert keys == expected, kind


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_encode_field_order_and_omitempty(clusters, name):
    out = encode_cluster(clusters[name])
    assert out.endswith(b"}\n") and out.count(b"\n") == 1
    doc = json.loads(out)
    _check_order(doc, "cluster")
    for m in doc["metricConfig"]:
        _check_order(m, "metric")
        _check_order(m["unit"], "unit")
        assert m.get("footprint", "x") != "" and m.get("subClusters", [1]) != []  # omitempty drops empties
        for o in m.get("subClusters", []):
            _check_order(o, "override")
    for s in doc["subClusters"]:
        _check_order(s, "subcluster")
        _check_order(s["topology"], "topology")
        for k in ("flopRateScalar", "flopRateSimd", "memoryBandwidth"):
            _check_order(s[k], "value")
        for a in s["topology"].get("accelerators", []):
            _check_order(a, "accelerator")
    assert load_cluster(out) == clusters[name]
    assert encode_cluster(load_cluster(out)) == out


def _normalized(doc: dict) -> dict:
    """What Go writes for a decoded input: zero values filled in, omitempty empties dropped."""
    doc = copy.deepcopy(doc)

    def unit(u):
        return {"base": u.get("base", "")} | ({"prefix": u["prefix"]} if u.get("prefix") else {})

    for m in doc["metricConfig"]:
        m["unit"] = unit(m.get("unit", {}))
        m.setdefault("energy", "")
        m["scope"] = m.get("scope") or "node"
        for k in ("restrict", "lowerIsBetter"):
            m.setdefault(k, False)
        if not m.get("footprint"):
            m.pop("footprint", None)
        if not m.get("subClusters"):
            m.pop("subClusters", None)
        for o in m.get("subClusters", []):
            o["unit"] = unit(o.get("unit", {}))
            for k in ("peak", "normal", "caution", "alert"):
                o.setdefault(k, 0)
            for k in ("energy",):
                o.setdefault(k, "")
            for k in ("lowerIsBetter", "restrict", "remove"):
                o.setdefault(k, False)
            if not o.get("footprint"):
                o.pop("footprint", None)
    for s in doc["subClusters"]:
        for k in ("flopRateScalar", "flopRateSimd", "memoryBandwidth"):
            s[k]["unit"] = unit(s[k]["unit"])
    return doc


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_encode_content_equals_input_modulo_go_rules(clusters, name):
    assert json.loads(encode_cluster(clusters[name])) == _normalized(raw(name))


def test_encode_exact_bytes_fritz(clusters):
    out = encode_cluster(clusters["fritz"])
    assert out.startswith(
        b'{"name":"fritz","metricConfig":[{"name":"cpu_load","unit":{"base":""},"peak":72,"normal":72,'
        b'"caution":36,"alert":20,"energy":"","scope":"node","aggregation":"avg","footprint":"avg",'
        b'"subClusters":[{"name":"spr1tb","unit":{"base":""},"peak":104,"normal":104,"caution":52,"alert":20,'
        b'"footprint":"avg","energy":"","lowerIsBetter":false,"restrict":false,"remove":false},')
    assert b'"name":"ipc","unit":{"base":"IPC"},"peak":4,"normal":2,"caution":1,"alert":0.5,' in out
    assert b'"flopRateScalar":{"unit":{"base":"F/s","prefix":"G"},"value":432},' in out
    assert b'"socketsPerNode":2,"coresPerSocket":36,"threadsPerCore":1}' in out
    assert b" " not in out.replace(b"Intel Icelake", b"").replace(b"Intel(R) Xeon(R) Platinum 8470", b"")


def test_encode_go_escaping_and_defaults():
    doc = raw("import-fritz")
    doc["subClusters"][0]["processorType"] = "a<b>&c"
    doc["metricConfig"][0]["scope"] = ""
    del doc["metricConfig"][1]["scope"]
    out = encode_cluster(load_cluster(doc))
    assert b'"processorType":"a\\u003cb\\u003e\\u0026c"' in out
    first, second = json.loads(out)["metricConfig"][:2]
    assert first["scope"] == "node" and second["scope"] == "node"


def test_go_decoding_rules():
    doc = raw("import-fritz")
    m = doc["metricConfig"][0]
    m["PEAK"] = m.pop("peak")  # case-insensitive key match
    m["colour"] = "blue"  # unknown keys are ignored
    m["footprint"] = None  # null leaves the zero value
    c = load_cluster(doc)
    assert c.metric("cpu_load").peak == 72.0 and c.metric("cpu_load").footprint == ""


def test_overrides_fritz(clusters):
    fritz = clusters["fritz"]
    assert fritz.metric("flops_any", "spr2tb") is None  # removed
    assert fritz.metric("flops_any", "spr1tb").footprint == "avg"
    assert fritz.metric("flops_any", "main").peak == 5600.0
    mem = fritz.metric("mem_used", "spr1tb")
    assert (mem.peak, mem.normal, mem.footprint, mem.lower_is_better) == (1024.0, 512.0, "max", True)
    assert fritz.metric("mem_used", "main").footprint == "max"
    load = fritz.metric("cpu_load", "spr1tb")
    assert (load.peak, load.caution, load.unit, load.scope, load.aggregation, load.timestep) == (
        104.0, 52.0, fritz.metric("cpu_load").unit, "node", "avg", 60)
    assert load.sub_clusters == [] and fritz.metric("cpu_load").peak == 72.0  # base untouched
    names = [m.name for m in fritz.metrics_for("spr2tb")]
    assert names[:3] == ["cpu_load", "cpu_user", "mem_used"]
    assert not {"flops_any", "flops_sp", "flops_dp", "mem_bw", "clock"} & set(names)
    assert len(fritz.metrics_for("main")) == 19
    assert fritz.metric("nope") is None and fritz.metric("nope", "main") is None
    with pytest.raises(ClusterConfigError, match="unknown subcluster 'x' of cluster 'fritz'"):
        fritz.metric("cpu_load", "x")


def test_override_without_footprint_means_none():
    doc = raw("import-fritz")
    doc["metricConfig"][0]["subClusters"] = [
        {"name": "main", "peak": 10, "normal": 5, "caution": 2, "alert": 1, "energy": "power",
         "restrict": True}]
    m = load_cluster(doc).metric("cpu_load", "main")
    assert (m.footprint, m.energy, m.restrict, m.peak) == ("", "power", True, 10.0)


@pytest.mark.parametrize(("cluster", "host", "sub"), [
    ("fritz", "f0649", "main"), ("fritz", "f0101", "main"), ("fritz", "f1256", "main"),
    ("fritz", "f2157", "spr1tb"), ("fritz", "f2185", "spr1tb"),  # overlaps spr2tb: first in file order
    ("fritz", "f2281", "spr1tb"), ("alex", "a0831", "a100m80"), ("alex", "a0125", "a40"),
    ("alex", "a0221", "a40"), ("alex", "a0603", "a100"), ("emmy", "w1127", "haswell"),
    ("emmy", "w1163", "haswell"), ("emmy", "w1333", "skylake"), ("emmy", "w2335", "icelake"),
    ("import-fritz", "f0649", "main"),
])
def test_sub_cluster_for_host(clusters, cluster, host, sub):
    assert clusters[cluster].sub_cluster_for_host(host).name == sub


@pytest.mark.parametrize(("cluster", "host"), [
    ("fritz", "f0189"), ("fritz", "f649"), ("fritz", "f06490"), ("alex", "a0832"), ("emmy", "w1146"),
    ("emmy", "w1332"), ("fritz", "x0101"),
])
def test_unknown_host(clusters, cluster, host):
    with pytest.raises(ClusterConfigError, match=f"host '{host}' is in no subcluster of cluster"):
        clusters[cluster].sub_cluster_for_host(host)


def test_star_subcluster():
    doc = raw("import-fritz")
    doc["subClusters"].append(dict(doc["subClusters"][0], name="rest", nodes="*"))
    c = load_cluster(doc)
    assert c.sub_cluster_for_host("f0101").name == "main" and c.sub_cluster_for_host("zzz").name == "rest"


def test_hostlist_expand():
    assert len(HostList("a[0121-0129],a[0221-0229]").expand()) == 18
    assert HostList("a[0531-0537],a[0631-0633],a0831,a[0931-0934]").expand()[7:11] == [
        "a0631", "a0632", "a0633", "a0831"]
    assert HostList("w11[27-45,49-63]").expand()[:2] == ["w1127", "w1128"]
    main = HostList("f[0101-0188,0201-0288,0301-0388,0401-0488,0501-0588,0601-0688,0701-0788,0801-0888,"
                    "0901-0988,1001-1088,1101-1156,1201-1256]")
    assert len(main.expand()) == 10 * 88 + 2 * 56
    assert all(main.contains(h) for h in main.expand()[::37])
    with pytest.raises(ValueError, match="equal-width"):
        HostList("a[1-10]")
    with pytest.raises(ValueError, match="unclosed"):
        HostList("a[01-10")


def _mutate(path, value):
    doc = raw("fritz")
    obj = doc
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return doc


@pytest.mark.parametrize(("path", "value", "message"), [
    (("metricConfig", 3, "scope"), "foo", "metricConfig[3] (flops_any): invalid scope 'foo'"),
    (("metricConfig", 3, "timestep"), 0, "metricConfig[3] (flops_any): 'timestep' must be >= 1, got 0"),
    (("metricConfig", 3, "timestep"), KeyError, "metricConfig[3] (flops_any): 'timestep' must be >= 1"),
    (("metricConfig", 3, "timestep"), 60.5, "metricConfig[3] (flops_any): 'timestep' must be a 64-bit integer"),
    (("metricConfig", 3, "timestep"), 2**63, "metricConfig[3] (flops_any): 'timestep' must be a 64-bit integer"),
    (("metricConfig", 3, "aggregation"), "max", "metricConfig[3] (flops_any): invalid aggregation 'max'"),
    (("metricConfig", 3, "aggregation"), KeyError, "metricConfig[3] (flops_any): missing aggregation"),
    (("metricConfig", 3, "footprint"), "median", "metricConfig[3] (flops_any): invalid footprint 'median'"),
    (("metricConfig", 3, "peak"), "high", "metricConfig[3] (flops_any): 'peak' must be a finite"),
    (("metricConfig", 3, "peak"), 10**400, "metricConfig[3] (flops_any): 'peak' must be a finite number, got a number"),
    (("metricConfig", 3, "unit"), "GB", "metricConfig[3] (flops_any).unit: expected an object, got a string"),
    (("metricConfig", 3, "name"), "", "metricConfig[3]: 'name' must not be empty"),
    (("metricConfig", 0, "subClusters", 1, "footprint"), "x",
     "metricConfig[0] (cpu_load).subClusters[1] (spr2tb): invalid footprint 'x'"),
    (("metricConfig", 2, "name"), "cpu_load", "metricConfig[2] (cpu_load): duplicate name"),
    (("metricConfig",), [], "'metricConfig' must not be empty"),
    (("subClusters",), [], "'subClusters' must not be empty"),
    (("subClusters", 1, "nodes"), "f[2157-188]", "subClusters[1] (spr1tb): invalid nodes: range"),
    (("subClusters", 0, "topology", "node"), [0, "1"],
     "subClusters[0] (main).topology: 'node' must be an array of 64-bit integers"),
    (("subClusters", 0, "topology", "node"), [0, -(2**63) - 1],
     "subClusters[0] (main).topology: 'node' must be an array of 64-bit integers"),
])
def test_invalid_config_one_line_error(path, value, message):
    with pytest.raises(ClusterConfigError) as info:
        load_cluster(_mutate(path, value))
    text = str(info.value)
    assert text.startswith("cluster.json of 'fritz': ") and message in text and "\n" not in text


def test_invalid_sources(tmp_path):
    with pytest.raises(ClusterConfigError, match="cannot read cluster config"):
        load_cluster(tmp_path / "missing.json")
    bad = tmp_path / "cluster.json"
    bad.write_text('{"name": "x", ')
    with pytest.raises(ClusterConfigError, match="cluster.json: invalid JSON"):
        load_cluster(bad)
    with pytest.raises(ClusterConfigError, match="^cluster.json of 'alex': 'name' must not be empty"):
        load_cluster(_mutate(("name",), ""), name_hint="alex")
    with pytest.raises(ClusterConfigError, match="expected an object, got an array"):
        load_cluster(b"[]")
    assert load_cluster(str(CONFIGS["emmy"])).name == "emmy"
    assert load_cluster(CONFIGS["emmy"].read_text()).name == "emmy"


def test_topology_helpers(clusters):
    main = clusters["fritz"].sub_cluster("main").topology
    assert main.cores_of([40, 1, 0, 1]) == [0, 1, 40]
    assert main.sockets_of([40, 0]) == [0, 1] and main.sockets_of([5]) == [0]
    assert main.memory_domains_of([17, 18, 71]) == [0, 1, 3]
    assert main.members("socket", 1) == list(range(36, 72))
    assert main.members("memoryDomain", 2) == list(range(36, 54))
    assert main.members("core", 7) == [7] and main.members("hwthread", 9) == [9]
    assert main.members("node", 0) == list(range(72)) and main.members("core", 99) == []
    # fixture quirks: spr1tb's node list holds 5152 (for 51, 52); alex lists no core for hwthread 72
    assert clusters["fritz"].sub_cluster("spr1tb").topology.cores_of([5152, 50]) == [50]
    a40 = clusters["alex"].sub_cluster("a40").topology
    assert a40.cores_of([71, 72, 73]) == [71, 72] and a40.members("core", 72) == [73]
    assert a40.accelerator_ids()[-1] == "00000000:E1:00.0" and len(a40.accelerator_ids()) == 8
    with pytest.raises(ValueError):
        main.groups_of("node", [0])
