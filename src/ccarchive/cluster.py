"""Cluster configuration (``<cluster>/cluster.json``): typed model, load rules, Go-exact encoding.

Why a typed model instead of a dict: scope planning, footprint, energy and the synthetic source all
ask the same questions - which metrics exist for this subcluster, with which thresholds, which
hwthreads form core 12 - and the answers must follow cc-backend's rules (pkg/archive/clusterConfig.go,
cc-lib schema/cluster.go).  One field table per Go struct (``_SPECS``, in Go declaration order with
its omitempty flags) drives both decoding and encoding, so the two cannot drift apart.

Decoding follows Go ``encoding/json``: keys match exactly or case-insensitively, unknown keys are
ignored, ``null`` leaves the zero value, a type mismatch is an error.  Validation adds cc-backend's
load rules (name, metricConfig, subClusters non-empty; metric name non-empty; timestep >= 1; empty
scope -> node; valid scope; node lists parse) and the cluster JSON schema's enums (aggregation,
footprint, energy), each failure one line naming the file and the key.  Subcluster overrides are
applied on demand (:meth:`Cluster.metric`) and nothing derived is stored, so :func:`encode_cluster`
writes the configuration as read (after defaults), byte for byte as Go's ``json.Encoder`` would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import ClusterConfigError, FormatError
from .formats.gojson import fits_go_int, go_float64, go_number, go_string
from .model import SCOPE_GRANULARITY, Unit

AGGREGATIONS = ("sum", "avg")
FOOTPRINTS = ("avg", "min", "max")
ENERGIES = ("power", "energy")
_GROUP_SCOPES = ("core", "socket", "memoryDomain")


@dataclass
class Accelerator:
    id: str = ""
    type: str = ""
    model: str = ""


@dataclass
class Topology:
    """Hardware layout of one node: each inner list holds the hwthread (OS cpu) ids of that socket,
    core or memory domain; the inner list's index is the socket/core/domain id."""

    node: list[int] | None = None
    socket: list[list[int]] | None = None
    memory_domain: list[list[int]] | None = None
    die: list[list[int | None]] | None = None
    core: list[list[int]] | None = None
    accelerators: list[Accelerator] | None = None

    def groups(self, scope: str) -> list[list[int]]:
        """The hwthread lists of all cores, sockets or memory domains (index = id)."""
        if scope not in _GROUP_SCOPES:
            raise ValueError(f"scope {scope!r} has no hwthread groups")
        return {"core": self.core, "socket": self.socket, "memoryDomain": self.memory_domain}[scope] or []

    @cached_property
    def _owners(self) -> dict[str, dict[int, list[int]]]:
        """scope -> hwthread -> ids of the groups that contain it."""
        maps: dict[str, dict[int, list[int]]] = {}
        for scope in _GROUP_SCOPES:
            owner: dict[int, list[int]] = maps.setdefault(scope, {})
            for gid, hws in enumerate(self.groups(scope)):
                for hw in hws:
                    owner.setdefault(hw, []).append(gid)
        return maps

    def groups_of(self, scope: str, hwthreads: list[int] | tuple[int, ...]) -> list[int]:
        """Ids of the core/socket/memoryDomain groups holding any of ``hwthreads``, ascending
        (Go's ``Get*FromHWThreads`` return them in random map order)."""
        self.groups(scope)
        owner = self._owners[scope]
        return sorted({g for hw in hwthreads for g in owner.get(hw, ())})

    def cores_of(self, hwthreads: list[int] | tuple[int, ...]) -> list[int]:
        return self.groups_of("core", hwthreads)

    def sockets_of(self, hwthreads: list[int] | tuple[int, ...]) -> list[int]:
        return self.groups_of("socket", hwthreads)

    def memory_domains_of(self, hwthreads: list[int] | tuple[int, ...]) -> list[int]:
        return self.groups_of("memoryDomain", hwthreads)

    def members(self, scope: str, id: int) -> list[int]:
        """Hwthread ids of core/socket/memoryDomain ``id``; ``[id]`` for hwthread, all for node."""
        if scope == "hwthread":
            return [id]
        if scope == "node":
            return list(self.node or [])
        groups = self.groups(scope)
        return list(groups[id]) if 0 <= id < len(groups) else []

    def accelerator_ids(self) -> list[str]:
        return [a.id for a in self.accelerators or []]


