"""Check an archive: layout, completeness of entries, and the cc-lib JSON schemas.

Errors are what would make cc-backend fail or lose data (unparsable files, a meta.json in the
wrong directory, a data file missing); strict-schema failures that real Go output also has are
warnings.  Works on every backend the archive layer opens.

This is the command for damaged archives, so it never stops at one: whatever reading or checking
one cluster or job raises (a truncated or corrupt gzip stream, text that is not JSON, a document
of the wrong shape) becomes an error of that cluster or job, and the run goes on.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from isal.igzip_lib import IsalError
from zlib_ng import zlib_ng

from .archive import TMP_PREFIX, job_path
from .errors import CcArchiveError, describe_error
from .validate import validate_cluster, validate_data, validate_meta

if TYPE_CHECKING:
    from .backends import Archive, Entry

#: What reading a damaged file raises besides ccarchive's own errors: I/O errors (a bad gzip
#: header is one), a truncated gzip stream (EOFError), a corrupt one (the inflate libraries' own
#: error classes), text that is not UTF-8 or JSON (ValueError), nesting too deep to decode.
DAMAGED_FILE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, RecursionError, zlib.error,
    cast("type[BaseException]", IsalError), cast("type[BaseException]", zlib_ng.error))
#: ... and with ccarchive's own (a missing file, a backend that is unavailable)
_READ_ERRORS: tuple[type[BaseException], ...] = (CcArchiveError, *DAMAGED_FILE_ERRORS)


@dataclass
class VerifyReport:
    clusters: int = 0
    jobs: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: per-job warnings grouped across jobs: message without the job path -> (count, first job)
    job_warnings: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add_job_warnings(self, rel: str, warnings: list[str]) -> None:
        for w in warnings:
            msg = w.split(": ", 1)[1] if w.startswith(rel) else w
            count, first = self.job_warnings.get(msg, (0, rel))
            self.job_warnings[msg] = (count + 1, first)

    def all_warnings(self) -> list[str]:
        grouped = [f"{first}: {msg}" if n == 1 else f"{n} jobs (first {first}): {msg}"
                   for msg, (n, first) in self.job_warnings.items()]
        return self.warnings + grouped


_NUMBER = (int, float)


def _sample(values: object, where: str, errors: list[str]) -> object:
    """Check a long number array with a cheap type test and keep a short representative sample
    for the schema check (jsonschema per element would make verify of big jobs take minutes)."""
    if not isinstance(values, list) or len(values) <= 8:
        return values
    bad = next((v for v in values if v is not None and type(v) not in _NUMBER), None)
    if bad is not None:
        errors.append(f"{where}: {bad!r} is not a number or null")
    keep = values[:3]
    nonneg = next((v for v in values if type(v) in _NUMBER and v >= 0), None)  # type: ignore[operator]
    if nonneg is not None and nonneg not in keep:
        keep = [*keep, nonneg]
    return keep


def _skeleton(doc: object, rel: str, errors: list[str]) -> object:
    """data.json with every series' data and statisticsSeries array sampled (see _sample)."""
    if not isinstance(doc, dict):
        return doc
    out: dict[str, object] = {}
    for metric, scopes in doc.items():
        if not isinstance(scopes, dict):
            out[metric] = scopes
            continue
        out[metric] = new_scopes = {}
        for scope, jm in scopes.items():
            if not isinstance(jm, dict):
                new_scopes[scope] = jm
                continue
            jm = dict(jm)
            where = f"{rel}/data.json: {metric}/{scope}"
            if isinstance(jm.get("series"), list):
                jm["series"] = [
                    {**x, "data": _sample(x.get("data"), f"{where}/series[{i}]/data", errors)}
                    if isinstance(x, dict) and "data" in x else x
                    for i, x in enumerate(jm["series"])
                ]
            ss = jm.get("statisticsSeries")
            if isinstance(ss, dict):
                jm["statisticsSeries"] = {k: _sample(v, f"{where}/statisticsSeries/{k}", errors)
                                          for k, v in ss.items()}
            new_scopes[scope] = jm
    return out


