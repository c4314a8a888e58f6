"""``ccarchive import | ls | show | verify``: working with an archive directly.

Heavy modules (numba kernels, formats) are imported inside ``run`` so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "import":
        p.add_argument("--archive", required=True, help="archive URL or path (created if empty or missing)")
        p.add_argument("--cluster-config", metavar="FILE",
                       help="cluster.json to use (default: the archive's); stored in the archive when missing there")
        p.add_argument("meta", metavar="META.json", help="job metadata (cc-backend meta.json)")
        p.add_argument("data", metavar="DATA.json[.gz]", help="job metric data (cc-backend data.json, gzip allowed)")
    elif name == "ls":
        p.add_argument("archive", help="archive URL or path")
        p.add_argument("--cluster", help="only this cluster")
        p.add_argument("--json", action="store_true", help="one JSON object per job")
    elif name == "show":
        p.add_argument("archive", help="archive URL or path")
        p.add_argument("job", metavar="CLUSTER/JOBID/STARTTIME", help="the job's archive key")
        p.add_argument("--meta-json", action="store_true", help="print meta.json exactly as stored")
        p.add_argument("--series", action="store_true", help="list every series with its statistics")
    elif name == "verify":
        p.add_argument("archive", help="archive URL or path")
        p.add_argument("--cluster", help="only this cluster")
        p.add_argument("--strict", action="store_true", help="treat strict-schema warnings as errors")
        p.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")


def run(name: str, args: argparse.Namespace) -> int:
    return {"import": _import, "ls": _ls, "show": _show, "verify": _verify}[name](args)


# -- helpers -------------------------------------------------------------------------------------

def read_input_file(path: str) -> bytes:
    """File bytes, transparently gunzipped; a missing file is an InputError naming it."""
    from ..errors import InputError

    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: broken gzip data: {e}") from None
    return raw


def parse_json_file(path: str, raw: bytes) -> Any:
    from ..errors import InputError

    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


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

    meta_raw = read_input_file(args.meta)
    data_raw = read_input_file(args.data)
    meta_doc = parse_json_file(args.meta, meta_raw)
    data_doc = parse_json_file(args.data, data_raw)
    try:
        job = decode_job_meta(meta_doc)
    except FormatError as e:
        raise InputError(f"{args.meta}: {e}") from None
    try:
        data = decode_job_data(data_doc)
    except FormatError as e:
        raise InputError(f"{args.data}: {e}") from None
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
    from ..archive import open_archive

    archive = open_archive(args.archive)
    n = 0
    if not args.json:
        print(f"{'cluster':10s} {'jobId':>10s} {'startTime':>11s} {'user':12s} {'nodes':>5s} "
              f"{'duration':>9s} {'state':12s} {'energy':>8s}")
    for job in archive.iter_jobs(args.cluster):
        n += 1
        if args.json:
            print(json.dumps({"cluster": job.cluster, "jobId": job.job_id, "startTime": job.start_time,
                              "user": job.user, "numNodes": job.num_nodes, "duration": job.duration,
                              "jobState": job.job_state, "energy": job.energy}))
        else:
            print(f"{job.cluster:10s} {job.job_id:>10d} {job.start_time:>11d} {job.user[:12]:12s} "
                  f"{job.num_nodes:>5d} {job.duration:>9d} {job.job_state[:12]:12s} {job.energy:>8.2f}")
    if not args.json:
        print(f"{n} jobs", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    import numpy as np

    from ..archive import job_path, open_archive

    archive = open_archive(args.archive)
    key = parse_job_key(args.job)
    if args.meta_json:
        sys.stdout.buffer.write(archive.load_meta_bytes(key))
        return 0
    job = archive.load_meta(key)
    data = archive.load_data(key)
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


# -- verify --------------------------------------------------------------------------------------

def _verify(args: argparse.Namespace) -> int:
    from ..archive import open_archive
    from ..verify import verify_archive

    archive = open_archive(args.archive)
    report = verify_archive(archive, cluster=args.cluster, progress=not args.quiet)
    warnings = report.all_warnings()
    if not args.quiet:
        for w in warnings:
            print(f"warning: {w}")
    for e in report.errors:
        print(f"error: {e}")
    errors = len(report.errors) + (len(warnings) if args.strict else 0)
    print(f"verified {report.jobs} jobs in {report.clusters} clusters: "
          f"{len(report.errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0
