"""Structured logging: plain ``key=value`` lines or one JSON object per line.

Records may carry ``job_id``, ``cluster`` and ``start_time`` (pass ``extra=job_fields(job)``) so
operators can grep or ship them; the formatters append whatever of these is present.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

JOB_FIELDS = ("db_id", "job_id", "cluster", "start_time")


def job_fields(job: Any) -> dict[str, Any]:
    """``extra=`` for a log call about a job."""
    return {"db_id": getattr(job, "id", None), "job_id": job.job_id, "cluster": job.cluster,
            "start_time": job.start_time}


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        line = f"{ts} {record.levelname.lower():7s} {record.name}: {record.getMessage()}"
        extras = [f"{k}={getattr(record, k)}" for k in JOB_FIELDS if getattr(record, k, None) is not None]
        if extras:
            line += " [" + " ".join(extras) + "]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k in JOB_FIELDS:
            v = getattr(record, k, None)
            if v is not None:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(verbosity: int = 0, fmt: str = "plain") -> None:
    """Configure the ``ccarchive`` logger once (stderr); warnings by default, -v info, -vv debug."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger("ccarchive")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root.addHandler(handler)
    root.propagate = False


def format_span(seconds: float) -> str:
    """A duration for a log line: ``0.4 s``, ``42 s``, ``5 min``, ``7 min 12 s``, ``3 h 5 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        big, small, units = whole // 60, whole % 60, ("min", "s")
    else:
        big, small, units = whole // 3600, whole % 3600 // 60, ("h", "min")
    return f"{big} {units[0]} {small} {units[1]}" if small else f"{big} {units[0]}"


def _failures(n: int) -> str:
    return "1 failure" if n == 1 else f"{n} failures"


class Outage:
    """The log lines of a retry loop against something that is down, without the flood.

    A reconnect loop retrying every 2 s would log 1,800 warnings an hour. Instead: the first failure
    is logged, then at most one line per ``every`` seconds while the failures go on (how many since
    the previous line, and the last error), and one line on recovery with the outage's
    duration, at the same level so that whoever saw the outage sees its end. ``failures`` counts
    every failure reported, for a metric. Call it from one thread (the retry loop's).
    """

    def __init__(self, logger: logging.Logger, what: str, *, note: str = "", every: float = 300.0,
                 level: int = logging.WARNING, clock: Callable[[], float] = time.monotonic) -> None:
        """``what`` starts every line (e.g. ``NATS nats://host:4222``); ``note`` ends the first line of
        an outage (what it means for the user); ``clock`` is injectable for tests."""
        self.logger, self.what, self.note, self.every, self.level, self.clock = logger, what, note, every, level, clock
        self.failures = 0
        self._since: float | None = None  # start of the current outage
        self._in_outage = 0  # failures of the current outage
        self._last_line = 0.0
        self._unreported = 0  # failures since the last line
        self._last_error = ""

    @property
    def down(self) -> bool:
        """True between the first failure and the recovery."""
        return self._since is not None

    def failed(self, error: str) -> None:
        """One more failed attempt (or the loss of the connection); ``error`` says why."""
        now = self.clock()
        self.failures += 1
        self._last_error = error
        if self._since is None:
            self._since, self._last_line, self._in_outage, self._unreported = now, now, 1, 0
            note = f"; {self.note}" if self.note else ""
            self.logger.log(self.level, "%s: %s; retrying (failures are summarised every %s)%s",
                            self.what, error, format_span(self.every), note)
            return
        self._in_outage += 1
        self._unreported += 1
        if now - self._last_line >= self.every:
            self.logger.log(self.level, "%s: still down after %s, %s since the last report; last error: %s",
                            self.what, format_span(now - self._since), _failures(self._unreported), error)
            self._last_line, self._unreported = now, 0

    def recovered(self) -> None:
        """The connection works again: one line with the outage's duration (nothing if there was none)."""
        if self._since is None:
            return
        self.logger.log(self.level, "%s: recovered after %s down (%s; last error: %s)", self.what,
                        format_span(self.clock() - self._since), _failures(self._in_outage), self._last_error)
        self._since = None
