"""What the remote metric sources share: a small HTTP client, a bounded thread pool, the job's time
grid and the request-timeout rule.

Why not ``requests``/``httpx``: the sources send a handful of GET requests per metric to one
server; ``http.client`` with a small keep-alive pool does that without a new dependency, and it
lets us enforce a *total* deadline per request (a socket timeout alone restarts on every byte, so a
server trickling its answer would never time out).

Error policy (what the pipeline retries): an unreachable server, a timeout, HTTP 429 and 5xx are
:class:`TransientError`; any other non-200 answer is :class:`HttpStatusError` (the caller decides:
a bad query is a configuration error, not something to retry).

The time grid: every source places samples on ``start + k * timestep`` for
``k = 0 .. duration // timestep`` (the synthetic source's grid), so series of all hosts line up
and a missing sample is a NaN at its place, never a shift.
"""

from __future__ import annotations

import http.client
import os
import queue
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ..errors import CcArchiveError, InputError, TransientError

T = TypeVar("T")
R = TypeVar("R")

#: Read the body in pieces of this size and check the deadline in between.
_READ_CHUNK = 1 << 18


class HttpStatusError(CcArchiveError):
    """A non-retryable HTTP status (4xx other than 429); ``status`` and ``body`` are kept."""

    reason = "http-status"

    def __init__(self, message: str, status: int, body: bytes) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class TimeoutPolicy:
    """Per-request timeout sized by the work asked for: ``base_s`` plus ``per_million_s`` per
    million samples (series x samples), at most ``max_s``."""

    base_s: float = 10.0
    per_million_s: float = 10.0
    max_s: float = 600.0

    def for_points(self, points: int) -> float:
        return min(self.max_s, self.base_s + self.per_million_s * points / 1e6)

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> TimeoutPolicy:
        """From a source spec: ``timeout-s``, ``timeout-per-million-points-s``, ``max-timeout-s``."""
        def num(key: str, default: float) -> float:
            v = options.get(key, default)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise InputError(f"metric source option {key!r} must be a positive number, got {v!r}")
            return float(v)

        base = num("timeout-s", cls.base_s)
        return cls(base, num("timeout-per-million-points-s", cls.per_million_s),
                   max(base, num("max-timeout-s", cls.max_s)))


class HttpClient:
    """Keep-alive connections to one base URL, safe to use from several threads."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str] | None = None, pool_size: int = 4) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError(f"metric source url must be http(s)://host[:port][/path], got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port
        self._prefix = parsed.path.rstrip("/")
        self._headers = dict(headers or {})
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(maxsize=max(1, pool_size))

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        try:
            conn = self._idle.get_nowait()
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn
        except queue.Empty:
            pass
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float = 10.0, what: str = "request") -> bytes:
        """Send one request and return the body of a 200 answer.

        ``what`` names the request in error messages (job, metric, hosts).  Raises
        :class:`TransientError` (unreachable, timeout, 429, 5xx) or :class:`HttpStatusError`.
        """
        target = self._prefix + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        hdrs = {**self._headers, **(headers or {})}
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        deadline = time.monotonic() + timeout
        url = self.base_url + path
        for attempt in (1, 2):
            conn = self._connect(timeout)
            reused = conn.sock is not None
            try:
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = _read_body(resp, deadline)
            except TimeoutError as e:
                conn.close()
                raise TransientError(f"{what}: {url} did not answer within {timeout:.0f} s ({e})",
                                     reason="source-timeout") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                conn.close()
                if reused and attempt == 1:
                    continue  # a kept-alive connection the server had closed: one fresh try
                raise TransientError(f"{what}: {url}: connection lost ({e})", reason="source-unreachable") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransientError(f"{what}: {url} unreachable ({e})", reason="source-unreachable") from None
            if resp.will_close:
                conn.close()
            else:
                self._release(conn)
            if resp.status == 200:
                return data
            snippet = " ".join(data[:300].decode("utf-8", "replace").split())  # one line, text or JSON
            if resp.status == 429 or resp.status >= 500:
                raise TransientError(f"{what}: {url} answered HTTP {resp.status}: {snippet}",
                                     reason="source-unavailable")
            raise HttpStatusError(f"{what}: {url} answered HTTP {resp.status}: {snippet}", resp.status, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _read_body(resp: http.client.HTTPResponse, deadline: float) -> bytes:
    parts: list[bytes] = []
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("total request time exceeded")
        chunk = resp.read(_READ_CHUNK)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def run_bounded(fn: Callable[[T], R], items: Iterable[T], max_workers: int) -> list[R]:
    """``[fn(x) for x in items]`` on at most ``max_workers`` threads, results in input order.

    The first exception cancels the requests not yet started and is raised (a failed job stops
    asking the store)."""
    work = list(items)
    if max_workers <= 1 or len(work) <= 1:
        return [fn(x) for x in work]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(work)), thread_name_prefix="ccarchive-src") as ex:
        futures = [ex.submit(fn, x) for x in work]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and f.exception() is not None:
                for p in pending:
                    p.cancel()
                raise f.exception()  # type: ignore[misc]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class JobGrid:
    """The sample times of a job: ``start + k * step`` for ``k`` in ``range(n)``."""

    start: int
    step: int
    n: int

    @classmethod
    def for_job(cls, start_time: int, duration: int, timestep: int) -> JobGrid:
        step = max(1, int(timestep))
        return cls(int(start_time), step, max(1, int(duration) // step + 1))

    @property
    def end(self) -> int:
        """Time of the last grid point (inclusive)."""
        return self.start + (self.n - 1) * self.step

    def windows(self, max_samples: int) -> list[tuple[int, int]]:
        """Split ``range(n)`` into consecutive, non-overlapping index ranges ``[k0, k1)`` of at
        most ``max_samples`` points."""
        size = max(1, int(max_samples))
        return [(k, min(self.n, k + size)) for k in range(0, self.n, size)]

    def indices(self, times: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Nearest grid index of each time (may lie outside ``[0, n)``)."""
        return np.floor((np.asarray(times, dtype=np.float64) - self.start) / self.step + 0.5).astype(np.int64)


