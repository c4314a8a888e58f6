"""``ccarchive plot``: a job's metrics over time, or its roofline, as PNG, SVG or PDF."""

from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="archive URL or path")
    p.add_argument("job", metavar="CLUSTER/JOBID/STARTTIME", help="the job's archive key")
    p.add_argument("--metric", action="append", metavar="M",
                   help="a metric to plot (repeatable; default: all of the job's metrics)")
    p.add_argument("--scope", metavar="S",
                   help="scope to plot (node, socket, core, hwthread, accelerator...; default: node, "
                        "else the coarsest archived); more than 24 series become a min/median/max band")
    p.add_argument("--roofline", action="store_true",
                   help="plot arithmetic intensity vs flops_any against the subcluster's peaks instead")
    p.add_argument("--dpi", type=int, default=100, help="resolution of PNG output (default: 100)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output file: .png, .svg or .pdf")


def run(name: str, args: argparse.Namespace) -> int:
    from ..errors import InputError

    if not 20 <= args.dpi <= 1200:
        raise InputError(f"--dpi {args.dpi}: expected 20 to 1200")
    from .. import plot  # matplotlib missing: the error boundary names the extra

    plot.check_format(args.output)  # before anything is read
    from .archive_cmds import load_job_arg

    archive, job, data = load_job_arg(args.archive, args.job)
    cluster = archive.load_cluster(job.cluster) if archive.has_cluster(job.cluster) else None
    if args.roofline:
        if args.metric or args.scope:
            raise InputError("--roofline plots flops_any and mem_bw: drop --metric and --scope")
        fig = plot.plot_roofline(job, data, cluster)
    else:
        fig = plot.plot_job(job, data, args.metric, args.scope, cluster=cluster)
    path = plot.save_figure(fig, args.output, dpi=args.dpi)
    print(f"wrote {path}")
    return 0
