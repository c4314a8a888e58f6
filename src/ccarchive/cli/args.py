"""Argument helpers shared by the commands: times on the command line, opening the archive a
user named (every failure one line naming the URL)."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from .. import times

TIME_HELP = "Unix seconds or ISO 8601 (e.g. 2026-03-01 or 2026-03-01T12:00:00+01:00; no offset = UTC)"


def add_job_filters(p: argparse.ArgumentParser) -> None:
    """``--cluster --user --since --until --state``: the job filters of ``ls`` and ``jobs``
    (a half-open window on the start time)."""
    p.add_argument("--cluster", help="only jobs of this cluster")
    p.add_argument("--user", help="only jobs of this user")
    p.add_argument("--since", type=parse_time, metavar="TIME",
                   help=f"only jobs that started at or after TIME; {TIME_HELP}")
    p.add_argument("--until", type=parse_time, metavar="TIME", help="only jobs that started before TIME")
    p.add_argument("--state", help="only jobs in this state (completed, failed, timeout, ...)")


def parse_time(text: str) -> int:
    """A point in time for the command line: Unix seconds or ISO 8601 (UTC unless an offset is given)."""
    try:
        return times.parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def iso_time(epoch: int) -> str:
    """Unix seconds as ISO 8601 in UTC: ``2026-03-01T12:00:00Z``."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Modules whose exceptions mean "this storage location cannot be used" (matched by name, so
#: none of them needs importing): unknown credentials, an unreachable endpoint, a bad URL.
_STORAGE_LIBRARIES = ("fsspec", "s3fs", "botocore", "aiobotocore", "aiohttp")


def open_archive_arg(url: str, *, create: bool = False, storage_options: dict[str, Any] | None = None) -> Any:
    """``open_archive`` for a URL from the command line: what the storage libraries raise for a
    bad location (unknown protocol, a file where a directory belongs, missing S3 credentials)
    becomes one :class:`~ccarchive.errors.InputError` naming the URL."""
    from ..archive import open_archive
    from ..errors import CcArchiveError, InputError
    from .main import UsageError

    if not url.strip():
        raise UsageError("the archive URL is empty")
    try:
        return open_archive(url, create=create, storage_options=storage_options)
    except (CcArchiveError, ImportError):
        raise  # ImportError: the error boundary names the package to install
    except OSError as e:
        raise InputError(f"{url}: cannot open the archive: {e.strerror or e}") from None
    except ValueError as e:  # fsspec: "Protocol not known: ..."
        raise InputError(f"{url}: not an archive URL: {e}") from None
    except Exception as e:
        if type(e).__module__.split(".")[0] in _STORAGE_LIBRARIES:
            raise InputError(f"{url}: cannot open the archive: {type(e).__name__}: {e}") from None
        raise


def check_cluster_arg(archive: Any, cluster: str | None, url: str) -> None:
    """``--cluster C`` must name a cluster of the archive (a typo would look like an empty archive)."""
    from ..errors import ClusterConfigError

    if cluster is not None and cluster not in (known := archive.clusters()):
        raise ClusterConfigError(f"{url}: unknown cluster {cluster!r} (clusters: {', '.join(known) or 'none'})")
