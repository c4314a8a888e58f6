"""``ccarchive serve --probe``: try every dependency of the sidecar once, cheaply, within a bound.

Why: ``--check`` validates the configuration without touching anything outside, so it passes
with the metric store down, NATS unreachable or the hook command missing.  ``--probe`` asks each
one a question that costs it nothing, so a deployment check (or an operator) learns before the
start whether the sidecar would work:

* cc-metric-store: ``GET /api/query`` with an empty query list (the store has no health
  endpoint; this answers ``{"results": []}``, and a bad token gets HTTP 401);
* Prometheus: ``GET /api/v1/status/buildinfo``;
* replay source: open the archive it replays; synthetic and Python sources: nothing to ask;
* NATS: connect (with the configured user, password or credentials file) and close;
* archive: read ``version.txt``, then write and delete a hidden temporary object (SQLite
  archives: insert a row and roll the transaction back);
* job DB: open it, check its schema and count its jobs;
* hook command: its first word must be an executable (``shutil.which``).

Every probe runs in a thread of its own and is given at most :data:`PROBE_TIMEOUT_S` seconds, so
a store that accepts connections but never answers cannot hang the check.
"""

from __future__ import annotations

import json
import shlex
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import mask_url_passwords
from ..errors import CcArchiveError, describe_error

if TYPE_CHECKING:
    from ..config import NatsSettings, ServiceConfig

#: Upper bound of one probe, in seconds.
PROBE_TIMEOUT_S = 5.0


@dataclass
class ProbeResult:
    """The outcome of one probe: ``what`` was asked, ``ok`` or not, and a one-line ``detail``."""

    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``what: detail`` with passwords in URLs masked (for the ok lines and the error lines)."""
        return mask_url_passwords(f"{self.what}: {self.detail}")


Probe = tuple[str, Callable[[], str]]


def probes(config: ServiceConfig, timeout_s: float = PROBE_TIMEOUT_S) -> list[Probe]:
    """(what, check) for every dependency of ``config``; a check returns a short detail or raises."""
    out: list[Probe] = [
        (f"job DB {config.job_db}", lambda: probe_job_db(config.job_db)),
        (f"archive {config.archive_url}",
         lambda: probe_archive(config.archive_url, config.storage_options)),
    ]
    spec = config.source
    routes = spec.get("routes", {}) if spec.get("kind") == "router" else {"*": spec}
    for key, route in routes.items():
        name = f"metric source {key!r} ({route.get('kind')}{' ' + route['url'] if route.get('url') else ''})"
        out.append((name, _bind_source(route, timeout_s)))
    if config.nats is not None:
        nats = config.nats
        out.append((f"NATS {nats.address}", lambda: probe_nats(nats, timeout_s)))
    command = config.hooks.command
    if command:
        out.append((f"hook command {command!r}", lambda: probe_command(command)))
    return out


def _bind_source(spec: dict[str, Any], timeout_s: float) -> Callable[[], str]:
    return lambda: probe_source(spec, timeout_s)


def run_probes(config: ServiceConfig, timeout_s: float = PROBE_TIMEOUT_S) -> list[ProbeResult]:
    """Run every probe at once, each in a daemon thread bounded by ``timeout_s``; results in order."""
    checks = probes(config, timeout_s)
    results: list[ProbeResult | None] = [None] * len(checks)

    def run(i: int, what: str, check: Callable[[], str]) -> None:
        try:
            results[i] = ProbeResult(what, True, check())
        except Exception as e:  # noqa: BLE001 - every failure of a dependency is a probe result
            results[i] = ProbeResult(what, False, describe_error(e))

    threads = [threading.Thread(target=run, args=(i, what, check), name=f"ccarchive-probe-{i}", daemon=True)
               for i, (what, check) in enumerate(checks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 0.5)  # the probes run in parallel: the whole check takes about one bound
    return [r if r is not None else ProbeResult(what, False, f"no answer within {timeout_s:.0f} s")
            for r, (what, _) in zip(results, checks, strict=True)]


# -- the probes -------------------------------------------------------------------------------------

def probe_job_db(path: str) -> str:
    from ..jobdb import SCHEMA_VERSION, JobDB

    with JobDB(path, busy_timeout_ms=int(PROBE_TIMEOUT_S * 1000)) as db:
        jobs = sum(db.counts_by_status().values())
    return f"readable, schema {SCHEMA_VERSION}, {jobs} jobs"


def probe_archive(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """version.txt read by opening the archive, then a hidden object written and deleted."""
    import posixpath

    from ..archive import JobArchive, open_archive
    from ..atomicio import TMP_PREFIX, TMP_SUFFIX
    from ..backends.sqlite import SqliteArchive

    archive = open_archive(url, storage_options=storage_options)
    if isinstance(archive, SqliteArchive):
        _probe_sqlite_write(archive.path)
        return "version 3, writable"
    if isinstance(archive, JobArchive):
        name = f"{TMP_PREFIX}probe-{uuid.uuid4().hex}{TMP_SUFFIX}"
        path = posixpath.join(archive.root, name) if archive.root else name
        archive.fs.pipe_file(path, b"ccarchive write probe\n")
        archive.fs.rm_file(path)
        return "version 3, writable"
    return "version 3 (writing not probed for this backend)"


def _probe_sqlite_write(path: str) -> None:
    import sqlite3

    conn = sqlite3.connect(path, timeout=PROBE_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO metadata (key, value) VALUES (?, '')", (f".ccarchive-probe-{uuid.uuid4().hex}",))
        conn.execute("ROLLBACK")
    except sqlite3.Error as e:
        raise CcArchiveError(f"{path}: not writable: {e}", reason="archive-not-writable") from None
    finally:
        conn.close()


def probe_source(spec: dict[str, Any], timeout_s: float = PROBE_TIMEOUT_S) -> str:
    kind = spec.get("kind")
    if kind == "cc-metric-store":
        body = json.dumps({"cluster": "ccarchive-probe", "from": 0, "to": 1, "queries": []}).encode()
        answer = _http_get(spec, "/api/query", {"version": "v2"}, body, timeout_s)
        if not isinstance(answer, dict) or "results" not in answer:
            raise CcArchiveError(f"unexpected answer to an empty query: {str(answer)[:200]}", reason="source-probe")
        return "answered a query"
    if kind == "prometheus":
        answer = _http_get(spec, "/api/v1/status/buildinfo", None, None, timeout_s)
        version = answer.get("data", {}).get("version") if isinstance(answer, dict) else None
        if not version:
            raise CcArchiveError(f"not a Prometheus build info answer: {str(answer)[:200]}", reason="source-probe")
        return f"Prometheus {version}"
    if kind == "replay":
        from ..archive import open_archive

        open_archive(spec.get("archive", ""), storage_options=spec.get("storage-options"))
        return "archive opened"
    if kind == "synthetic":
        return "generated data, nothing to probe"
    return "a source of your own, not probed"


def _http_get(spec: dict[str, Any], path: str, params: dict[str, str] | None, body: bytes | None,
              timeout_s: float) -> Any:
    """One GET with the source's URL and token; the decoded JSON answer."""
    from ..sources.http import HttpClient, check_http_spec

    url, token = check_http_spec(spec, set(spec), str(spec.get("kind")))  # options were checked with the config
    client = HttpClient(url, headers={"Authorization": f"Bearer {token}"} if token else {}, pool_size=1)
    try:
        raw = client.request("GET", path, params=params, body=body, timeout=timeout_s, what="request")
    finally:
        client.close()
    try:
        return json.loads(raw)
    except ValueError:
        raise CcArchiveError(f"{url}{path}: the answer is not JSON: {raw[:200]!r}", reason="source-probe") from None


