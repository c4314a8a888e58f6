"""``python -m bench``: run the benchmark modules, print one table and the budgets.

Why one command: the budgets compare implementations against each other and against the machine
(memory bandwidth), so every figure must come from the same run on the same machine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import textwrap
import time
from typing import Any

import numba

MODULES = ("memory", "kernels", "encode", "decode", "sources", "e2e", "service", "reads")

#: budgets of the statistics kernels
BANDWIDTH_SHARE = 0.60
NUMPY_SPEEDUP = 10.0


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "numba": numba.__version__,
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "platform": platform.platform(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


#: The table fits a terminal of this many columns; a note that does not fit is listed below it.
WIDTH = 120
#: Longest implementation label shown (the full text is in ``--json``).
LABEL_MAX = 40


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _figure(r: dict[str, Any]) -> str:
    if "figure" in r:  # the row's own wording (also the figure of its budget)
        return str(r["figure"])
    value = r["throughput"]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    digits = 0 if abs(value) >= 1000 else 1 if abs(value) >= 100 else 2
    return f"{value:,.{digits}f} {r['unit']}"


def _table(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The result table (at most WIDTH columns: a heading line per group and case, then a line per
    implementation) and the notes too long for its last column."""
    header = ("impl", "time", "figure", "vs base", "% bw", "note")
    lines = []
    for r in rows:
        seconds = r["seconds"]
        lines.append([
            "  " + _fit(r["impl"], LABEL_MAX),
            _fmt_seconds(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else "-",
            _figure(r),
            f"{r['vs_baseline']:.2f}x" if "vs_baseline" in r and math.isfinite(r["vs_baseline"]) else "",
            f"{100 * r['vs_bandwidth']:.0f} %" if "vs_bandwidth" in r else "",
            r.get("note", ""),
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    room = max(12, WIDTH - sum(widths[:-1]) - 2 * (len(header) - 1))
    notes: list[str] = []
    for r, line in zip(rows, lines, strict=True):
        if len(line[-1]) > room:
            notes.append(f"[{len(notes) + 1}] {r['impl']}: {line[-1]}")
            line[-1] = f"[{len(notes)}]"
    widths[-1] = min(room, max(len(header[-1]), *(len(line[-1]) for line in lines)) if lines else room)
    right = {1, 2, 3, 4}

    def fmt(cells: list[str] | tuple[str, ...]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])]
    previous = None
    for r, line in zip(rows, lines, strict=True):
        heading = (r["group"], r["case"])
        if heading != previous:
            if previous is not None and r["group"] != previous[0]:
                out.append("")
            out.append(_fit(f"{r['group']}: {r['case']}", WIDTH))
            previous = heading
        out.append(fmt(line))
    return "\n".join(out), notes


def _wrapped(items: list[str], indent: str = "    ") -> str:
    """Lines wrapped at WIDTH, continuation lines indented."""
    return "\n".join(textwrap.fill(item, WIDTH, subsequent_indent=indent, break_on_hyphens=False)
                     for item in items)


def _statistics_budgets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The budgets of series_stats, judged on the rows of bench.kernels."""
    stats = [r for r in rows if r["group"] == "statistics"]
    memory = {r.get("threads"): r["throughput"] for r in rows if r["group"] == "memory"}
    budgets = []
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for r in stats:
        by_case.setdefault(r["case"], {})[r["impl"]] = r
    for case, impls in by_case.items():
        ours = impls.get("ccarchive series_stats")
        if ours is None:
            continue
        if ours.get("kind") == "bandwidth-bound" and "vs_bandwidth" in ours:
            share = ours["vs_bandwidth"]
            budgets.append(
                {
                    "budget": f"statistics >= {BANDWIDTH_SHARE:.0%} of memory bandwidth",
                    "case": case,
                    "figure": (
                        f"{ours['throughput']:.1f} GB/s = {share:.0%} of {ours['throughput'] / share:.1f} GB/s "
                        f"read bandwidth, all threads (1 thread: {memory.get(1, math.nan):.1f} GB/s)"
                    ),
                    "pass": share >= BANDWIDTH_SHARE,
                }
            )
        base = next((r for name, r in impls.items() if name.startswith("numpy")), None)
        if base is not None:
            speedup = base["seconds"] / ours["seconds"]
            budgets.append(
                {
                    "budget": f"statistics >= {NUMPY_SPEEDUP:.0f}x numpy nan-functions",
                    "case": case,
                    "figure": f"{speedup:.1f}x",
                    "pass": speedup >= NUMPY_SPEEDUP,
                }
            )
        for rival in ("bottleneck", "numbagg"):
            other = impls.get(rival)
            if other is None:
                continue
            ratio = other["seconds"] / ours["seconds"]
            budgets.append(
                {
                    "budget": f"statistics faster than {rival}",
                    "case": case,
                    "figure": f"{ratio:.2f}x faster",
                    "pass": ratio > 1.0,
                }
            )
    return budgets


def _row_budgets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Budgets that other modules check themselves (rows carrying ``budget`` and ``pass``)."""
    return [
        {
            "budget": r["budget"],
            "case": f"{r['group']}: {r['case']} / {r['impl']}",
            "figure": r.get("figure", f"{r['throughput']:.1f} {r['unit']}"),
            "pass": bool(r["pass"]),
        }
        for r in rows
        if "budget" in r and "pass" in r
    ]


def _budget_table(budgets: list[dict[str, Any]], judged: bool) -> str:
    """One line per budget: verdict (full runs only), budget, figure; the case below when it
    does not fit beside them."""
    if not budgets:
        return "(no budget rows)"
    w_budget = min(56, max(len(b["budget"]) for b in budgets))
    lines = []
    for b in budgets:
        verdict = ("PASS" if b["pass"] else "FAIL") if judged else "-"
        head = f"{verdict:4}  {b['budget'].ljust(w_budget)}  {b['figure']}"
        case = f"({b['case']})"
        if len(head) + 2 + len(case) <= WIDTH:
            lines.append(f"{head}  {case}")
        else:
            lines.append(_wrapped([head], " " * 6))
            lines.append(_wrapped([" " * 6 + case], " " * 6))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller arrays and fewer repeats; figures only, budgets not judged")
    parser.add_argument("--json", metavar="FILE",
                        help="also write machine info, rows (with their full notes) and budgets as JSON")
    parser.add_argument("--only", choices=MODULES, action="append", help="run only this module (repeatable)")
    parser.add_argument("--shapes", help="end-to-end shapes, comma-separated (default: S1,S2,S2-128,S3,S4)")
    args = parser.parse_args(argv)

    machine = _machine()
    print(
        f"ccarchive bench ({'quick' if args.quick else 'full'}): {machine['cpu_count']} CPUs, "
        f"{machine['numba_threads']} numba threads, Python {machine['python']}, numba {machine['numba']}"
    )
    load = machine["load_average"]
    if load and max(load[:2]) > 0.5:
        print(f"note: load average {load[0]:.2f} / {load[1]:.2f} (1 / 5 min) before the run; figures may be noisy")

    rows: list[dict[str, Any]] = []
    for name in args.only or MODULES:
        module_name = f"bench.{name}"
        if importlib.util.find_spec(module_name) is None:
            print(f"({module_name} not present, skipped)")
            continue
        start = time.perf_counter()
        module = importlib.import_module(module_name)
        if name == "e2e":
            rows += module.run(args.quick, args.shapes.split(",") if args.shapes else None)
        else:
            rows += module.run(args.quick)
        print(f"{module_name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)

    table, notes = _table(rows)
    print()
    print(table)
    if notes:
        print()
        print("Notes")
        print(_wrapped(notes))
    budgets = _statistics_budgets(rows) + _row_budgets(rows)
    print()
    if args.quick:
        # quick sizes are too small for the budgets (fixed costs dominate): figures only
        print("Budgets (judged on full runs only; --quick shows the figures)")
        for b in budgets:
            b["pass"] = None
    else:
        print("Budgets")
    print(_budget_table(budgets, judged=not args.quick))

    if args.json:
        with open(args.json, "w") as f:
            shapes = {}
            e2e = sys.modules.get("bench.e2e")
            for name, r in (getattr(e2e, "RESULTS", {}) or {}).items():
                shapes[name] = {k: r[k] for k in (
                    "total_s", "baseline_total_s", "archive_s", "baseline_archive_s", "speedup", "speedup_incl_load",
                    "bytes_out", "json_bytes", "raw_array_bytes", "gzip_ratio_vs_zlib6", "gzip_level", "gzip_threads",
                    "idle_rss_bytes", "peak_rss_bytes", "jobs_per_s", "identical") if k in r}
                shapes[name]["phases_s"] = r.get("phases", {})
            json.dump({"machine": machine, "quick": args.quick, "rows": rows, "budgets": budgets, "shapes": shapes},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