def verify_archive(archive: Archive, *, cluster: str | None = None, progress: bool = False) -> VerifyReport:
    rep = VerifyReport()
    clusters = [cluster] if cluster else archive.clusters()
    for c in clusters:
        rep.clusters += 1
        try:
            raw = archive.load_cluster_bytes(c)
            v = validate_cluster(json.loads(raw), where=f"{c}/cluster.json")
            rep.errors += v.errors
            rep.warnings += v.warnings
            archive.load_cluster(c)
        except FileNotFoundError:
            rep.errors.append(f"{c}/cluster.json: missing (cc-backend refuses to start without it)")
        except Exception as e:  # noqa: BLE001 - a damaged cluster.json is reported, never fatal
            rep.errors.append(f"{c}/cluster.json: {describe_error(e)}")
        try:
            entries = list(archive.list_entries(c))
        except _READ_ERRORS as e:
            rep.errors.append(f"{c}: jobs cannot be listed: {describe_error(e)}")
            continue
        bar = None
        if progress and len(entries) > 50:
            from tqdm import tqdm

            bar = tqdm(total=len(entries), desc=f"verify {c}", unit="job", leave=False)
        for entry in entries:
            try:
                _verify_job(archive, entry, rep)
            except Exception as e:  # noqa: BLE001 - one damaged job must not end the check of the others
                rep.errors.append(f"{entry.rel}: cannot be checked: {describe_error(e)}")
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    rep.warnings += [f"{p}: leftover temporary file of an interrupted write" for p in archive.temporary_files()
                     if not cluster or f"/{cluster}/" in p]
    return rep


def _verify_job(archive: Archive, entry: Entry, rep: VerifyReport) -> None:
    rel = entry.rel
    real = [n for n in entry.names if not n.startswith(TMP_PREFIX)]
    if "meta.json" not in real:
        if real:
            rep.warnings.append(f"{rel}: {', '.join(sorted(real))} without meta.json (an interrupted write; "
                                f"not an archived job)")
        return
    rep.jobs += 1
    try:
        meta_doc = json.loads(archive.load_meta_bytes(entry.key))
    except ValueError as e:
        rep.errors.append(f"{rel}/meta.json: not valid JSON: {e}")
        return
    except _READ_ERRORS as e:
        rep.errors.append(f"{rel}/meta.json: unreadable: {describe_error(e)}")
        return
    v = validate_meta(meta_doc, where=f"{rel}/meta.json")
    rep.errors += v.errors
    rep.add_job_warnings(rel, v.warnings)
    try:
        expect = job_path(meta_doc["cluster"], int(meta_doc["jobId"]), int(meta_doc["startTime"]))
        if expect != rel:
            rep.errors.append(f"{rel}/meta.json: describes {expect}, stored in the wrong directory")
    except (KeyError, TypeError, ValueError):
        return  # already reported by the schema check
    if "data.json" in real and "data.json.gz" in real:
        rep.warnings.append(f"{rel}: both data.json and data.json.gz exist; readers use data.json.gz")
    if "data.json" not in real and "data.json.gz" not in real:
        rep.errors.append(f"{rel}: meta.json without a data file")
        return
    try:
        data_doc = json.loads(archive.load_data_bytes(entry.key))
    except _READ_ERRORS as e:
        rep.errors.append(f"{rel}: data file unreadable: {describe_error(e)}")
        return
    if not isinstance(data_doc, dict):
        rep.errors.append(f"{rel}/data.json: expected an object of metrics, got {type(data_doc).__name__}")
        return
    v = validate_data(_skeleton(data_doc, rel, rep.errors), where=f"{rel}/data.json")
    rep.errors += v.errors
    rep.add_job_warnings(rel, v.warnings)
