"""Stopping the servers the tests start: one signal, then SIGKILL after a bound."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float, *, group: bool = False) -> int | None:
    """Send ``sig`` (to the process group with ``group=True``), SIGKILL if it has not exited after
    ``timeout`` seconds; returns the exit code (None when it could not be reaped)."""
    if proc.poll() is None:
        kill = os.killpg if group else os.kill
        try:
            kill(proc.pid, sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
    return proc.returncode
