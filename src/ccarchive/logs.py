"""Structured logging: logfmt lines or one JSON object per line; progress on stderr.

Records may carry ``job_id``, ``cluster`` and ``start_time`` (pass ``extra=job_fields(job)``) so
operators can grep or ship them; the formatters append whatever of these is present.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any

JOB_FIELDS = ("db_id", "job_id", "cluster", "start_time")


def job_fields(job: Any) -> dict[str, Any]:
    """``extra=`` for a log call about a job."""
    return {"db_id": getattr(job, "id", None), "job_id": job.job_id, "cluster": job.cluster,
            "start_time": job.start_time}


def rfc3339(epoch: float) -> str:
    """``2026-12-05T21:30:31.123Z``: UTC, milliseconds, the zone spelt out, as log shippers parse it."""
    whole = int(epoch // 1)
    millis = min(999, int((epoch - whole) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


_BARE = re.compile(r"[^\s\"=\\]+")


def logfmt_value(value: Any) -> str:
    """One logfmt value: bare when it can be, else double-quoted with ``\\``, ``"`` and line
    breaks escaped, so a record is always one line."""
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class PlainFormatter(logging.Formatter):
    """logfmt: ``ts=2026-12-05T21:30:31.123Z level=info logger=ccarchive.service msg="archived job"
    db_id=7 job_id=398764``; a traceback is the ``exc`` field (line breaks escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: list[tuple[str, Any]] = [("ts", rfc3339(record.created)), ("level", record.levelname.lower()),
                                         ("logger", record.name), ("msg", record.getMessage())]
        fields += [(k, v) for k in JOB_FIELDS if (v := getattr(record, k, None)) is not None]
        if record.exc_info:
            fields.append(("exc", self.formatException(record.exc_info)))
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same fields (``ts`` the same RFC 3339 string)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": rfc3339(record.created),
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


class LineProgress:
    """Progress for a stderr that is not a terminal (a log file, journald, CI): instead of a bar's
    ``\\r`` redraws, a plain line every tenth of the work or every ``every`` seconds, whichever
    comes first, and one at the end. The calls are tqdm's that the commands use."""

    def __init__(self, total: int = 0, desc: str = "", initial: int = 0, file: Any = None,
                 every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.n, self.every, self.clock = total, desc, initial, every, clock
        self.file = file if file is not None else sys.stderr
        self._t0 = self._last_time = clock()
        self._last_n = initial
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        step = max(1, -(-self.total // 10))  # a tenth of the total, rounded up
        if self.n // step > self._last_n // step or self.clock() - self._last_time >= self.every:
            self._line()

    def refresh(self) -> None:
        """tqdm's redraw after ``total`` changed: nothing to redraw in a log."""

    def close(self) -> None:
        if not self._closed and self.n != self._last_n:
            self._line()
        self._closed = True

    def _line(self) -> None:
        now = self.clock()
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        print(f"{self.desc}: {self.n}{of} jobs{pct}, {format_span(now - self._t0)}", file=self.file, flush=True)
        self._last_time, self._last_n = now, self.n


def progress(total: int = 0, desc: str = "", *, enabled: bool = True, initial: int = 0, leave: bool = True,
             file: Any = None) -> Any:
    """A progress display on stderr (or ``file``): a tqdm bar on a terminal, :class:`LineProgress`
    lines otherwise, nothing when not ``enabled``; every command's progress comes from here."""
    from tqdm import tqdm

    out = file if file is not None else sys.stderr
    if not enabled:
        return tqdm(total=total, disable=True)
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit="job", leave=leave, file=out, dynamic_ncols=True)
    return LineProgress(total, desc, initial, out)


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
