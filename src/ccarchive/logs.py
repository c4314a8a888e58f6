"""Structured logging: plain ``key=value`` lines or one JSON object per line.

Records may carry ``job_id``, ``cluster`` and ``start_time`` (pass ``extra=job_fields(job)``) so
operators can grep or ship them; the formatters append whatever of these is present.
"""

from __future__ import annotations

import json
import logging
import sys
import time
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