@dataclass
class MetricValue:
    unit: Unit = field(default_factory=Unit)
    value: float = 0.0


@dataclass
class SubClusterConfig:
    """A per-subcluster override of a metricConfig entry (cc-lib ``SubClusterConfig``)."""

    name: str = ""
    unit: Unit = field(default_factory=Unit)  # in the embedded Go Metric struct; never used
    peak: float = 0.0
    normal: float = 0.0
    caution: float = 0.0
    alert: float = 0.0
    footprint: str = ""
    energy: str = ""
    lower_is_better: bool = False
    restrict: bool = False
    remove: bool = False


@dataclass
class MetricConfig:
    name: str = ""
    unit: Unit = field(default_factory=Unit)
    peak: float = 0.0
    normal: float = 0.0
    caution: float = 0.0
    alert: float = 0.0
    energy: str = ""
    scope: str = "node"
    aggregation: str = ""
    footprint: str = ""
    sub_clusters: list[SubClusterConfig] = field(default_factory=list)
    timestep: int = 0
    restrict: bool = False
    lower_is_better: bool = False


@dataclass
class SubCluster:
    name: str = ""
    nodes: str = ""
    processor_type: str = ""
    topology: Topology = field(default_factory=Topology)
    flop_rate_scalar: MetricValue = field(default_factory=MetricValue)
    flop_rate_simd: MetricValue = field(default_factory=MetricValue)
    memory_bandwidth: MetricValue = field(default_factory=MetricValue)
    metric_config: list[MetricConfig] | None = None  # derived by Go in memory; kept only when read
    footprint: list[str] | None = None
    energy_footprint: list[str] | None = None
    sockets_per_node: int = 0
    cores_per_socket: int = 0
    threads_per_core: int = 0

    @cached_property
    def hostlist(self) -> HostList | None:
        """The parsed ``nodes`` expression; None for ``*`` (every host)."""
        return None if self.nodes == "*" else HostList(self.nodes)


