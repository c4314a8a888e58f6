"""Run a batch of jobs through the archiving pipeline with a progress bar and a summary.

Shared by ``demo``, ``archive`` and ``retry``.  SIGTERM and SIGINT take the shutdown path of the
pipeline: stop accepting, wait (bounded), cancel, and leave unfinished jobs pending in the job DB.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: The worker's phases in pipeline order (the order the summary lists them in).
PHASES = ("load", "statistics", "encode", "compress", "write", "db")


@dataclass
class BatchSummary:
    triggered: int = 0
    archived: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    bytes_written: int = 0
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    unfinished: list[int] = field(default_factory=list)
    #: seconds of wall_s before the first job could start (worker start, kernels compiled or loaded)
    warmup_s: float = 0.0
    warmup_note: str = "worker start"

    @property
    def jobs_per_s(self) -> float | None:
        """Throughput after the warm-up: what a running service sustains."""
        busy = self.wall_s - self.warmup_s
        return self.archived / busy if busy > 0 and self.archived else None

    def to_dict(self) -> dict[str, Any]:
        """The summary for ``--json``: counts, bytes, seconds (``phases``: worker seconds per phase)."""
        return {"archived": self.archived, "failed": len(self.failed), "skipped": self.skipped,
                "triggered": self.triggered, "bytes_written": self.bytes_written, "wall_s": round(self.wall_s, 3),
                "warmup_s": round(self.warmup_s, 3),
                "jobs_per_s": round(self.jobs_per_s, 3) if self.jobs_per_s else None,
                "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
                "interrupted": self.interrupted, "left_pending": len(self.unfinished),
                "failures": list(self.failed)}

    def print_json(self, extra: dict[str, Any] | None = None) -> None:
        """One JSON document on stdout; the failures are in it and, as in text mode, on stderr."""
        import json

        print(json.dumps({**self.to_dict(), **(extra or {})}))
        for f in self.failed[:20]:
            print(f"  failed: {f}", file=sys.stderr)

    def print(self, title: str, extra: list[tuple[str, str]] | None = None) -> None:
        rate = f"  ({self.jobs_per_s:.1f} jobs/s)" if self.jobs_per_s else ""
        rows = [
            ("jobs archived", str(self.archived)),
            ("failures", str(len(self.failed))),
            ("skipped (already archived)", str(self.skipped)),
            ("wall time", f"{self.wall_s:.2f} s"),
            ("  warm-up", f"{self.warmup_s:.2f} s  ({self.warmup_note})"),
            ("  archiving", f"{self.wall_s - self.warmup_s:.2f} s{rate}"),
            ("written (gzip + meta.json)", f"{self.bytes_written / 1e6:.1f} MB"),
        ]
        order = {k: i for i, k in enumerate(PHASES)}
        phases = sorted(self.phases.items(), key=lambda kv: order.get(kv[0], len(order)))
        rows += [(f"worker time in {k}", f"{v:.2f} s") for k, v in phases]
        if self.unfinished:
            rows.append(("left pending", f"{len(self.unfinished)} jobs (archived at the next run)"))
        rows += extra or []
        print(f"\n{title}")
        for k, v in rows:
            print(f"  {k:26s} {v}")
        for f in self.failed[:20]:
            print(f"  failed: {f}", file=sys.stderr)


def run_batch(
    config: Any,
    select: Callable[[Any], Iterable[int]],
    *,
    progress: bool = True,
    shutdown_timeout: float = 60.0,
    desc: str = "archiving",
    reconcile_horizon_s: float = 90 * 86400.0,
    force: bool = False,
    retry: Any = None,
) -> BatchSummary:
    """Start an Archiver, trigger the ids ``select(archiver)`` yields, wait, shut down; ``retry``
    (a :class:`~ccarchive.pipeline.RetryPolicy`) paces transient failures (default: the pipeline's)."""
    from ..logs import progress as progress_display
    from ..pipeline import Archiver, ShutdownTimeoutError

    summary = BatchSummary()
    bar = progress_display(0, desc, enabled=progress)

    def on_result(msg: Any) -> None:
        if msg.kind == "done":
            summary.archived += 1
            summary.bytes_written += msg.bytes_written
            for k, v in msg.phases.items():
                summary.phases[k] = summary.phases.get(k, 0.0) + v
            bar.update()
        elif msg.kind == "skipped":
            summary.skipped += 1
            bar.update()
        elif msg.kind == "failed" and not (msg.transient and msg.attempt < archiver.retry.max_attempts):
            summary.failed.append(msg.message)
            bar.update()

    archiver = Archiver(config, on_result=on_result, reconcile_grace_s=0.0, retry=retry,
                        reconcile_horizon_s=reconcile_horizon_s)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        summary.interrupted = True
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    t0 = time.perf_counter()
    try:
        archiver.start()
        summary.warmup_s = time.perf_counter() - t0
        ids = list(select(archiver))
        bar.total = len(ids)
        bar.refresh()
        for db_id in ids:
            if stop.is_set():
                break
            while not stop.is_set():
                from ..pipeline import QueueFullError

                try:
                    summary.triggered += archiver.trigger(db_id, timeout=0.5, force=force)
                    break
                except QueueFullError:
                    continue
        while not stop.is_set() and not archiver.wait_idle(timeout=0.5):
            pass
    finally:
        try:
            archiver.shutdown(timeout=5.0 if stop.is_set() else shutdown_timeout)
        except ShutdownTimeoutError as e:
            summary.unfinished = e.unfinished
        for s, h in old.items():
            signal.signal(s, h)
        bar.close()
        summary.wall_s = time.perf_counter() - t0
    return summary
