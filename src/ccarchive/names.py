"""What a cluster name, job id and start time may be, checked wherever they become storage locations.

A job's key ``(cluster, jobId, startTime)`` is turned into directories of the v3 tree
(``<cluster>/<jobId // 1000>/<jobId % 1000>/<startTime>``), object keys on S3, ``cluster=`` and
``start_month=`` partition directories and file names of the Parquet dataset, and rows of the
SQLite archive.  The values come from outside: meta.json files, job DB rows, command lines.  So
every backend checks them here, on reads as well as writes, and a name like ``../../x`` or
``/etc`` can never address anything outside the archive.

A cluster name must

* be a non-empty string of at most 128 characters, and at most 240 bytes once URL-encoded (ASCII
  letters, digits and ``._-~`` count one byte each, every other character three per UTF-8 byte),
  so it fits a file name in a Parquet partition directory (``cluster=<name>``) on any file system;
* not be ``.`` or ``..``, and contain no ``/`` or ``\\`` (path separators);
* contain no control character (C0, DEL, C1) or other invisible or non-printable character;
* not start or end with whitespace, and not start with ``.`` (a hidden directory, which the
  archive does not list as a cluster);
* contain none of ``* ? [ ]`` (wildcards when the archive lists a cluster's jobs) nor ``=`` and
  ``%`` (the separator and the escape character of partition directory names).

Real names like ``fritz``, ``woody-ng``, ``cluster_1`` or ``Test.Cluster`` pass.  A job id and a
start time must be integers (not booleans) from 0 to 2**63 - 1, the range of the job DB columns.
Violations raise :class:`~ccarchive.errors.InputError` (reason ``bad-input``) with one line naming
the value and the rule.
"""

from __future__ import annotations

import numbers
import unicodedata
import urllib.parse
from typing import Any

from .errors import InputError

JobKey = tuple[str, int, int]

MAX_CLUSTER_NAME_CHARS = 128
#: URL-encoded bytes: ``cluster=`` plus the name must fit the usual 255-byte file name limit
MAX_CLUSTER_NAME_ENCODED_BYTES = 240
MAX_KEY_INT = 2**63 - 1
#: characters refused anywhere in a name, with the reason shown to the user
_FORBIDDEN = {
    "/": "a path separator",
    "\\": "a path separator",
    "*": "a wildcard in archive listings",
    "?": "a wildcard in archive listings",
    "[": "a wildcard in archive listings",
    "]": "a wildcard in archive listings",
    "=": "it separates name and value in partition directories",
    "%": "the escape character of partition directories",
}
_SHOWN_CHARS = 60


def shown(value: object) -> str:
    """``repr(value)``, cut short for very long values so an error stays one readable line."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARS:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:_SHOWN_CHARS - 10]}...{text[-6:]}{size}"


def _char_problem(ch: str) -> str | None:
    """Why ``ch`` may not appear in a name, or None."""
    if ch in _FORBIDDEN:
        return _FORBIDDEN[ch]
    if ch.isprintable():
        return None
    kind = "a control character" if unicodedata.category(ch) == "Cc" else "an invisible or non-printable character"
    return f"U+{ord(ch):04X}, {kind}"


def cluster_name_problem(name: object) -> tuple[str, str] | None:
    """``(rule broken, detail)`` when ``name`` is not a valid cluster name, else None."""
    if not isinstance(name, str):
        return f"is not a string but {type(name).__name__}", ""
    if not name:
        return "is empty", ""
    if len(name) > MAX_CLUSTER_NAME_CHARS:
        return "is too long", f"at most {MAX_CLUSTER_NAME_CHARS} characters"
    if name in (".", ".."):
        return "is a relative path component", ""
    for ch in name:
        why = _char_problem(ch)
        if why is not None:
            return f"contains {ch!r}", why
    if name[0].isspace() or name[-1].isspace():
        return "starts or ends with whitespace", ""
    if name.startswith("."):
        return "starts with '.'", "a hidden directory, not listed as a cluster"
    encoded = len(urllib.parse.quote(name, safe=""))
    if encoded > MAX_CLUSTER_NAME_ENCODED_BYTES:
        return f"is {encoded} bytes long URL-encoded", f"at most {MAX_CLUSTER_NAME_ENCODED_BYTES}"
    return None


def check_cluster_name(name: object, what: str = "cluster name") -> str:
    """``name`` when it is a valid cluster name, else :class:`InputError` naming it and the rule."""
    problem = cluster_name_problem(name)
    if problem is not None:
        rule, detail = problem
        why = f"{detail}; cluster names become archive paths" if detail else "cluster names become archive paths"
        raise InputError(f"{what} {shown(name)} {rule} ({why})")
    assert isinstance(name, str)
    return name


def is_cluster_name(name: object) -> bool:
    """True for a valid cluster name (listings skip stored names that are not)."""
    return cluster_name_problem(name) is None


def _key_int_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"is not an integer but {type(value).__name__}"
    if int(value) < 0:
        return "is negative"
    if int(value) > MAX_KEY_INT:
        return "is larger than 2**63 - 1"
    return None


def check_key_int(value: object, what: str) -> int:
    """``value`` as an int when it is a valid job id or start time (``what`` names which)."""
    problem = _key_int_problem(value)
    if problem is not None:
        raise InputError(f"{what} {shown(value)} {problem} (job ids and start times become archive paths)")
    assert isinstance(value, numbers.Integral)
    return int(value)


def check_job_key(key: Any) -> JobKey:
    """``(cluster, jobId, startTime)`` normalised to ``(str, int, int)``, each part checked."""
    if not isinstance(key, tuple) or len(key) != 3:
        raise InputError(f"job key {shown(key)} is not a (cluster, jobId, startTime) triple")
    cluster, job_id, start_time = key
    return (check_cluster_name(cluster), check_key_int(job_id, "job id"), check_key_int(start_time, "start time"))


def is_job_key(key: Any) -> bool:
    """True for a valid ``(cluster, jobId, startTime)`` (listings skip stored keys that are not)."""
    return (isinstance(key, tuple) and len(key) == 3 and is_cluster_name(key[0])
            and _key_int_problem(key[1]) is None and _key_int_problem(key[2]) is None)