@dataclass
class Cluster:
    name: str
    metric_config: list[MetricConfig]
    sub_clusters: list[SubCluster]
    _effective: dict[tuple[str, str], MetricConfig | None] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _metrics_for: dict[str, tuple[MetricConfig, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _by_name: dict[str, MetricConfig] = field(default_factory=dict, init=False, repr=False, compare=False)

    def sub_cluster(self, name: str) -> SubCluster:
        for sc in self.sub_clusters:
            if sc.name == name:
                return sc
        raise ClusterConfigError(f"unknown subcluster {name!r} of cluster {self.name!r}")

    def sub_cluster_for_host(self, hostname: str) -> SubCluster:
        """The first subcluster (file order) whose node list contains ``hostname``, else the first
        one with ``nodes: "*"`` (Go tries node lists in random map order, then subClusters[0])."""
        for sc in self.sub_clusters:
            if sc.hostlist is not None and sc.hostlist.contains(hostname):
                return sc
        for sc in self.sub_clusters:
            if sc.hostlist is None:
                return sc
        raise ClusterConfigError(f"host {hostname!r} is in no subcluster of cluster {self.name!r}")

    def metric(self, name: str, sub_cluster: str | None = None) -> MetricConfig | None:
        """The cluster-level config, or with ``sub_cluster`` the effective one: an override replaces
        peak/normal/caution/alert/footprint/energy/lowerIsBetter/restrict (no footprint there = no
        footprint); unit, scope, aggregation, timestep stay cluster-level.  None if unknown/removed."""
        if not self._by_name:  # built whole, then set: another thread never sees it half filled
            by_name: dict[str, MetricConfig] = {}
            for m in self.metric_config:
                by_name.setdefault(m.name, m)  # the first of a repeated name, as a scan finds it
            self._by_name = by_name
        base = self._by_name.get(name)
        if base is None or sub_cluster is None:
            return base
        key = (name, sub_cluster)
        if key not in self._effective:
            self.sub_cluster(sub_cluster)  # unknown subcluster -> ClusterConfigError
            ov = next((o for o in base.sub_clusters if o.name == sub_cluster), None)
            self._effective[key] = (
                dataclasses.replace(base, sub_clusters=[]) if ov is None else None if ov.remove else
                dataclasses.replace(base, sub_clusters=[], peak=ov.peak, normal=ov.normal, caution=ov.caution,
                                    alert=ov.alert, footprint=ov.footprint, energy=ov.energy,
                                    lower_is_better=ov.lower_is_better, restrict=ov.restrict))
        return self._effective[key]

    def metrics_for(self, sub_cluster: str) -> list[MetricConfig]:
        """Effective configs of a subcluster's metrics in metricConfig order, removed ones skipped
        (computed once per subcluster: every job asks, three times)."""
        known = self._metrics_for.get(sub_cluster)
        if known is None:
            found = (self.metric(m.name, sub_cluster) for m in self.metric_config)
            known = self._metrics_for[sub_cluster] = tuple(m for m in found if m is not None)
        return list(known)


def coarser(a: str, b: str) -> str:
    """The coarser of two scopes (cc-lib ``MetricScope.Max``)."""
    return a if SCOPE_GRANULARITY[a] > SCOPE_GRANULARITY[b] else b


# ---- host lists (cc-backend pkg/archive/nodelist.go): "f[0101-0188,0201-0288]", "a0831,a[0931-0934]"

_TOKEN = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)|\[([^\]]*)\]")
_Range = tuple[int, int, int]  # first, last, digits


