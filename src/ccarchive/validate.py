"""Validate meta.json, data.json and cluster.json against the cc-lib JSON schemas.

Why two passes: the cc-lib schemas (shipped unchanged in ``ccarchive/schemas``) are stricter than what
cc-backend really writes (docs/format.md, "Validation"): Go emits ``"footprint":null``, ``"concurrentJobs":
{"items":null,...}``, ``"mean":null`` and null gaps in ``statisticsSeries``, units such as ``load`` or
``%``, and almost never the full list of "required" metrics.  Using the schemas as they are would reject
every real archive, ignoring them would let broken files through.  So every document is checked twice:

* **relaxed** (the acceptance gate, failures are *errors*): schemas derived in code from the originals by
  relaxing exactly the points where real Go output differs, see ``_RELAXATIONS``.  The structure stays
  enforced: required job fields and their types, ``unit``/``timestep``/``series`` of a JobMetric,
  ``hostname``/``data`` of a series, data being an array of numbers and nulls.
* **compat** (the warning pass): the original schemas with only the deviations cc-backend itself
  writes allowed (``COMPAT_RELAXATIONS``: null for nil Go maps and slices and NaN, no required metric
  list, ``"energy":""``).  Each failure the relaxed pass accepted becomes a *warning*; what
  cc-backend writes for every archive is not worth a warning.  The original, **strict** schemas stay
  available through ``get_schema``/``get_validator``.

Speed: before jsonschema looks at a document (or, inside it, at an array item or object
property), a compiled check of the same schema -- plain Python closures for the few keywords the
cc-lib schemas use -- says whether it is certainly valid; only what it cannot vouch for is walked
by jsonschema, so the messages are exactly jsonschema's and a typical job costs a fraction of
jsonschema's time.  The check errs on the safe side: any keyword or value it does not know makes
it answer "not certain".

Both passes check every JobMetric of data.json against job-metric-data and every entry of meta.json
``statistics`` against job-metric-statistics, including metrics the schemas do not name.
Repeated messages that differ only by array index or value are grouped into one line with a count, so
that a 32-host file yields a few lines, not a thousand.

The schema ``$schema`` is ``http://json-schema.org/draft/2020-12/schema`` (http, not https), which
``jsonschema`` does not recognise; the draft is therefore fixed (``Draft202012Validator``, resources
created with ``DRAFT202012``) and the ``embedfs://`` ``$ref``s resolve through a ``referencing.Registry``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import reprlib
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = [
    "MAX_LINES",
    "SCHEMA_NAMES",
    "ValidationReport",
    "get_schema",
    "get_validator",
    "relaxations",
    "validate_cluster",
    "validate_data",
    "validate_meta",
]

#: The six schema files, by short name (``<name>.schema.json``, ``$id`` ``embedfs://<name>.schema.json``).
SCHEMA_NAMES: tuple[str, ...] = (
    "job-meta",
    "job-data",
    "job-metric-data",
    "job-metric-statistics",
    "unit",
    "cluster",
)

#: At most this many lines each for errors and warnings of one document; the rest is summarised.
MAX_LINES = 40

_PREFIX = "embedfs://"

# What the relaxed schemas change, and why (the docstring of each _compat_*/_relax_* function says where).
#: How cc-backend writes every archive: accepted without a warning.
COMPAT_RELAXATIONS = """\
job-metric-data: statisticsSeries arrays may be null or hold nulls and have < 3 points ("mean":null, NaN gaps)
job-meta: energyFootprint, footprint, metaData and concurrentJobs.items may be null (nil Go maps/slices)
job-meta: no required statistics list (a job has the metrics its cluster measures)
job-data: no required metric or scope lists (a job has the metrics its cluster measures, e.g. no net_bw)
cluster: metric energy may be "" (Go's MetricConfig.Energy has no omitempty)
"""
#: Accepted (not an error) but reported as a warning: data or configuration worth a look.
WARNED_RELAXATIONS = """\
unit: base and prefix may be any string (cluster configs in use have load, Flops/s, packets/s, %)
job-metric-statistics: avg/min/max may be negative (Go computes them from the raw values)
job-metric-data: statisticsSeries points and series statistics may be negative; series statistics optional (legacy)
job-metric-data: series data need no non-negative number (all-null/negative series) but must be numbers/nulls
job-meta: numAcc, numHwthreads, walltime, requestedMemory and duration may be 0 (Go zero values)
job-meta: every statistics entry checked against job-metric-statistics
job-data: every top-level value except filesystems must be an object
"""
_RELAXATIONS = COMPAT_RELAXATIONS + WARNED_RELAXATIONS


@dataclass
class ValidationReport:
    """Outcome of validating one document: errors fail the relaxed gate, warnings fail only the
    compat level (the original schemas with cc-backend's own deviations allowed)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the document passed the relaxed (acceptance) schemas."""
        return not self.errors

    def extend(self, other: ValidationReport) -> None:
        """Append the messages of another report."""
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)


# --------------------------------------------------------------------------------------------------
# Loading and deriving the schemas


@functools.cache
def _original(name: str) -> dict[str, Any]:
    """The schema file as shipped (cached; never mutate the result)."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files("ccarchive").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _id(name: str) -> str:
    return f"{_PREFIX}{name}.schema.json"


def _at(schema: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Walk to a sub-schema, failing loudly if the upstream schema no longer has that shape."""
    node: Any = schema
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise RuntimeError(f"cc-lib schema changed: no {'/'.join(keys)} (cannot derive relaxed schema)")
        node = node[k]
    if not isinstance(node, dict):
        raise RuntimeError(f"cc-lib schema changed: {'/'.join(keys)} is not an object")
    return node


def _drop_required(node: dict[str, Any], *names: str) -> None:
    node["required"] = [r for r in node.get("required", []) if r not in names]
    if not node["required"]:
        del node["required"]


def _relax_unit(s: dict[str, Any]) -> None:
    """Units outside the enum (``load``, ``Flops/s``, ``packets/s``, ``%``) are real; keep only the types."""
    for key in ("base", "prefix"):
        _at(s, "properties", key).pop("enum", None)


def _relax_statistics(s: dict[str, Any]) -> None:
    """Job statistics of metrics with negative values are negative."""
    for key in ("avg", "min", "max"):
        _at(s, "properties", key).pop("minimum", None)


def _nullable_float_array(s: dict[str, Any]) -> None:
    """``[]Float`` as Go writes it: the slice may be nil, NaN points are null, any length."""
    s["type"] = ["array", "null"]
    s["items"] = {**s.get("items", {}), "type": ["number", "null"]}
    s.pop("minItems", None)


def _statistics_series_arrays(s: dict[str, Any]) -> Iterator[dict[str, Any]]:
    ss = _at(s, "properties", "statisticsSeries", "properties")
    yield from (_at(ss, key) for key in ("min", "max", "mean", "median"))
    yield from _at(ss, "percentiles", "properties").values()


def _compat_metric_data(s: dict[str, Any]) -> None:
    """statisticsSeries as Go writes it: ``"mean":null``, NaN points as null, short jobs short."""
    for arr in _statistics_series_arrays(s):
        _nullable_float_array(arr)


def _relax_metric_data(s: dict[str, Any]) -> None:
    """Negative statisticsSeries points; legacy series without statistics; typed data points."""
    for arr in _statistics_series_arrays(s):
        arr["items"].pop("minimum", None)
    item = _at(s, "properties", "series", "items")
    _drop_required(item, "statistics")
    for key in ("avg", "min", "max"):
        _at(item, "properties", "statistics", "properties", key).pop("minimum", None)
    data = _at(item, "properties", "data")
    data.pop("contains", None)
    data["items"] = {"type": ["number", "null"]}


def _compat_meta(s: dict[str, Any]) -> None:
    """Nil Go maps/slices encode as null; no required metric list."""
    props = _at(s, "properties")
    for key in ("energyFootprint", "footprint", "metaData"):
        _at(props, key)["type"] = ["object", "null"]
    _at(props, "concurrentJobs", "properties", "items")["type"] = ["array", "null"]
    _at(props, "statistics").pop("required", None)


def _relax_meta(s: dict[str, Any]) -> None:
    """Zero counters are legal; unknown statistics entries checked in the same pass."""
    props = _at(s, "properties")
    for key in ("numAcc", "numHwthreads", "walltime", "requestedMemory", "duration"):
        p = _at(props, key)
        if p.pop("exclusiveMinimum", None) is not None:
            p["minimum"] = 0
    stats = _at(props, "statistics")
    stats["additionalProperties"] = {"$ref": _id("job-metric-statistics")}


def _compat_data(s: dict[str, Any]) -> None:
    """No required metrics or scopes: a job has the metrics and scopes its cluster measures."""
    s.pop("required", None)
    for metric, sub in _at(s, "properties").items():
        if metric != "filesystems":
            sub.pop("required", None)


def _relax_data(s: dict[str, Any]) -> None:
    """Every metric maps scopes to objects (checked one by one)."""
    for metric, sub in _at(s, "properties").items():
        if metric != "filesystems":
            sub["type"] = "object"
    s["additionalProperties"] = {"type": "object"}


def _compat_cluster(s: dict[str, Any]) -> None:
    """Go writes ``"energy":""`` for metrics without an energy role (the field has no omitempty)."""
    mc = _at(s, "properties", "metricConfig", "items", "properties")
    for props in (mc, _at(mc, "subClusters", "items", "properties")):
        energy = _at(props, "energy")
        energy["enum"] = [*energy.get("enum", []), ""]


#: The levels: "strict" is the shipped schema, "compat" adds cc-backend's own ways of writing,
#: "relaxed" (the acceptance gate) adds what is accepted with a warning.
_Level = Literal["strict", "compat", "relaxed"]
_COMPAT = {
    "cluster": _compat_cluster,
    "job-metric-data": _compat_metric_data,
    "job-meta": _compat_meta,
    "job-data": _compat_data,
}
_RELAX = {
    "unit": _relax_unit,
    "job-metric-statistics": _relax_statistics,
    "job-metric-data": _relax_metric_data,
    "job-meta": _relax_meta,
    "job-data": _relax_data,
}


def _level(relaxed: bool | _Level) -> _Level:
    if relaxed is True:
        return "relaxed"
    if relaxed is False:
        return "strict"
    if relaxed not in ("strict", "compat", "relaxed"):
        raise ValueError(f"unknown schema level {relaxed!r}")
    return relaxed


@functools.cache
def _schema(name: str, level: _Level) -> dict[str, Any]:
    """Original, compat or relaxed schema (cached; never mutate the result)."""
    s = _original(name)
    if level != "strict" and (name in _COMPAT or (level == "relaxed" and name in _RELAX)):
        s = copy.deepcopy(s)
        if name in _COMPAT:
            _COMPAT[name](s)
        if level == "relaxed" and name in _RELAX:
            _RELAX[name](s)
    return s


def get_schema(name: str, *, relaxed: bool | _Level = False) -> dict[str, Any]:
    """A copy of a schema by short name (see ``SCHEMA_NAMES``): original (``False``), relaxed
    (``True``, the acceptance gate) or ``"compat"`` (original plus cc-backend's own deviations)."""
    return copy.deepcopy(_schema(name, _level(relaxed)))


@functools.cache
def _registry(level: _Level) -> Registry:
    """All six schemas of one level under their ``embedfs://`` ids."""
    pairs = []
    for name in SCHEMA_NAMES:
        schema = _schema(name, level)
        if schema.get("$id") != _id(name):
            raise RuntimeError(f"{name}.schema.json: unexpected $id {schema.get('$id')!r}")
        pairs.append((_id(name), DRAFT202012.create_resource(schema)))
    return Registry().with_resources(pairs).crawl()


def get_validator(name: str, *, relaxed: bool | _Level = False) -> Draft202012Validator:
    """Cached draft 2020-12 validator of one schema (levels as ``get_schema``), refs resolved
    within the same level."""
    return _validator(name, _level(relaxed))


@functools.cache
def _validator(name: str, level: _Level) -> Draft202012Validator:
    return Draft202012Validator(_schema(name, level), registry=_registry(level))


# --------------------------------------------------------------------------------------------------
# The compiled check: True only when jsonschema would certainly find nothing

_Check = Callable[[Any], bool]
#: id() of every (sub)schema dict of the twelve cached schemas -> its compiled check
_CHECKS: dict[int, _Check] = {}
#: (level, $id) -> compiled check of that schema's root (filled as they are compiled)
_ROOTS: dict[tuple[str, str], _Check] = {}
_IGNORED = frozenset(("description", "title", "$schema", "$id", "$comment", "default", "examples"))
_NUMBERS = (int, float)
_SIMPLE = {"object": dict, "array": list, "string": str, "null": type(None), "boolean": bool}


def _never(_x: Any) -> bool:
    return False


def _always(_x: Any) -> bool:
    return True


def _type_check(names: Any) -> _Check:
    exact = {_SIMPLE[n] for n in names if n in _SIMPLE}
    number, integer = "number" in names, "integer" in names
    if not set(names) <= {*_SIMPLE, "number", "integer"}:
        return _never

    def check(x: Any) -> bool:
        t = type(x)
        if t in exact:
            return True
        if t is int:
            return number or integer
        return t is float and (number or (integer and x.is_integer()))
    return check


def _bound_check(limit: Any, exclusive: bool) -> _Check:
    if type(limit) not in _NUMBERS:
        return _never

    def check(x: Any) -> bool:
        t = type(x)
        if t in _NUMBERS:
            return not (x <= limit if exclusive else x < limit)
        return t in _SIMPLE.values()  # not a number: the keyword does not apply (bool included)
    return check


def _properties_check(pairs: tuple[tuple[str, _Check], ...]) -> _Check:
    def check(x: Any) -> bool:
        if isinstance(x, dict):
            for k, f in pairs:
                if k in x and not f(x[k]):
                    return False
        return True
    return check


def _required_check(names: tuple[str, ...]) -> _Check:
    return lambda x: not isinstance(x, dict) or all(k in x for k in names)


def _items_check(f: _Check, every: bool) -> _Check:
    if every:  # items
        return lambda x: not isinstance(x, list) or all(map(f, x))
    return lambda x: not isinstance(x, list) or any(map(f, x))  # contains


def _size_check(kind: type[Sized], n: int) -> _Check:
    return lambda x: not isinstance(x, kind) or len(x) >= n


def _enum_check(allowed: tuple[Any, ...]) -> _Check:
    return lambda x: any(type(v) is type(x) and v == x for v in allowed)


def _unique_check(on: bool) -> _Check:
    return lambda x: not on or not isinstance(x, list) or (all(type(i) is str for i in x) and len(set(x)) == len(x))


def _additional_check(f: _Check, known: frozenset[str]) -> _Check:
    return lambda x: not isinstance(x, dict) or all(f(v) for k, v in x.items() if k not in known)


def _resolve(ref: str, root: dict[str, Any], level: _Level) -> Callable[[], _Check] | None:
    """A function that finds the check of a $ref target when first called (targets may be compiled later)."""
    if ref.startswith(_PREFIX) and ref.endswith(".schema.json") and ref[len(_PREFIX):-12] in SCHEMA_NAMES:
        return lambda: _root_check(ref[len(_PREFIX):-12], level)
    if ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return lambda: _CHECKS.get(id(node), _never)
    return None


def _compile(node: Any, root: dict[str, Any], level: _Level) -> _Check:
    """The check of one schema node; sub-schemas are compiled and registered too."""
    if node is True:
        return _always
    if not isinstance(node, dict):
        return _never
    checks: list[_Check] = []
    for kw, val in node.items():
        if kw in _IGNORED:
            continue
        if kw == "type":
            checks.append(_type_check(val if isinstance(val, list) else [val]))
        elif kw == "properties" and isinstance(val, dict):
            checks.append(_properties_check(tuple((k, _compile(v, root, level)) for k, v in val.items())))
        elif kw == "required" and isinstance(val, list):
            names = tuple(val)
            checks.append(_required_check(names))
        elif kw == "items" and "prefixItems" not in node:
            f = _compile(val, root, level)
            checks.append(_items_check(f, every=True))
        elif kw == "contains" and "minContains" not in node and "maxContains" not in node:
            f = _compile(val, root, level)
            checks.append(_items_check(f, every=False))
        elif kw in ("minItems", "minProperties") and type(val) is int:
            kind = list if kw == "minItems" else dict
            checks.append(_size_check(kind, val))
        elif kw in ("minimum", "exclusiveMinimum"):
            checks.append(_bound_check(val, kw == "exclusiveMinimum"))
        elif kw == "enum" and isinstance(val, list):
            allowed = tuple(v for v in val if type(v) in (str, int, float, type(None)))
            checks.append(_enum_check(allowed))
        elif kw == "uniqueItems" and type(val) is bool:
            checks.append(_unique_check(val))
        elif kw == "additionalProperties" and "patternProperties" not in node:
            f = _compile(val, root, level)
            known = frozenset(node.get("properties", {}))
            checks.append(_additional_check(f, known))
        elif kw == "$ref" and isinstance(val, str):
            target = _resolve(val, root, level)
            if target is None:
                return _never
            holder: list[_Check] = []

            def ref(x: Any, target: Callable[[], _Check] = target, holder: list[_Check] = holder) -> bool:
                if not holder:
                    holder.append(target())
                return holder[0](x)
            checks.append(ref)
        else:
            return _never  # a keyword (or form) this check does not know: leave it to jsonschema
    all_checks = tuple(checks)
    check: _Check = _always if not checks else checks[0] if len(checks) == 1 else \
        (lambda x: all(c(x) for c in all_checks))
    _CHECKS[id(node)] = check
    return check


def _root_check(name: str, level: _Level) -> _Check:
    key = (level, _id(name))
    if key not in _ROOTS:
        schema = _schema(name, level)
        _ROOTS[key] = _compile(schema, schema, level)
    return _ROOTS[key]


def _fast_items(validator: Any, items: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's ``items``, skipping the items the compiled check vouches for."""
    check = _CHECKS.get(id(items))
    if check is None or "prefixItems" in schema or not validator.is_type(instance, "array"):
        yield from _ITEMS(validator, items, instance, schema)
        return
    for index, item in enumerate(instance):
        if not check(item):
            yield from validator.descend(instance=item, schema=items, path=index)


def _fast_properties(validator: Any, properties: Any, instance: Any,
                     schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's ``properties``, skipping the values the compiled check vouches for."""
    if not validator.is_type(instance, "object"):
        return
    for prop, sub in properties.items():
        if prop in instance:
            check = _CHECKS.get(id(sub))
            if check is None or not check(instance[prop]):
                yield from validator.descend(instance[prop], sub, path=prop, schema_path=prop)


_ITEMS = Draft202012Validator.VALIDATORS["items"]
_FastValidator = validators.extend(Draft202012Validator, {"items": _fast_items, "properties": _fast_properties})


@functools.cache
def _fast_validator(name: str, level: _Level) -> Any:
    """A draft 2020-12 validator that consults the compiled checks (same messages as get_validator's)."""
    _root_check(name, level)
    return _FastValidator(_schema(name, level), registry=_registry(level))


# --------------------------------------------------------------------------------------------------
# Running the passes

_Path = tuple[str | int, ...]
_Found = tuple[_Path, ValidationError]


def _errors(name: str, level: _Level, doc: Any, prefix: _Path = ()) -> Iterator[_Found]:
    if _root_check(name, level)(doc):
        return
    for err in _fast_validator(name, level).iter_errors(doc):
        yield (*prefix, *err.absolute_path), err


def _covered(container: str, key: str, sub: str | None = None) -> bool:
    """Whether the original ``container`` schema already $refs the entry (so it is not checked twice)."""
    props = _original(container).get("properties", {})
    if container == "job-meta":
        return key in props.get("statistics", {}).get("properties", {})
    entry = props.get(key)
    return isinstance(entry, dict) and "$ref" in entry.get("properties", {}).get(sub, {})


def _meta_errors(doc: Any, relaxed: bool | _Level) -> Iterator[_Found]:
    level = _level(relaxed)
    yield from _errors("job-meta", level, doc)
    if level == "relaxed":  # the relaxed job-meta already checks unknown statistics entries
        return
    stats = doc.get("statistics") if isinstance(doc, dict) else None
    if isinstance(stats, dict):
        for metric, entry in stats.items():
            if not _covered("job-meta", metric):
                yield from _errors("job-metric-statistics", level, entry, ("statistics", metric))


def _data_errors(doc: Any, relaxed: bool | _Level) -> Iterator[_Found]:
    level = _level(relaxed)
    yield from _errors("job-data", level, doc)
    if not isinstance(doc, dict):
        return
    for metric, scopes in doc.items():
        if not isinstance(scopes, dict):
            continue  # reported by the top-level shape (or it is the schema's filesystems list)
        for scope, jm in scopes.items():
            if not _covered("job-data", metric, scope):
                yield from _errors("job-metric-data", level, jm, (metric, scope))


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_repr = reprlib.Repr()
_repr.maxlist = _repr.maxtuple = 4
_repr.maxdict = 3
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlevel = 2


def _format_path(path: _Path, wildcard: bool = False) -> str:
    """``flops_any/core/series[3]/statistics/avg``; indices become ``[*]`` with ``wildcard``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += "[*]" if wildcard else f"[{p}]"
        else:
            out += f"/{p}" if out else str(p)
    return out


def _message(err: ValidationError) -> str:
    """jsonschema's message on one short line (long instance reprs shortened)."""
    msg = err.message
    if len(msg) > 60:  # only then can it hold a long repr (never repr a whole document for nothing)
        msg = msg.replace(repr(err.instance), _repr.repr(err.instance))
    msg = msg.replace("\r", "\\r").replace("\n", "\\n")
    return msg if len(msg) <= 240 else msg[:237] + "..."


def _group(found: Iterable[tuple[_Path, str]], where: str, limit: int) -> list[str]:
    """One line per message pattern (path without indices, message without numbers), with a count."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for path, msg in found:
        key = (_format_path(path, wildcard=True), _NUMBER.sub("#", msg))
        if key in groups:
            groups[key][2] += 1
        else:
            groups[key] = [path, msg, 1]
    lines = []
    for (wild, _), (path, msg, n) in groups.items():
        if n == 1:
            lines.append(f"{where}: {_format_path(path)}: {msg}" if path else f"{where}: {msg}")
        else:
            lines.append(f"{where}: {wild}: {msg} ({n} times, first at {_format_path(path)})")
    if len(lines) > limit:
        rest = len(lines) - (limit - 1)
        lines = [*lines[: limit - 1], f"{where}: ... and {rest} more kinds of message"]
    return lines


def _run(found_relaxed: Iterable[_Found], found_compat: Iterable[_Found], where: str) -> ValidationReport:
    errors = [(path, _message(e)) for path, e in found_relaxed]
    seen = set(errors)
    warnings = []
    for path, e in found_compat:
        item = (path, _message(e))
        if item not in seen:
            seen.add(item)
            warnings.append(item)
    return ValidationReport(_group(errors, where, MAX_LINES), _group(warnings, where, MAX_LINES))


def validate_meta(doc: Any, *, where: str = "meta.json") -> ValidationReport:
    """Check a decoded meta.json (``schema.Job``); ``where`` prefixes every message."""
    return _run(_meta_errors(doc, "relaxed"), _meta_errors(doc, "compat"), where)


def validate_data(doc: Any, *, where: str = "data.json") -> ValidationReport:
    """Check a decoded data.json (``schema.JobData``): top-level shape and every JobMetric."""
    return _run(_data_errors(doc, "relaxed"), _data_errors(doc, "compat"), where)


def validate_cluster(doc: Any, *, where: str = "cluster.json") -> ValidationReport:
    """Check a decoded cluster.json (``schema.Cluster``)."""
    return _run(_errors("cluster", "relaxed", doc), _errors("cluster", "compat", doc), where)


def relaxations() -> Sequence[str]:
    """Human-readable list of what the relaxed schemas accept beyond the originals (the
    ``COMPAT_RELAXATIONS`` lines first: those are not even warned about)."""
    return _RELAXATIONS.splitlines()