def probe_nats(settings: NatsSettings, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Connect once with the configured credentials, then close."""
    import asyncio

    import nats

    errors: list[BaseException] = []

    async def keep_error(e: Exception) -> None:
        errors.append(e)  # the failure is the probe's result; nats-py would only log it

    async def connect() -> None:
        auth: dict[str, Any] = {}
        if settings.username:
            auth.update(user=settings.username, password=settings.password or "")
        if settings.creds_file:
            auth["user_credentials"] = settings.creds_file
        # nats-py tries a server max_reconnect_attempts + 1 times before giving up (0 means forever)
        nc = await asyncio.wait_for(nats.connect(
            settings.address, name="ccarchive-probe", connect_timeout=timeout_s, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0, error_cb=keep_error, **auth), timeout_s)
        await nc.close()

    try:
        asyncio.run(connect())
    except (asyncio.TimeoutError, TimeoutError):
        raise CcArchiveError(f"no connection within {timeout_s:.0f} s", reason="nats-unreachable") from None
    except Exception as e:  # noqa: BLE001 - nats-py's errors vary by failure; name the first cause
        cause = errors[0] if errors else e
        raise CcArchiveError(f"cannot connect: {type(cause).__name__}: {cause}", reason="nats-unreachable") from None
    return f"connected (subject {settings.subject})"


def probe_command(command: str) -> str:
    """The hook command's first word must name an executable."""
    try:
        program = shlex.split(command)[0]
    except (ValueError, IndexError) as e:
        raise CcArchiveError(f"cannot parse the command: {e}", reason="hook-command") from None
    found = shutil.which(program)
    if found is None:
        raise CcArchiveError(f"{program!r} is not an executable on PATH", reason="hook-command")
    return f"{program} -> {found}"
