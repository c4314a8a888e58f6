"""Validate meta.json, data.json and cluster.json against the cc-lib JSON schemas.

Why two passes: the cc-lib schemas (shipped unchanged in ``ccarchive/schemas``) are stricter than what
the Go reference really writes (reference §8): Go emits ``"footprint":null``, ``"concurrentJobs":
{"items":null,...}``, ``"mean":null`` and null gaps in ``statisticsSeries``, units such as ``load`` or
``%``, and almost never the full list of "required" metrics.  Using the schemas as they are would reject
every real archive, ignoring them would let broken files through.  So every document is checked twice:

* **relaxed** (the acceptance gate, failures are *errors*): schemas derived in code from the originals by
  relaxing exactly the points where real Go output differs, see ``_RELAXATIONS``.  The structure stays
  enforced: required job fields and their types, ``unit``/``timestep``/``series`` of a JobMetric,
  ``hostname``/``data`` of a series, data being an array of numbers and nulls.
* **strict** (the original schemas): each failure the relaxed pass accepted becomes a *warning*.

Speed: before jsonschema looks at a document (or, inside it, at an array item or object
property), a compiled check of the same schema -- plain Python closures for the few keywords the
cc-lib schemas use -- says whether it is certainly valid; only what it cannot vouch for is walked
by jsonschema, so the messages are exactly jsonschema's and a typical job costs a fraction of
jsonschema's time.  The check errs on the safe side: any keyword or value it does not know makes
it answer "not certain".

Both passes check every JobMetric of data.json against job-metric-data and every entry of meta.json
``statistics`` against job-metric-statistics, including metrics the schemas do not name (§8).
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
from typing import Any

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

# What the relaxed schemas change, and why (the docstring of each _relax_* function says where).
_RELAXATIONS = """\
unit: base and prefix may be any string (Go output has load, Flops/s, packets/s, %)
job-metric-statistics: avg/min/max may be negative (Go computes them from the raw values)
job-metric-data: statisticsSeries arrays may be null or hold nulls and have < 3 points ("mean":null, NaN gaps)
job-metric-data: series statistics optional (legacy entries), may be negative
job-metric-data: series data need no non-negative number (all-null/negative series) but must be numbers/nulls
job-meta: energyFootprint, footprint, metaData and concurrentJobs.items may be null (nil Go maps/slices)
job-meta: numAcc, numHwthreads, walltime, requestedMemory and duration may be 0 (Go zero values)
job-meta: no required statistics list; every statistics entry checked against job-metric-statistics
job-data: no required metric or scope lists; every top-level value except filesystems must be an object
cluster: metric energy may be "" (Go's MetricConfig.Energy has no omitempty)
"""


@dataclass
class ValidationReport:
    """Outcome of validating one document: errors fail the relaxed gate, warnings fail only strict."""

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
    s["items"] = {"type": ["number", "null"]}
    s.pop("minItems", None)


def _relax_metric_data(s: dict[str, Any]) -> None:
    """statisticsSeries with nulls; legacy series without statistics; typed data points."""
    ss = _at(s, "properties", "statisticsSeries", "properties")
    for key in ("min", "max", "mean", "median"):
        _nullable_float_array(_at(ss, key))
    for arr in _at(ss, "percentiles", "properties").values():
        _nullable_float_array(arr)
    item = _at(s, "properties", "series", "items")
    _drop_required(item, "statistics")
    for key in ("avg", "min", "max"):
        _at(item, "properties", "statistics", "properties", key).pop("minimum", None)
    data = _at(item, "properties", "data")
    data.pop("contains", None)
    data["items"] = {"type": ["number", "null"]}


def _relax_meta(s: dict[str, Any]) -> None:
    """Nil Go maps/slices encode as null, zero counters are legal, no required metric list."""
    props = _at(s, "properties")
    for key in ("energyFootprint", "footprint", "metaData"):
        _at(props, key)["type"] = ["object", "null"]
    _at(props, "concurrentJobs", "properties", "items")["type"] = ["array", "null"]
    for key in ("numAcc", "numHwthreads", "walltime", "requestedMemory", "duration"):
        p = _at(props, key)
        if p.pop("exclusiveMinimum", None) is not None:
            p["minimum"] = 0
    stats = _at(props, "statistics")
    stats.pop("required", None)
    stats["additionalProperties"] = {"$ref": _id("job-metric-statistics")}


def _relax_data(s: dict[str, Any]) -> None:
    """No required metrics or scopes; every metric maps scopes to objects (checked one by one)."""
    s.pop("required", None)
    for metric, sub in _at(s, "properties").items():
        if metric == "filesystems":
            continue
        sub.pop("required", None)
        sub["type"] = "object"
    s["additionalProperties"] = {"type": "object"}


def _relax_cluster(s: dict[str, Any]) -> None:
    """Go writes ``"energy":""`` for metrics without an energy role (the field has no omitempty)."""
    mc = _at(s, "properties", "metricConfig", "items", "properties")
    for props in (mc, _at(mc, "subClusters", "items", "properties")):
        energy = _at(props, "energy")
        energy["enum"] = [*energy.get("enum", []), ""]


_RELAX = {
    "cluster": _relax_cluster,
    "unit": _relax_unit,
    "job-metric-statistics": _relax_statistics,
    "job-metric-data": _relax_metric_data,
    "job-meta": _relax_meta,
    "job-data": _relax_data,
}


@functools.cache
def _schema(name: str, relaxed: bool) -> dict[str, Any]:
    """Original or relaxed schema (cached; never mutate the result)."""
    s = _original(name)
    if relaxed and name in _RELAX:
        s = copy.deepcopy(s)
        _RELAX[name](s)
    return s


def get_schema(name: str, *, relaxed: bool = False) -> dict[str, Any]:
    """A copy of a schema by short name (see ``SCHEMA_NAMES``), original or relaxed."""
    return copy.deepcopy(_schema(name, relaxed))


@functools.cache
def _registry(relaxed: bool) -> Registry:
    """All six schemas, original or relaxed, under their ``embedfs://`` ids."""
    pairs = []
    for name in SCHEMA_NAMES:
        schema = _schema(name, relaxed)
        if schema.get("$id") != _id(name):
            raise RuntimeError(f"{name}.schema.json: unexpected $id {schema.get('$id')!r}")
        pairs.append((_id(name), DRAFT202012.create_resource(schema)))
    return Registry().with_resources(pairs).crawl()


@functools.cache
def get_validator(name: str, *, relaxed: bool = False) -> Draft202012Validator:
    """Cached draft 2020-12 validator of one schema, refs resolved within the same (relaxed) set."""
    return Draft202012Validator(_schema(name, relaxed), registry=_registry(relaxed))


# --------------------------------------------------------------------------------------------------
# The compiled check: True only when jsonschema would certainly find nothing

_Check = Callable[[Any], bool]
#: id() of every (sub)schema dict of the twelve cached schemas -> its compiled check
_CHECKS: dict[int, _Check] = {}
#: (relaxed, $id) -> compiled check of that schema's root (filled as they are compiled)
_ROOTS: dict[tuple[bool, str], _Check] = {}
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


def _resolve(ref: str, root: dict[str, Any], relaxed: bool) -> Callable[[], _Check] | None:
    """A function that finds the check of a $ref target when first called (targets may be compiled later)."""
    if ref.startswith(_PREFIX) and ref.endswith(".schema.json") and ref[len(_PREFIX):-12] in SCHEMA_NAMES:
        return lambda: _root_check(ref[len(_PREFIX):-12], relaxed)
    if ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return lambda: _CHECKS.get(id(node), _never)
    return None


def _compile(node: Any, root: dict[str, Any], relaxed: bool) -> _Check:
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
            checks.append(_properties_check(tuple((k, _compile(v, root, relaxed)) for k, v in val.items())))
        elif kw == "required" and isinstance(val, list):
            names = tuple(val)
            checks.append(_required_check(names))
        elif kw == "items" and "prefixItems" not in node:
            f = _compile(val, root, relaxed)
            checks.append(_items_check(f, every=True))
        elif kw == "contains" and "minContains" not in node and "maxContains" not in node:
            f = _compile(val, root, relaxed)
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
            f = _compile(val, root, relaxed)
            known = frozenset(node.get("properties", {}))
            checks.append(_additional_check(f, known))
        elif kw == "$ref" and isinstance(val, str):
            target = _resolve(val, root, relaxed)
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


def _root_check(name: str, relaxed: bool) -> _Check:
    key = (relaxed, _id(name))
    if key not in _ROOTS:
        schema = _schema(name, relaxed)
        _ROOTS[key] = _compile(schema, schema, relaxed)
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
def _fast_validator(name: str, relaxed: bool) -> Any:
    """A draft 2020-12 validator that consults the compiled checks (same messages as get_validator's)."""
    _root_check(name, relaxed)
    return _FastValidator(_schema(name, relaxed), registry=_registry(relaxed))


# --------------------------------------------------------------------------------------------------
# Running the passes

_Path = tuple[str | int, ...]
_Found = tuple[_Path, ValidationError]


def _errors(name: str, relaxed: bool, doc: Any, prefix: _Path = ()) -> Iterator[_Found]:
    if _root_check(name, relaxed)(doc):
        return
    for err in _fast_validator(name, relaxed).iter_errors(doc):
        yield (*prefix, *err.absolute_path), err


def _covered(container: str, key: str, sub: str | None = None) -> bool:
    """Whether the original ``container`` schema already $refs the entry (so it is not checked twice)."""
    props = _original(container).get("properties", {})
    if container == "job-meta":
        return key in props.get("statistics", {}).get("properties", {})
    entry = props.get(key)
    return isinstance(entry, dict) and "$ref" in entry.get("properties", {}).get(sub, {})


def _meta_errors(doc: Any, relaxed: bool) -> Iterator[_Found]:
    yield from _errors("job-meta", relaxed, doc)
    if relaxed:  # the relaxed job-meta already checks unknown statistics entries
        return
    stats = doc.get("statistics") if isinstance(doc, dict) else None
    if isinstance(stats, dict):
        for metric, entry in stats.items():
            if not _covered("job-meta", metric):
                yield from _errors("job-metric-statistics", False, entry, ("statistics", metric))


def _data_errors(doc: Any, relaxed: bool) -> Iterator[_Found]:
    yield from _errors("job-data", relaxed, doc)
    if not isinstance(doc, dict):
        return
    for metric, scopes in doc.items():
        if not isinstance(scopes, dict):
            continue  # reported by the top-level shape (or it is the schema's filesystems list)
        for scope, jm in scopes.items():
            if not _covered("job-data", metric, scope):
                yield from _errors("job-metric-data", relaxed, jm, (metric, scope))


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


def _run(found_relaxed: Iterable[_Found], found_strict: Iterable[_Found], where: str) -> ValidationReport:
    errors = [(path, _message(e)) for path, e in found_relaxed]
    seen = set(errors)
    warnings = []
    for path, e in found_strict:
        item = (path, _message(e))
        if item not in seen:
            seen.add(item)
            warnings.append(item)
    return ValidationReport(_group(errors, where, MAX_LINES), _group(warnings, where, MAX_LINES))


def validate_meta(doc: Any, *, where: str = "meta.json") -> ValidationReport:
    """Check a decoded meta.json (``schema.Job``); ``where`` prefixes every message."""
    return _run(_meta_errors(doc, True), _meta_errors(doc, False), where)


def validate_data(doc: Any, *, where: str = "data.json") -> ValidationReport:
    """Check a decoded data.json (``schema.JobData``): top-level shape and every JobMetric."""
    return _run(_data_errors(doc, True), _data_errors(doc, False), where)


def validate_cluster(doc: Any, *, where: str = "cluster.json") -> ValidationReport:
    """Check a decoded cluster.json (``schema.Cluster``)."""
    return _run(_errors("cluster", True, doc), _errors("cluster", False, doc), where)


def relaxations() -> Sequence[str]:
    """Human-readable list of what the relaxed schemas accept beyond the originals."""
    return _RELAXATIONS.splitlines()
