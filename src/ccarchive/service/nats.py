"""NATS trigger: cc-backend's job events (InfluxDB line protocol) from a core-NATS subscription.

Wire format (cc-backend internal/api/nats.go)::

    job,function=stop_job event="{\\"jobId\\":123,\\"cluster\\":\\"fritz\\",...}" 1649763839000000000

Measurement ``job``, tag ``function`` = ``start_job`` | ``stop_job``, one string field ``event`` with
the same JSON payload as the REST API, several lines per message allowed.  Lines of another
measurement or without an ``event`` string field are skipped; ``start_job`` events are ignored
(starting jobs stays cc-backend's business).  A stop runs the REST path's logic
(``stopjob.StopJobService``: job_cache first, moved into job): cc-backend's NATS handler instead
looks in ``job`` first and stops a cached job *inside* job_cache, then queues it with its
job_cache id, which is not a job-table id.  Core NATS keeps nothing: a message published while
ccarchive is disconnected is lost, which is why the DB reconciler exists.

nats-py is asyncio; it runs on its own event loop in a daemon thread.  Each message is handled in
an executor thread (SQLite and the archive queue block), one at a time per subscription, so the
loop keeps answering the server's pings while the queue applies back-pressure.

While the server is unreachable nats-py retries every ``reconnect_wait`` seconds (2 by default),
at start-up and after losing the connection alike, and reports every failed attempt; an
:class:`~ccarchive.logs.Outage` turns those into the first failure, a summary at most every 5
minutes and one line on recovery.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..logs import Outage

log = logging.getLogger(__name__)

#: what an outage means for the user, said once per outage
_OUTAGE_NOTE = ("stop events published meanwhile are lost (the reconciler archives those jobs after the "
                "grace period)")


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _is_connection_loss(e: Exception) -> bool:
    """Errors nats-py reports when an established connection breaks; the disconnected callback
    follows and reports the outage."""
    from nats import errors

    return isinstance(e, (OSError, errors.UnexpectedEOF, errors.StaleConnectionError))


@dataclass(frozen=True)
class LineEvent:
    """One decoded line: measurement, tags and the ``event`` string field (None if absent)."""

    measurement: str
    tags: dict[str, str]
    event: str | None


class LineProtocolError(ValueError):
    """A line that is not valid InfluxDB line protocol."""


def _unescape(text: str, escaped: str = ", =\\") -> str:
    """Drop the backslash before any of ``escaped`` (names and tags: comma, space, equals, backslash;
    string field values: quote and backslash)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escaped:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _split_unquoted(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside quotes and not escaped by a backslash (also the message into lines:
    a newline inside a quoted field value does not end the line)."""
    parts, cur, i, quoted = [], [], 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _string_field(value: str) -> str | None:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return None
    return _unescape(value[1:-1], '"\\')


def parse_line_protocol(data: bytes | str) -> list[LineEvent]:
    """Decode a message; raises :class:`LineProtocolError` on a malformed line (as cc-backend, the
    rest of that message is then dropped)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    events = []
    for raw in _split_unquoted(text, "\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sections = [s for s in _split_unquoted(line, " ") if s != ""]
        if len(sections) not in (2, 3):
            raise LineProtocolError(f"expected 'measurement[,tags] fields [timestamp]': {line[:200]!r}")
        if len(sections) == 3 and not sections[2].lstrip("-").isdigit():
            raise LineProtocolError(f"invalid timestamp {sections[2][:40]!r}")
        head = _split_unquoted(sections[0], ",")
        tags = {}
        for t in head[1:]:
            k, sep, v = t.partition("=")
            if not sep or not k or not v:
                raise LineProtocolError(f"invalid tag {t!r}")
            tags[_unescape(k)] = _unescape(v)
        event = None
        for f in _split_unquoted(sections[1], ","):
            k, sep, v = f.partition("=")
            if not sep or not k or not v:
                raise LineProtocolError(f"invalid field {f[:80]!r}")
            if _unescape(k) == "event":
                event = _string_field(v)
        events.append(LineEvent(_unescape(head[0]), tags, event))
    return events


class NatsSubscriber:
    """Subscribes to ``subject`` and calls ``on_stop(payload)`` for every stop_job event.

    ``on_stop`` runs in a worker thread and may block; it must not raise for bad payloads
    (it logs them).  ``stats`` counts messages by outcome for the metrics; ``outage.failures``
    counts failed connection attempts and lost connections.  ``reconnect_wait`` is the pause
    between connection attempts, in seconds.
    """

    def __init__(self, address: str, subject: str, on_stop: Callable[[str], None], *,
                 username: str | None = None, password: str | None = None, creds_file: str | None = None,
                 reconnect_wait: float = 2.0) -> None:
        self.address, self.subject, self.on_stop = address, subject, on_stop
        self.reconnect_wait = reconnect_wait
        self.outage = Outage(log, f"NATS {address}", note=_OUTAGE_NOTE)
        self._auth: dict[str, Any] = {}
        if username:
            self._auth.update(user=username, password=password or "")
        if creds_file:
            self._auth["user_credentials"] = creds_file
        self.stats = {"stop_job": 0, "start_job": 0, "skipped": 0, "malformed": 0}
        self.connected = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ccarchive-nats", daemon=True)
        self._stopping = asyncio.Event()  # bound to the loop on first use (Python >= 3.10)
        self._nc: Any = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._nc = await self._connect()
        if self._nc is None:
            return
        self.outage.recovered()
        await self._nc.subscribe(self.subject, cb=self._on_message)
        await self._nc.flush()
        self.connected.set()
        log.info("NATS %s: subscribed to %s", self.address, self.subject)
        await self._stopping.wait()
        try:
            await self._nc.drain()  # handles what already arrived, then closes
        except Exception as e:  # noqa: BLE001 - closing anyway
            log.warning("NATS: drain failed: %s", e)

    async def _connect(self) -> Any:
        """The connected client, or None when ``stop()`` came first.

        nats-py retries an unreachable server itself (``max_reconnect_attempts=-1``) and reports each
        failure to ``_on_error``; this loop only retries what it gives up on.  Waiting for either the
        connection or the stop lets a service that never reached its server shut down at once."""
        import nats

        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                attempt = asyncio.ensure_future(nats.connect(
                    self.address, name="ccarchive", max_reconnect_attempts=-1,
                    reconnect_time_wait=self.reconnect_wait, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected, error_cb=self._on_error, **self._auth))
                await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not attempt.done():
                    attempt.cancel()
                    await asyncio.gather(attempt, return_exceptions=True)
                    return None
                try:
                    return attempt.result()
                except Exception as e:  # noqa: BLE001 - keep trying; stops arriving meanwhile go to the reconciler
                    self.outage.failed(f"cannot connect: {_describe(e)}")
                    await asyncio.wait({stopping}, timeout=self.reconnect_wait)
            return None
        finally:
            stopping.cancel()

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        if self._stopping.is_set():
            log.info("NATS %s: disconnected", self.address)  # our own drain at shutdown
        else:
            self.outage.failed("connection lost")

    async def _on_reconnected(self) -> None:
        self.connected.set()
        self.outage.recovered()

    async def _on_error(self, e: Exception) -> None:
        if self.connected.is_set() and not _is_connection_loss(e):
            log.warning("NATS %s: %s", self.address, _describe(e))
        elif self.connected.is_set() or self._stopping.is_set():
            log.debug("NATS %s: %s", self.address, _describe(e))  # a break _on_disconnected reports, or shutdown
        else:
            self.outage.failed(f"cannot connect: {_describe(e)}")

    async def _on_message(self, msg: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.handle, msg.data)

    def handle(self, data: bytes) -> None:
        """Process one message (also usable without a connection, e.g. in tests)."""
        try:
            events = parse_line_protocol(data)
        except (LineProtocolError, UnicodeDecodeError) as e:
            self.stats["malformed"] += 1
            log.error("NATS %s: failed to decode InfluxDB line protocol message: %s", self.subject, e)
            return
        for ev in events:
            function = ev.tags.get("function")
            if ev.measurement != "job" or ev.event is None or function not in ("start_job", "stop_job"):
                self.stats["skipped"] += 1
                log.debug("NATS %s: skipped a %r line (function %r)", self.subject, ev.measurement, function)
                continue
            self.stats[function] += 1
            if function == "stop_job":
                self.on_stop(ev.event)

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the subscription and stop the loop thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
