"""``python -m bench``: run the benchmark modules, print one table and the spec §8 budgets.

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
import time
from typing import Any

import numba

MODULES = ("memory", "kernels", "encode", "decode", "sources", "e2e", "service", "reads")

#: spec §8, statistics kernels
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


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("group", "case", "impl", "time (best)", "throughput", "vs baseline", "of mem. bw", "note")
    lines = []
    for r in rows:
        lines.append(
            (
                r["group"],
                r["case"],
                r["impl"],
                _fmt_seconds(r["seconds"]),
                f"{r['throughput']:.2f} {r['unit']}",
                f"{r['vs_baseline']:.2f}x" if "vs_baseline" in r and math.isfinite(r["vs_baseline"]) else "",
                f"{100 * r['vs_bandwidth']:.0f} %" if "vs_bandwidth" in r else "",
                r.get("note", ""),
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    right = {3, 4, 5, 6}

    def fmt(cells) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])]
    previous = None
    for r, line in zip(rows, lines, strict=True):
        if previous is not None and r["group"] != previous:
            out.append("")
        previous = r["group"]
        out.append(fmt(line))
    return "\n".join(out)


def _statistics_budgets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spec §8 budgets of series_stats, judged on the rows of bench.kernels."""
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


def _budget_table(budgets: list[dict[str, Any]]) -> str:
    if not budgets:
        return "(no budget rows)"
    w_budget = max(len(b["budget"]) for b in budgets)
    w_case = max(len(b["case"]) for b in budgets)
    lines = []
    for b in budgets:
        verdict = "PASS" if b["pass"] else "FAIL"
        lines.append(f"{verdict}  {b['budget'].ljust(w_budget)}  {b['case'].ljust(w_case)}  {b['figure']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller arrays and fewer repeats")
    parser.add_argument("--json", metavar="FILE", help="also write machine info, rows and budgets as JSON")
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

    print()
    print(_table(rows))
    budgets = _statistics_budgets(rows) + _row_budgets(rows)
    print()
    print("Budgets (spec §8)")
    print(_budget_table(budgets))

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
            json.dump({"machine": machine, "rows": rows, "budgets": budgets, "shapes": shapes}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
