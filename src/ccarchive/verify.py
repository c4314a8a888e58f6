"""Check an archive: layout, completeness of entries, and the cc-lib JSON schemas.

Errors are what would make cc-backend fail or lose data (unparsable files, a meta.json in the
wrong directory, a data file missing); strict-schema failures that real Go output also has are
warnings (reference §8).  Works on every backend the archive layer opens.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

from .archive import TMP_PREFIX, JobArchive, job_path
from .errors import CcArchiveError
from .validate import validate_cluster, validate_data, validate_meta


@dataclass
class VerifyReport:
    clusters: int = 0
    jobs: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _job_dirs(archive: JobArchive, cluster: str) -> Iterator[tuple[str, list[str]]]:
    """(relative job dir, file names) for every start-time directory of a cluster."""
    base = archive._p(cluster)
    files: dict[str, list[str]] = {}
    for path in archive.fs.find(base):
        rel = path[len(base):].strip("/").split("/")
        if len(rel) == 4:
            files.setdefault("/".join([cluster, *rel[:3]]), []).append(rel[3])
    yield from sorted(files.items())


def verify_archive(archive: JobArchive, *, cluster: str | None = None, progress: bool = False) -> VerifyReport:
    rep = VerifyReport()
    clusters = [cluster] if cluster else archive.clusters()
    for c in clusters:
        rep.clusters += 1
        try:
            raw = archive.fs.cat_file(archive._p(c, "cluster.json"))
            v = validate_cluster(json.loads(raw), where=f"{c}/cluster.json")
            rep.errors += v.errors
            rep.warnings += v.warnings
            archive.load_cluster(c)
        except FileNotFoundError:
            rep.errors.append(f"{c}/cluster.json: missing (cc-backend refuses to start without it)")
        except (ValueError, CcArchiveError) as e:
            rep.errors.append(f"{c}/cluster.json: {e}")
        entries = list(_job_dirs(archive, c))
        bar = None
        if progress and len(entries) > 50:
            from tqdm import tqdm

            bar = tqdm(total=len(entries), desc=f"verify {c}", unit="job", leave=False)
        for rel, names in entries:
            _verify_job(archive, rel, names, rep)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    rep.warnings += [f"{p}: leftover temporary file of an interrupted write" for p in archive.temporary_files()
                     if not cluster or f"/{cluster}/" in p]
    return rep


def _verify_job(archive: JobArchive, rel: str, names: list[str], rep: VerifyReport) -> None:
    real = [n for n in names if not n.startswith(TMP_PREFIX)]
    if "meta.json" not in real:
        if real:
            rep.warnings.append(f"{rel}: {', '.join(sorted(real))} without meta.json (an interrupted write; "
                                f"not an archived job)")
        return
    rep.jobs += 1
    d = archive._p(rel)
    try:
        meta_doc = json.loads(archive.fs.cat_file(posixpath.join(d, "meta.json")))
    except ValueError as e:
        rep.errors.append(f"{rel}/meta.json: not valid JSON: {e}")
        return
    v = validate_meta(meta_doc, where=f"{rel}/meta.json")
    rep.errors += v.errors
    rep.warnings += v.warnings
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
    key = (meta_doc["cluster"], int(meta_doc["jobId"]), int(meta_doc["startTime"]))
    try:
        data_doc = json.loads(archive.load_data_bytes(key))
    except (ValueError, OSError, CcArchiveError) as e:
        rep.errors.append(f"{rel}: data file unreadable: {e}")
        return
    v = validate_data(data_doc, where=f"{rel}/data.json")
    rep.errors += v.errors
    rep.warnings += v.warnings
