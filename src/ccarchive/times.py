"""Points in time as users write them: Unix seconds or ISO 8601.

Shared by the command line (``--from``, ``--since``, ...) and the library (``jobs_table(since=...)``),
so both accept the same spellings and neither imports the other.
"""

from __future__ import annotations

from datetime import datetime, timezone


def parse_time(text: str) -> int:
    """Unix seconds of ``text``: an integer of seconds, or ISO 8601 (UTC unless an offset is given).
    A ValueError names the text when it is neither."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp())
