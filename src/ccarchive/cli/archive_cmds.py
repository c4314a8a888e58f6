"""``ccarchive import | ls | show | verify``: working with an archive directly.

Heavy modules (numba kernels, formats) are imported inside ``run`` so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .args import check_cluster_arg, open_archive_arg

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "import":
        p.add_argument("--archive", required=True, help="archive URL or path (created if empty or missing)")
        p.add_argument("--cluster-config", metavar="FILE",
                       help="cluster.json to use (default: the archive's); stored in the archive when missing there")
        p.add_argument("meta", metavar="META.json", help="job metadata (cc-backend meta.json)")
        p.add_argument("data", metavar="DATA.json[.gz]", help="job metric data (cc-backend data.json, gzip allowed)")
    elif name == "ls":
        from .args import add_job_filters

        p.add_argument("archive", help="archive URL or path")
        add_job_filters(p)
        p.add_argument("--json", action="store_true",
                       help="JSON lines: one object per job (startTime as Unix seconds and startTimeISO in UTC), "
                            "no header or count")
    elif name == "show":
        p.add_argument("archive", help="archive URL or path")
        p.add_argument("job", metavar="CLUSTER/JOBID/STARTTIME", help="the job's archive key")
        p.add_argument("--meta-json", action="store_true", help="print meta.json exactly as stored")
        p.add_argument("--series", action="store_true", help="list every series with its statistics")
        p.add_argument("--summary", action="store_true",
                       help="CPU, memory, GPU, bandwidth and flops against the allocation and the peaks, "
                            "per node, with notes on obvious problems (idle GPUs, idle nodes, unused memory)")
        p.add_argument("--json", action="store_true",
                       help="one JSON document: meta.json as stored plus every series' shape (with --series: "
                            "their statistics); with --summary: the summary")
    elif name == "verify":
        p.add_argument("archive", help="archive URL or path")
        p.add_argument("--cluster", help="only this cluster")
        p.add_argument("--strict", action="store_true", help="treat strict-schema warnings as errors")
        p.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")
        p.add_argument("--json", action="store_true",
                       help="the result as one JSON document (counts, errors, warnings); errors also on stderr")


def run(name: str, args: argparse.Namespace) -> int:
    return {"import": _import, "ls": _ls, "show": _show, "verify": _verify}[name](args)


# -- helpers -------------------------------------------------------------------------------------

@overload
def read_input_file(path: str) -> bytes: ...
@overload
def read_input_file(path: str, *, as_array: Literal[True]) -> npt.NDArray[np.uint8]: ...


def read_input_file(path: str, *, as_array: bool = False) -> bytes | npt.NDArray[np.uint8]:
    """File bytes, transparently gunzipped; a missing file is an InputError naming it.

    ``as_array``: the text as a uint8 array that the file is read (or inflated) straight into,
    so a large data.json is in memory once, for the number kernel to parse in place."""
    import numpy as np

    from ..errors import InputError
    from ..formats.compress import GZIP_MAGIC, gunzip_array, gzip_size_hint

    try:
        with Path(path).open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(2) == GZIP_MAGIC:
                hint = None
                if size >= 4:
                    f.seek(-4, os.SEEK_END)
                    hint = gzip_size_hint(f.read(4))
                f.seek(0)
                try:
                    text = gunzip_array(f, hint)
                except (OSError, EOFError) as e:
                    raise InputError(f"{path}: broken gzip data: {e}") from None
            else:
                f.seek(0)
                text = np.empty(size + 1, dtype=np.uint8)  # + 1: the end shows as a short read
                n = 0
                while got := f.readinto(text.data[n:]):
                    n += got
                    if n == text.shape[0]:  # the file grew meanwhile: take the rest too
                        text = np.concatenate([text, np.frombuffer(f.read(), dtype=np.uint8)])
                        n = text.shape[0]
                        break
                text = text[:n]
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    return text if as_array else text.tobytes()


def parse_json_file(path: str, raw: bytes) -> Any:
    from ..errors import InputError

    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise InputError(f"{path}: malformed JSON: nested too deeply") from None


def parse_job_key(text: str) -> tuple[str, int, int]:
    from ..errors import InputError

    parts = text.strip("/").split("/")
    try:
        if len(parts) == 3:
            return parts[0], int(parts[1]), int(parts[2])
        if len(parts) == 5:  # a relative job directory: cluster/lvl1/lvl2/start
            raise ValueError
        if len(parts) == 4:
            return parts[0], int(parts[1]) * 1000 + int(parts[2]), int(parts[3])
    except ValueError:
        pass
    raise InputError(f"{text!r}: expected CLUSTER/JOBID/STARTTIME (or a job directory CLUSTER/L1/L2/START)")


# -- import --------------------------------------------------------------------------------------

def _import(args: argparse.Namespace) -> int:
    from ..archive import open_archive
    from ..cluster import load_cluster
    from ..core import archive_loaded, check_data_hosts, check_job
    from ..errors import ClusterConfigError, FormatError, InputError
    from ..formats.data import decode_job_data
    from ..formats.meta import decode_job_meta
    from ..names import check_job_key

    meta_doc = parse_json_file(args.meta, read_input_file(args.meta))
    try:
        job = decode_job_meta(meta_doc)
    except FormatError as e:
        raise InputError(f"{args.meta}: {e}") from None
    check_job_key(job.key)  # refused before anything is read further or the archive is created
    # data.json: read (inflated) into one array and parsed in place -- no Python object per
    # sample -- then the text is dropped: peak memory is the text plus the float64 samples
    data_text = read_input_file(args.data, as_array=True)
    try:
        data = decode_job_data(data_text)
    except FormatError as e:
        raise InputError(f"{args.data}: {e}") from None
    del data_text
    if not data:
        raise InputError(f"{args.data}: {job.label} has no metric data")

    archive = open_archive(args.archive, create=True)
    if args.cluster_config:
        cluster = load_cluster(read_input_file(args.cluster_config), name_hint=args.cluster_config)
        if cluster.name != job.cluster:
            raise InputError(f"{args.meta}: {job.label} belongs to cluster {job.cluster!r}, "
                             f"but {args.cluster_config} describes {cluster.name!r}")
    elif archive.has_cluster(job.cluster):
        cluster = archive.load_cluster(job.cluster)
    else:
        raise ClusterConfigError(f"{job.label}: unknown cluster {job.cluster!r}: the archive has no "
                                 f"{job.cluster}/cluster.json; pass --cluster-config FILE")
    if job.num_nodes == 0:
        job.num_nodes = len(job.resources)
    check_job(job, cluster)
    check_data_hosts(job, data)
    result = archive_loaded(job, data, archive=archive, cluster=cluster)
    for w in result.warnings:
        print(f"warning: {job.label}: {w}", file=sys.stderr)
    n_series = sum(b.num_series for s in data.values() for b in s.values())
    print(f"archived {job.label}: {len(data)} metrics, {n_series} series, "
          f"{result.bytes_written} bytes -> {result.path}")
    return 0


# -- ls / show -----------------------------------------------------------------------------------

def _ls(args: argparse.Namespace) -> int:
    """The table (or JSON lines) on stdout; an unreadable job is one line on stderr, the listing
    goes on, and the exit code is 1 at the end.  Filters as ``ccarchive jobs``: since <= start < until."""
    from ..archive import job_path
    from ..errors import CcArchiveError, describe_error
    from ..jobstable import JobFilter
    from .args import iso_time

    archive = open_archive_arg(args.archive)
    check_cluster_arg(archive, args.cluster, args.archive)
    flt = JobFilter.make(None, cluster=args.cluster, user=args.user, since=args.since, until=args.until,
                         state=args.state)
    n = bad = 0
    if not args.json:
        print(f"{'cluster':10s} {'jobId':>10s} {'startTime (UTC)':20s} {'user':12s} {'nodes':>5s} "
              f"{'duration':>9s} {'state':12s} {'energy':>8s}")
    for key in archive.iter_job_keys(args.cluster):
        if not flt.keep_key(key):
            continue
        try:
            job = archive.load_meta(key)
        except (CcArchiveError, OSError, ValueError, RecursionError) as e:
            bad += 1
            rel, message = job_path(*key), describe_error(e)
            print(f"error: {message if rel in message else f'{rel}: {message}'}", file=sys.stderr)
            continue
        if not flt.keep(job):
            continue
        n += 1
        if args.json:
            print(json.dumps({"cluster": job.cluster, "jobId": job.job_id, "startTime": job.start_time,
                              "startTimeISO": iso_time(job.start_time), "user": job.user,
                              "numNodes": job.num_nodes, "duration": job.duration,
                              "jobState": job.job_state, "energy": job.energy}))
        else:
            print(f"{job.cluster:10s} {job.job_id:>10d} {iso_time(job.start_time):20s} {job.user[:12]:12s} "
                  f"{job.num_nodes:>5d} {job.duration:>9d} {job.job_state[:12]:12s} {job.energy:>8.2f}")
    if not args.json:
        print(f"{n} jobs" + (f" ({bad} unreadable)" if bad else ""))
    return 1 if bad else 0


def load_job_arg(url: str, job_arg: str) -> tuple[Any, Any, Any]:
    """(archive, job, data) of a CLUSTER/JOBID/STARTTIME argument; a damaged job is one error
    naming its directory."""
    from ..archive import job_path
    from ..errors import CcArchiveError, FormatError, describe_error
    from ..verify import DAMAGED_FILE_ERRORS

    key = parse_job_key(job_arg)
    archive = open_archive_arg(url)
    try:
        return archive, archive.load_meta(key), archive.load_data(key)
    except CcArchiveError:
        raise
    except DAMAGED_FILE_ERRORS as e:
        raise FormatError(f"{job_path(*key)}: damaged ({describe_error(e)}); "
                          f"'ccarchive verify {url}' checks the whole archive") from None


def _show(args: argparse.Namespace) -> int:
    import numpy as np

    from ..archive import job_path

    if args.meta_json and (args.json or args.summary):
        from .main import UsageError

        raise UsageError("--meta-json prints meta.json exactly as stored: without --json and --summary")
    if args.meta_json:
        archive = open_archive_arg(args.archive)
        sys.stdout.buffer.write(archive.load_meta_bytes(parse_job_key(args.job)))
        return 0
    archive, job, data = load_job_arg(args.archive, args.job)
    key = job.key
    if args.summary:
        return _print_summary(args, archive, job, data)
    if args.json:
        print(json.dumps(_show_document(archive, job, data, series=args.series)))
        return 0
    print(f"{job.label}  ({job_path(*key)})")
    print(f"  user {job.user}  project {job.project}  subCluster {job.sub_cluster}  partition {job.partition}")
    print(f"  state {job.job_state}  duration {job.duration} s  nodes {job.num_nodes}  "
          f"hwthreads {job.num_hwthreads}  accelerators {job.num_acc}  monitoringStatus {job.monitoring_status}")
    print(f"  hosts {', '.join(job.hostnames[:8])}{' ...' if len(job.hostnames) > 8 else ''}")
    print(f"  energy {job.energy} kWh  footprint {json.dumps(job.footprint, sort_keys=True)}")
    print("  statistics:")
    for m, st in sorted((job.statistics or {}).items()):
        unit = f"{st.unit.prefix}{st.unit.base}"
        print(f"    {m:22s} avg {st.avg:>12.2f}  min {st.min:>12.2f}  max {st.max:>12.2f}  {unit}")
    print("  data:")
    for m in sorted(data):
        for scope, b in sorted(data[m].items()):
            samples = int(np.max(b.lengths)) if b.num_series else 0
            extra = "  statisticsSeries" if b.statistics_series is not None else ""
            print(f"    {m:22s} {scope:12s} {b.num_series:4d} series x {samples:6d} samples "
                  f"@ {b.timestep}s{extra}")
            if args.series and b.statistics is not None:
                for i in range(b.num_series):
                    mn, av, mx = b.statistics[i]
                    sid = "" if b.ids[i] is None else f" id {b.ids[i]}"
                    print(f"        {b.hostnames[i]}{sid}: min {mn:.2f} avg {av:.2f} max {mx:.2f}")
    return 0


def _finite(x: float) -> float | None:
    """A number for JSON: NaN and infinities (no JSON number) become null."""
    v = float(x)
    return v if v == v and abs(v) != float("inf") else None


def _show_document(archive: Any, job: Any, data: Any, *, series: bool) -> dict[str, Any]:
    """``show --json``: meta.json as stored, and per metric and scope the series' shape."""
    import numpy as np

    from ..archive import job_path

    rows = []
    for m in sorted(data):
        for scope, b in sorted(data[m].items()):
            row: dict[str, Any] = {"metric": m, "scope": scope, "timestep": b.timestep, "series": b.num_series,
                                   "samples": int(np.max(b.lengths)) if b.num_series else 0,
                                   "statisticsSeries": b.statistics_series is not None}
            if series and b.statistics is not None:
                row["seriesStatistics"] = [
                    {"hostname": b.hostnames[i], "id": b.ids[i], "min": _finite(b.statistics[i][0]),
                     "avg": _finite(b.statistics[i][1]), "max": _finite(b.statistics[i][2])}
                    for i in range(b.num_series)]
            rows.append(row)
    return {"path": job_path(*job.key), "meta": json.loads(archive.load_meta_bytes(job.key)), "data": rows}