def place(row: npt.NDArray[np.float64], grid: JobGrid, times: npt.NDArray[np.float64],
          values: npt.NDArray[np.float64], lo: int = 0, hi: int | None = None) -> int:
    """Write ``values`` into ``row`` at the grid index of their ``times``; samples outside the
    index range ``[lo, hi)`` are dropped, of two samples on one index the first is kept.
    Returns how many samples were placed."""
    hi = grid.n if hi is None else hi
    idx = grid.indices(times)
    ok = (idx >= lo) & (idx < hi)
    idx, vals = idx[ok], np.asarray(values, dtype=np.float64)[ok]
    if len(idx) > 1 and np.any(np.diff(idx) <= 0):
        idx, first = np.unique(idx, return_index=True)
        vals = vals[first]
    row[idx] = vals
    return len(idx)


def check_http_spec(spec: dict[str, Any], known: set[str], what: str) -> tuple[str, str]:
    """Validate an HTTP source spec: no unknown keys, a ``url``; returns (url, bearer token from
    ``token`` or the environment variable named by ``token-env``)."""
    unknown = sorted(set(spec) - known)
    if unknown:
        raise InputError(f"{what} source: unknown option(s) {', '.join(unknown)}")
    url = spec.get("url")
    if not isinstance(url, str) or not url:
        raise InputError(f"{what} source needs \"url\"")
    token = spec.get("token") or ""
    env = spec.get("token-env")
    if env:
        if env not in os.environ:
            raise InputError(f"{what} source: environment variable {env!r} (token-env) is not set")
        token = os.environ[env]
    return url, str(token)


def pack_requests(
    requests: list[Any], n_steps: int, max_points: int, max_window: int | None = None
) -> tuple[int, list[list[Any]]]:
    """Split a fetch so no request exceeds ``max_points`` samples: returns the time-window length
    (in grid steps) and the host groups (each a list of SeriesRequest) to combine with every window."""
    widest = max((len(r.ids) if r.ids is not None else 1 for r in requests), default=1)
    window = max(1, min(n_steps, max_points // max(1, widest)))
    if max_window is not None:
        window = min(window, max_window)
    per_group = max(1, max_points // window)
    groups: list[list[Any]] = []
    size = 0
    for r in requests:
        s = len(r.ids) if r.ids is not None else 1
        if not groups or size + s > per_group:
            groups.append([])
            size = 0
        groups[-1].append(r)
        size += s
    return window, groups