class HostList:
    """Comma-separated terms, each literal parts and bracketed zero-padded ranges; a host matches
    when it matches a whole term."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.terms: list[list[str | list[_Range]]] = []
        raw, inside, start = [], False, 0
        for i, ch in enumerate(expr):
            if ch in "[]":
                inside = ch == "["
            elif ch == "," and not inside:
                raw.append(expr[start:i])
                start = i + 1
        if inside:
            raise ValueError(f"unclosed '[' in {expr!r}")
        raw += [expr[start:]] if start != len(expr) else []
        for term in raw:
            parts: list[str | list[_Range]] = []
            pos = 0
            while pos < len(term):
                m = _TOKEN.match(term, pos)
                if m is None:
                    raise ValueError(f"invalid character {term[pos]!r} in {expr!r}")
                parts.append(m.group(1) if m.group(1) is not None else self._ranges(m.group(2)))
                pos = m.end()
            self.terms.append(parts)

    def _ranges(self, body: str) -> list[_Range]:
        out = []
        for part in body.split(","):
            lo, sep, hi = part.partition("-")
            if not (sep and lo and len(lo) == len(hi) and (lo + hi).isascii() and (lo + hi).isdigit()):
                raise ValueError(f"range {part!r} in {self.expr!r} is not 'first-last' of equal-width digits")
            out.append((int(lo), int(hi), len(lo)))
        return out

    def contains(self, host: str) -> bool:
        return any(self._match(term, host) for term in self.terms)

    @staticmethod
    def _match(term: list[str | list[_Range]], rest: str) -> bool:
        for part in term:
            if isinstance(part, str):
                if not rest.startswith(part):
                    return False
                rest = rest[len(part):]
                continue
            for lo, hi, w in part:  # the first range that accepts the next `w` digits
                num = rest[:w]
                if len(num) == w and num.isascii() and num.isdigit() and lo <= int(num) <= hi:
                    rest = rest[w:]
                    break
            else:
                return False
        return rest == ""

    def expand(self) -> list[str]:
        """All host names in expression order (ranges ascending)."""
        out: list[str] = []
        for term in self.terms:
            names = [""]
            for part in term:
                names = ([n + part for n in names] if isinstance(part, str) else
                         [n + f"{i:0{w}d}" for n in names for lo, hi, w in part for i in range(lo, hi + 1)])
            out.extend(names)
        return out


# ---- Go struct field tables, in Go declaration order: (json key, kind); "?" marks omitempty.
# Kinds: str float int bool ints strs groups ([][]int) die ([][]*int), a dataclass (object) or
# [dataclass] (array of objects).  The attribute is the snake_case json key.

def _spec(*fields: tuple[str, Any]) -> list[tuple[str, str, Any, bool]]:
    out = []
    for key, kind in fields:
        name = key.rstrip("?")
        out.append((name, re.sub(r"([A-Z])", r"_\1", name).lower(), kind, key.endswith("?")))
    return out


_METRIC = (("name", "str"), ("unit", Unit), ("peak", "float"), ("normal", "float"), ("caution", "float"),
           ("alert", "float"))  # the embedded Go struct Metric
_SPECS: dict[type, list[tuple[str, str, Any, bool]]] = {
    Unit: _spec(("base", "str"), ("prefix?", "str")),
    Accelerator: _spec(("id", "str"), ("type", "str"), ("model", "str")),
    Topology: _spec(("node", "ints"), ("socket", "groups"), ("memoryDomain", "groups"), ("die?", "die"),
                    ("core", "groups"), ("accelerators?", [Accelerator])),
    MetricValue: _spec(("unit", Unit), ("value", "float")),
    SubClusterConfig: _spec(*_METRIC, ("footprint?", "str"), ("energy", "str"), ("lowerIsBetter", "bool"),
                            ("restrict", "bool"), ("remove", "bool")),
    MetricConfig: _spec(*_METRIC, ("energy", "str"), ("scope", "str"), ("aggregation", "str"),
                        ("footprint?", "str"), ("subClusters?", [SubClusterConfig]), ("timestep", "int"),
                        ("restrict", "bool"), ("lowerIsBetter", "bool")),
    SubCluster: _spec(("name", "str"), ("nodes", "str"), ("processorType", "str"), ("topology", Topology),
                      ("flopRateScalar", MetricValue), ("flopRateSimd", MetricValue),
                      ("memoryBandwidth", MetricValue), ("metricConfig?", [MetricConfig]),
                      ("footprint?", "strs"), ("energyFootprint?", "strs"), ("socketsPerNode", "int"),
                      ("coresPerSocket", "int"), ("threadsPerCore", "int")),
    Cluster: _spec(("name", "str"), ("metricConfig", [MetricConfig]), ("subClusters", [SubCluster])),
}
_IS_INT = lambda x: type(x) is int and fits_go_int(x)  # noqa: E731  (bool is not an int in Go)


def _is_finite_number(v: Any) -> bool:
    """A JSON number Go decodes into a float64 (an integer too; not one beyond the float range)."""
    if type(v) is float:
        return math.isfinite(v)
    if type(v) is not int:  # bool is not a number in Go
        return False
    try:
        go_number(v)
    except FormatError:
        return False
    return True


_CHECKS: dict[str, tuple[str, Any]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("a boolean", lambda v: isinstance(v, bool)),
    "int": ("a 64-bit integer", _IS_INT),
    "float": ("a finite number", _is_finite_number),
    "ints": ("an array of 64-bit integers", lambda v: isinstance(v, list) and all(map(_IS_INT, v))),
    "strs": ("an array of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "groups": ("an array of integer arrays", lambda v: isinstance(v, list) and all(
        isinstance(g, list) and all(map(_IS_INT, g)) for g in v)),
    "die": ("an array of integer arrays", lambda v: isinstance(v, list) and all(
        g is None or (isinstance(g, list) and all(x is None or _IS_INT(x) for x in g)) for g in v)),
}


def _kind(v: Any) -> str:
    if v is None or isinstance(v, bool):
        return "null" if v is None else "a boolean"
    return {int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object"}.get(
        type(v), type(v).__name__)


# ---- loading

def load_cluster(source: str | Path | bytes | dict[str, Any], *, name_hint: str | None = None) -> Cluster:
    """Read and validate a cluster.json: a path, JSON text (a str starting with ``{``) or bytes, or
    a parsed dict.  ``name_hint`` names the cluster in error messages (default: its ``name``)."""
    path, obj = None, source
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        path = str(source)
        try:
            obj = Path(source).read_bytes()
        except OSError as exc:
            raise ClusterConfigError(f"cannot read cluster config {path}: {exc.strerror or exc}") from exc
    label = path or "cluster.json"
    if isinstance(obj, (bytes, str)):
        try:
            obj = json.loads(obj)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ClusterConfigError(f"{label}{_of(name_hint)}: invalid JSON: {exc}") from exc
    if name_hint is None and isinstance(obj, dict):
        names = [v for k, v in obj.items() if k.lower() == "name"]  # Go: case-insensitive, last wins
        name_hint = names[-1] if names and isinstance(names[-1], str) and names[-1] else None
    label += _of(name_hint)
    cluster = _decode(Cluster, obj, "", label)
    _validate(cluster, label)
    return cluster


def _of(name: str | None) -> str:
    return f" of {name!r}" if name else ""


def _fail(label: str, where: str, msg: str) -> ClusterConfigError:
    return ClusterConfigError(f"{label}: {where + ': ' if where else ''}{msg}")


def _decode(cls: type, obj: Any, where: str, label: str) -> Any:
    if not isinstance(obj, dict):
        raise _fail(label, where, f"expected an object, got {_kind(obj)}")
    spec = _SPECS[cls]
    exact = {key: i for i, (key, *_rest) in enumerate(spec)}
    folded = {key.lower(): i for key, i in exact.items()}
    raw: dict[int, Any] = {}
    for k, v in obj.items():  # exact key, else case-insensitive; unknown ignored; last one wins
        i = exact.get(k, folded.get(k.lower()))
        if i is not None:
            raw[i] = v
    name = raw.get(exact.get("name", -1))
    if isinstance(name, str) and name and where:
        where = f"{where} ({name})"
    kwargs: dict[str, Any] = {}
    for i, v in raw.items():
        key, attr, kind, _ = spec[i]
        if v is None:  # Go leaves the zero value
            continue
        if isinstance(kind, list):
            if not isinstance(v, list):
                raise _fail(label, where, f"{key!r} must be an array, got {_kind(v)}")
            at = f"{where}.{key}" if where else key
            kwargs[attr] = [_decode(kind[0], x, f"{at}[{j}]", label) for j, x in enumerate(v)]
        elif isinstance(kind, type):
            kwargs[attr] = _decode(kind, v, f"{where}.{key}" if where else key, label)
        else:
            what, ok = _CHECKS[kind]
            if not ok(v):
                raise _fail(label, where, f"{key!r} must be {what}, got {_kind(v)}")
            kwargs[attr] = _copy(kind, v)
    if cls is Cluster:
        kwargs = {"name": "", "metric_config": [], "sub_clusters": [], **kwargs}
    return cls(**kwargs)


def _copy(kind: str, v: Any) -> Any:
    """A decoded value that shares no list with the input document."""
    if kind == "float":
        return float(v)
    if kind in ("groups", "die"):
        return [None if g is None else list(g) for g in v]
    return list(v) if kind in ("ints", "strs") else v


def _validate_metric(m: MetricConfig, where: str, label: str) -> None:
    if not m.name:
        raise _fail(label, where, "'name' must not be empty")
    where = f"{where} ({m.name})"
    m.scope = m.scope or "node"  # "for backwards compatibility" (clusterConfig.go)
    if m.scope not in SCOPE_GRANULARITY:
        raise _fail(label, where, f"invalid scope {m.scope!r}")
    if m.timestep < 1:
        raise _fail(label, where, f"'timestep' must be >= 1, got {m.timestep}")
    checks: list[tuple[object, str, str, tuple[str, ...], bool]] = [
        (m, where, "aggregation", AGGREGATIONS, False), (m, where, "footprint", FOOTPRINTS, True),
        (m, where, "energy", ENERGIES, True)]
    for j, o in enumerate(m.sub_clusters):
        w = f"{where}.subClusters[{j}]"
        if not o.name:
            raise _fail(label, w, "'name' must not be empty")
        w += f" ({o.name})"
        checks += [(o, w, "footprint", FOOTPRINTS, True), (o, w, "energy", ENERGIES, True)]
    for obj, w, key, allowed, optional in checks:
        value = getattr(obj, key)
        if not (value in allowed or (optional and value == "")):
            got = f"invalid {key} {value!r}" if value else f"missing {key}"
            raise _fail(label, w, f"{got} (expected {' or '.join(map(repr, allowed))})")


def _validate(c: Cluster, label: str) -> None:
    if not c.name:
        raise _fail(label, "", "'name' must not be empty")
    for i, m in enumerate(c.metric_config):
        _validate_metric(m, f"metricConfig[{i}]", label)
    for i, sc in enumerate(c.sub_clusters):
        if not sc.name:
            raise _fail(label, f"subClusters[{i}]", "'name' must not be empty")
    for key, names in (("metricConfig", [m.name for m in c.metric_config]),
                       ("subClusters", [s.name for s in c.sub_clusters])):
        if not names:
            raise _fail(label, "", f"{key!r} must not be empty")
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _fail(label, f"{key}[{i}] ({name})", "duplicate name")
    for i, sc in enumerate(c.sub_clusters):
        for j, m in enumerate(sc.metric_config or []):
            _validate_metric(m, f"subClusters[{i}] ({sc.name}).metricConfig[{j}]", label)
        try:
            _ = sc.hostlist
        except ValueError as exc:
            raise _fail(label, f"subClusters[{i}] ({sc.name})", f"invalid nodes: {exc}") from None


# ---- encoding (Go json.NewEncoder(w).Encode(schema.Cluster), cc-lib v2.12 field order)

def encode_cluster(cluster: Cluster) -> bytes:
    """cluster.json bytes exactly as Go encodes the same ``schema.Cluster`` (compact, one ``\\n``)."""
    return (_encode(cluster) + "\n").encode("utf-8", "surrogatepass")


def _encode(obj: Any) -> str:
    parts = []
    for key, attr, kind, omitempty in _SPECS[type(obj)]:
        v = getattr(obj, attr)
        if omitempty and not v:  # "", 0, false, nil or empty slice
            continue
        parts.append(f"{go_string(key)}:{_encode_value(v, kind)}")
    return "{" + ",".join(parts) + "}"


def _encode_value(v: Any, kind: Any) -> str:
    if v is None:
        return "null"
    if isinstance(kind, list):
        return "[" + ",".join(_encode(x) for x in v) + "]"
    if isinstance(kind, type):
        return _encode(v)
    if kind == "str":
        return go_string(v)
    if kind == "float":
        return go_float64(v)
    if kind == "bool":
        return "true" if v else "false"
    if kind == "int":
        return str(int(v))
    if kind == "strs":
        return "[" + ",".join(map(go_string, v)) + "]"
    if kind == "ints":
        return "[" + ",".join(map(str, v)) + "]"
    inner = "ints" if kind == "groups" else "die_row"  # groups: [][]int, die: [][]*int
    if kind == "die_row":
        return "[" + ",".join("null" if x is None else str(x) for x in v) + "]"
    return "[" + ",".join(_encode_value(g, inner) for g in v) + "]"