def _print_summary(args: argparse.Namespace, archive: Any, job: Any, data: Any) -> int:
    from ..summary import summarize

    cluster = archive.load_cluster(job.cluster) if archive.has_cluster(job.cluster) else None
    s = summarize(job, data, cluster)
    if args.json:
        print(json.dumps(s.to_dict()))
        return 0
    hours = job.duration / 3600
    print(f"{job.label}: user {job.user}, {s.num_nodes} nodes, {hours:.2f} h, subCluster {job.sub_cluster}")
    for m in s.measures:
        per = " per GPU" if m.per_device else " per node" if m.per_node else ""
        of = "" if m.capacity is None else f" of {m.capacity:,.4g} {m.unit}{per}"
        pct = "" if m.percent is None or m.unit == "%" else f"  ({m.percent:.0f} %)"
        print(f"  {m.label:24s} {m.value:>10,.2f} {m.unit}{of if m.unit != '%' else ''}{pct}")
    if len(s.measures) and (len(job.hostnames) > 1 or any(m.per_device for m in s.measures)):
        cols = [m for m in s.measures if m.per_node]
        print("  per node:" + "".join(f" {m.name + ' ' + m.unit:>18s}" for m in cols))
        for h in job.hostnames:
            print(f"    {h:10s}" + "".join(f" {m.per_node.get(h, float('nan')):>18,.2f}" for m in cols))
    print("  notes:" if s.notes else "  notes: none")
    for note in s.notes:
        print(f"    - {note}")
    return 0


# -- verify --------------------------------------------------------------------------------------

def _verify(args: argparse.Namespace) -> int:
    """Warnings and the summary on stdout, one line per error on stderr; a damaged job is an
    error of that job and never ends the run."""
    from ..verify import verify_archive

    archive = open_archive_arg(args.archive)
    check_cluster_arg(archive, args.cluster, args.archive)
    report = verify_archive(archive, cluster=args.cluster, progress=not args.quiet)
    warnings = report.all_warnings()
    errors = len(report.errors) + (len(warnings) if args.strict else 0)
    if args.json:
        for e in report.errors:
            print(f"error: {e}", file=sys.stderr)
        print(json.dumps({"archive": args.archive, "clusters": report.clusters, "jobs": report.jobs,
                          "ok": not errors, "strict": args.strict, "errors": report.errors,
                          "warnings": warnings}))
        return 1 if errors else 0
    if not args.quiet:
        for w in warnings:
            print(f"warning: {w}")
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    print(f"verified {report.jobs} jobs in {report.clusters} clusters: "
          f"{len(report.errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0
