"""Exception tree of ccarchive.

Imports nothing from the rest of the package, so every module can use it without import cycles.
Every error carries a short kebab-case ``reason`` (used in logs, metrics labels and the job state
store) and a message meant to be printed as one line to a user.
"""

from __future__ import annotations


class CcArchiveError(Exception):
    """Base class: one clear line for the user, a stable reason code for machines."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class InputError(CcArchiveError):
    """Bad user input: missing file, malformed JSON, inconsistent job description."""

    reason = "bad-input"


class FormatError(CcArchiveError):
    """A file or object does not follow the archive v3 format."""

    reason = "bad-format"


class ArchiveVersionError(FormatError):
    """The archive's version.txt names a version other than 3."""

    reason = "archive-version"


class ConfigError(InputError):
    """The configuration is missing, malformed or inconsistent; the message names the key.

    Here rather than in :mod:`ccarchive.config` so the modules config.py uses (JWT key checks,
    source and storage options) can raise it without importing config.py back."""

    reason = "config"


class ClusterConfigError(CcArchiveError):
    """Unknown cluster or subcluster, or an invalid cluster.json."""

    reason = "cluster-config"


class NoDataError(CcArchiveError):
    """The metric source returned no data at all for a job."""

    reason = "no-data"


class TransientError(CcArchiveError):
    """A failure that may go away on retry (store or backend unreachable, timeout)."""

    reason = "transient"


class CancelledError(CcArchiveError):
    """Archiving was cancelled by a shutdown; the job stays pending."""

    reason = "cancelled"


def describe_error(e: BaseException) -> str:
    """One line for reports that list many failures: ccarchive's own message as it is, any other
    exception as ``TypeName: text`` (a bare "unexpected end of data" says nothing without it)."""
    text = str(e) if isinstance(e, CcArchiveError) else f"{type(e).__name__}: {e}"
    return " ".join(text.splitlines())
