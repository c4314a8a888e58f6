"""When a failure is worth another try, and how long to wait before it.

One policy for the two places that retry: the pipeline re-queues a job whose attempt failed
transiently (it schedules the retry itself, on a timer, with :meth:`RetryPolicy.delay`), and
``ccarchive convert`` repeats a single storage operation in place (:func:`call_with_retries`).
Both ask :func:`is_transient` what counts as transient, so an S3 endpoint that is down, a
timeout or a locked SQLite database is retried the same way everywhere.

Imports nothing from the rest of the package but :mod:`ccarchive.errors`, so any module may use it.
"""

from __future__ import annotations

import errno
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import TransientError

T = TypeVar("T")

log = logging.getLogger("ccarchive.retry")

#: botocore / aiohttp exception classes (by name, so neither needs importing) that mean
#: "the endpoint is unreachable or the connection broke": worth a retry.
_TRANSIENT_CLASSES = {
    ("botocore.exceptions", "ConnectionError"),       # EndpointConnectionError, ConnectTimeoutError, ...
    ("botocore.exceptions", "HTTPClientError"),       # ConnectionClosedError, ReadTimeoutError, ...
    ("botocore.exceptions", "IncompleteReadError"),
    ("aiohttp.client_exceptions", "ClientConnectionError"),  # ServerDisconnectedError, ClientOSError, ...
    ("aiohttp.client_exceptions", "ServerTimeoutError"),
}
#: errno values s3fs gives HTTP 500/503 answers (InternalError, SlowDown) and socket failures.
_TRANSIENT_ERRNOS = {errno.EBUSY, getattr(errno, "EREMOTEIO", 121), errno.ETIMEDOUT, errno.ECONNREFUSED,
                     errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


def is_transient_backend_error(exc: BaseException) -> bool:
    """True for storage failures that may go away on retry (S3 endpoint down, timeouts, 5xx).

    Looks at the exception and its ``__cause__`` chain; classes are matched by
    module and name so botocore and aiohttp need not be installed."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (TimeoutError, ConnectionError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        for cls in type(e).__mro__:
            if (cls.__module__, cls.__name__) in _TRANSIENT_CLASSES:
                return True
        e = e.__cause__
    return False


def is_transient(exc: BaseException) -> bool:
    """True when trying again later may succeed: ccarchive's :class:`~ccarchive.errors.TransientError`
    (metric store or archive unreachable), a locked SQLite database, or a storage failure of
    :func:`is_transient_backend_error`.  Anything else fails the same way every time."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return True
    return is_transient_backend_error(exc)


@dataclass
class RetryPolicy:
    """Exponential backoff: the wait after failed attempt ``n`` (1, 2, ...) is ``base_s * 2**(n-1)``,
    at most ``cap_s``; with ``jitter`` (the default) a uniform draw from 0 to that, so workers that
    failed together (an S3 outage) do not all come back at the same moment.  ``max_attempts``
    counts the first try."""

    max_attempts: int = 4
    base_s: float = 2.0
    cap_s: float = 300.0
    jitter: bool = True

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))
        return random.uniform(0, ceiling) if self.jitter else ceiling

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Another try after failed attempt ``attempt`` (1-based): transient and attempts left."""
        return attempt < self.max_attempts and is_transient(exc)


def call_with_retries(fn: Callable[[], T], what: str, policy: RetryPolicy, *,
                      logger: logging.Logger | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, called again after :meth:`RetryPolicy.delay` while it fails transiently and
    attempts are left; the last failure (or the first permanent one) is raised.  Each retry is
    logged as a warning naming ``what`` (on ``logger``, so it shows under the caller's name)."""
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as e:
            if not policy.should_retry(e, attempt):
                raise
            delay = policy.delay(attempt)
            (logger or log).warning("%s: transient failure (%s: %s), retrying in %.1f s",
                                    what, type(e).__name__, e, delay)
            sleep(delay)
            attempt += 1
