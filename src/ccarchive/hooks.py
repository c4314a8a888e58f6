"""Post-archive hooks, run in the parent after each successful archive.

Three kinds, all receiving the same JSON-able job summary (ids, cluster, statistics, footprint,
energy, archive path): Python callables registered in code, callables from the entry-point group
``ccarchive.hooks``, and a shell command that gets the summary as JSON on stdin.  Hooks run on
their own thread so a slow hook never delays the result handling, and a failing hook is logged —
it never turns a successful archive into a failure.
"""

from __future__ import annotations

import json
import logging
import queue
import shlex
import subprocess
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

Hook = Callable[[dict[str, Any]], Any]
ENTRY_POINT_GROUP = "ccarchive.hooks"


def load_entry_point_hooks() -> list[tuple[str, Hook]]:
    hooks = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            hooks.append((f"entry point {ep.name}", ep.load()))
        except Exception:  # noqa: BLE001 - a broken plugin must not stop archiving
            log.exception("cannot load hook entry point %s", ep.name)
    return hooks


class HookRunner:
    """Runs hooks for archived jobs in submission order on one background thread."""

    def __init__(
        self,
        callables: list[Hook] | None = None,
        *,
        command: str | None = None,
        command_timeout_s: float = 60.0,
        use_entry_points: bool = True,
    ) -> None:
        self.hooks: list[tuple[str, Hook]] = [(getattr(h, "__name__", repr(h)), h) for h in callables or []]
        if use_entry_points:
            self.hooks += load_entry_point_hooks()
        if command:
            self.hooks.append((f"command {command!r}", self._command_hook(command, command_timeout_s)))
        self.failures = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _command_hook(command: str, timeout: float) -> Hook:
        argv = shlex.split(command)

        def run(job: dict[str, Any]) -> None:
            proc = subprocess.run(argv, input=json.dumps(job).encode(), capture_output=True, timeout=timeout)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"exit code {proc.returncode}: {err[-1] if err else ''}")

        return run

    def start(self) -> None:
        if self.hooks and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ccarchive-hooks", daemon=True)
            self._thread.start()

    def submit(self, job: dict[str, Any]) -> None:
        if self.hooks:
            self._queue.put(job)

    def run_hooks(self, job: dict[str, Any]) -> None:
        """Call every hook for one job, logging (not raising) failures."""
        for name, hook in self.hooks:
            try:
                hook(job)
            except Exception as e:  # noqa: BLE001 - hooks never fail an archive
                self.failures += 1
                log.warning("hook %s failed for job %s/%s: %s", name, job.get("cluster"), job.get("jobId"), e)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self.run_hooks(job)

    def stop(self, timeout: float = 10.0) -> None:
        """Run the hooks already submitted, then stop the thread (bounded by ``timeout``)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
