"""``ccarchive jobs``: the archive's jobs as a table (one row per job, statistics as columns).

The table is :meth:`jobs_table` of the archive's backend (see :mod:`ccarchive.jobstable` for the
columns); this module only selects columns and writes it as text, CSV, JSON lines or Parquet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .args import add_job_filters

FORMATS = ("table", "csv", "json", "parquet")
#: Columns of the text table besides the footprint columns (the metrics the site chose to rate jobs by).
TABLE_COLUMNS = ("cluster", "job_id", "start_time", "user", "job_state", "num_nodes", "duration", "node_hours")


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="archive URL or path (file, s3://, sqlite://, parquet+...)")
    add_job_filters(p)
    p.add_argument("--columns", metavar="A,B,...",
                   help="only these columns, in this order (default: all; the text table shows the job, "
                        "its node hours and the footprint columns)")
    p.add_argument("--format", choices=FORMATS,
                   help="output format (default: from the -o suffix, else table); json is one object per line, "
                        "parquet needs -o")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")


def run(name: str, args: argparse.Namespace) -> int:
    from .args import check_cluster_arg, open_archive_arg
    from .main import UsageError

    fmt = args.format or _format_of(args.output)
    if fmt == "parquet" and not args.output:
        raise UsageError("--format parquet writes a binary file: give -o FILE")
    archive = open_archive_arg(args.archive)
    check_cluster_arg(archive, args.cluster, args.archive)
    table = archive.jobs_table(cluster=args.cluster, user=args.user, since=args.since, until=args.until,
                               state=args.state)
    if args.columns:
        table = _select(table, args.columns)
    elif fmt == "table":
        table = table.select([c for c in table.column_names if c in TABLE_COLUMNS or c.startswith("footprint_")])
    payload = _encode(table, fmt)
    if args.output:
        _write(args.output, payload)
    elif isinstance(payload, bytes):
        sys.stdout.buffer.write(payload)
    else:
        sys.stdout.write(payload)
    return 0


def _format_of(output: str | None) -> str:
    suffix = Path(output).suffix.lower() if output else ""
    return {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(suffix, "table")


def _select(table: Any, columns: str) -> Any:
    from .main import UsageError

    names = [c.strip() for c in columns.split(",") if c.strip()]
    if unknown := [c for c in names if c not in table.column_names]:
        raise UsageError(f"--columns: no column {unknown[0]!r} (columns: {', '.join(table.column_names)})")
    return table.select(names)


def _encode(table: Any, fmt: str) -> str | bytes:
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return bytes(sink.getvalue().to_pybytes())
    if fmt == "csv":
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        return bytes(sink.getvalue().to_pybytes())
    if fmt == "json":
        import json

        return "".join(json.dumps(row) + "\n" for row in table.to_pylist())
    return _text_table(table)


def _text_table(table: Any) -> str:
    """Aligned columns with units in the header; times as UTC ``YYYY-MM-DD HH:MM``."""
    import time

    from ..jobstable import units

    unit = units(table)
    times = ("start_time", "end_time", "submit_time")
    header = [f"{c} [{unit[c]}]" if c in unit and c not in times else c for c in table.column_names]
    cells: list[list[str]] = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        out = []
        for v in col.to_pylist():
            if v is None:
                out.append("-")
            elif name in times:
                out.append(time.strftime("%Y-%m-%d %H:%M", time.gmtime(v)))
            elif isinstance(v, float):
                out.append(f"{v:.2f}")
            else:
                out.append(str(v))
        cells.append(out)
    widths = [max([len(h), *map(len, c)]) for h, c in zip(header, cells, strict=True)]
    numeric = [not str(f.type).startswith("string") for f in table.schema]
    lines = []
    for row in [header, *zip(*cells, strict=True)] if cells else [header]:
        lines.append(" ".join(v.rjust(w) if num else v.ljust(w)
                              for v, w, num in zip(row, widths, numeric, strict=True)).rstrip())
    lines.append(f"{table.num_rows} jobs")
    return "\n".join(lines) + "\n"


def _write(path: str, payload: str | bytes) -> None:
    from ..errors import InputError

    data = payload.encode() if isinstance(payload, str) else payload
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise InputError(f"-o {path}: cannot write: {e.strerror or e}") from None
