"""The sidecar's HTTP server: cc-backend's stop_job endpoint, a small admin API, health and metrics.

Standard library only (``ThreadingHTTPServer``): one thread per connection, HTTP/1.1 keep-alive,
bodies by ``Content-Length`` (at most 1 MiB).  Routing, authentication and the JSON error shape
live here; what a request *does* is the :class:`App`'s business (``serve.Sidecar``).

====================================  ======  ==========================================================
``/api/jobs/stop_job/``               POST    cc-backend's StopJobAPIRequest -> 200 + job JSON; the job is
                                      PUT     handed to the pipeline without waiting for a queue slot
``/api/ccarchive/archive/<id>``       POST    queue job DB id for archiving (``?force=true`` re-archives)
``/api/ccarchive/failed``             GET     jobs whose archiving failed, with reasons
``/api/ccarchive/status``             GET     pipeline state, queue, job DB counts
``/healthz``                          GET     200 while the worker accepts jobs, else 503 (no auth)
``/metrics``                          GET     Prometheus text format (no auth)
====================================  ======  ==========================================================

Errors are cc-backend's ``{"status": "<HTTP status text>", "error": "<message>"}``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from .auth import Authenticator, AuthError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
STOP_JOB_PATHS = ("/api/jobs/stop_job/", "/api/jobs/stop_job")
_ARCHIVE = re.compile(r"^/api/ccarchive/archive/([0-9]+)/?$")


@dataclass
class Response:
    """What a handler answers."""

    status: int
    body: Any = None                    # dict/list -> JSON, bytes as they are
    content_type: str = "application/json"


def error(status: int, message: str) -> Response:
    """cc-backend's ``ErrorResponse``."""
    return Response(status, {"status": HTTPStatus(status).phrase, "error": message})


class App(Protocol):
    """What the HTTP layer calls (implemented by ``ccarchive.service.serve.Sidecar``)."""

    def stop_job(self, body: bytes) -> Response: ...
    def archive(self, db_id: int, force: bool) -> Response: ...
    def failed(self, cluster: str | None, since: int | None, limit: int) -> Response: ...
    def status(self) -> Response: ...
    def health(self) -> Response: ...
    def metrics(self) -> Response: ...
    def count_request(self, endpoint: str, code: int) -> None: ...


class ServiceHTTPServer(ThreadingHTTPServer):
    """Threads are daemons and not joined at close: an idle keep-alive connection must not keep a
    stopping service alive.  The listen backlog is large, because a scheduler adapter may send a
    burst of stops from many connections at once (the standard library's 5 makes them wait for
    SYN retries, 1, 3, 7 ... seconds)."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: App, auth: Authenticator) -> None:
        self.app, self.auth = app, auth
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def start(self) -> threading.Thread:
        """Serve in a daemon thread."""
        t = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                             name="ccarchive-http", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        """Stop accepting connections and close the socket."""
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: ServiceHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "ccarchive"
    timeout = 300  # an idle keep-alive connection gives its thread back after this
    # headers and body go out in two writes: with Nagle's algorithm the body would wait for the
    # client's delayed ACK of the headers (40 ms per answer on Linux)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        endpoint = "other"
        try:
            endpoint, resp = self._route(method, url.path, parse_qs(url.query))
        except Exception:  # noqa: BLE001 - one request must never take the server down
            log.exception("%s %s: internal error", method, url.path)
            resp = error(500, "internal error (see the ccarchive log)")
        self._send(resp)
        self.server.app.count_request(endpoint, resp.status)

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[str, Response]:
        app = self.server.app
        if path == "/healthz":
            return "healthz", app.health() if method == "GET" else self._not_allowed("GET")
        if path == "/metrics":
            return "metrics", app.metrics() if method == "GET" else self._not_allowed("GET")
        if path in STOP_JOB_PATHS:
            if method not in ("POST", "PUT"):
                return "stop_job", self._not_allowed("POST, PUT")
            body = self._body()
            if isinstance(body, Response):
                return "stop_job", body
            denied = self._auth(require_api=True)
            return "stop_job", denied or app.stop_job(body)
        m = _ARCHIVE.match(path)
        if m:
            if method != "POST":
                return "archive", self._not_allowed("POST")
            body = self._body()  # read (and ignore) a body so keep-alive stays in sync
            if isinstance(body, Response):
                return "archive", body
            force = (query.get("force") or ["false"])[-1].lower()
            if force not in ("true", "false", "1", "0"):
                return "archive", error(400, f"force must be true or false, got {force!r}")
            return "archive", self._auth(require_api=True) or app.archive(int(m.group(1)), force in ("true", "1"))
        if path.rstrip("/") == "/api/ccarchive/failed":
            if method != "GET":
                return "failed", self._not_allowed("GET")
            from ..times import parse_time

            try:
                cluster = query["cluster"][-1] if "cluster" in query else None
                since = parse_time(query["since"][-1]) if "since" in query else None  # seconds or ISO 8601
                limit = int((query.get("limit") or ["100"])[-1])
            except ValueError as e:
                return "failed", error(400, f"invalid query parameter: {e}")
            return "failed", self._auth(require_api=False) or app.failed(cluster, since, max(1, limit))
        if path.rstrip("/") == "/api/ccarchive/status":
            if method != "GET":
                return "status", self._not_allowed("GET")
            return "status", self._auth(require_api=False) or app.status()
        return "other", error(404, f"no such endpoint: {method} {path}")

    def _not_allowed(self, allowed: str) -> Response:
        return error(405, f"method {self.command} not allowed here (use {allowed})")

    def _auth(self, *, require_api: bool) -> Response | None:
        try:
            self.server.auth.authenticate(dict(self.headers.items()), self.client_address[0], require_api=require_api)
        except AuthError as e:
            log.info("auth api -> authentication failed for %s %s from %s: %s", self.command, self.path,
                     self.client_address[0], e)
            return error(e.status, str(e))
        return None

    def _body(self) -> bytes | Response:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return error(411, "chunked bodies are not supported; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return error(400, f"invalid Content-Length {self.headers.get('Content-Length')!r}")
        if length > MAX_BODY:
            self.close_connection = True
            return error(413, f"body of {length} bytes is larger than {MAX_BODY}")
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, resp: Response) -> None:
        if isinstance(resp.body, bytes):
            payload = resp.body
        elif resp.body is None:
            payload = b""
        else:
            payload = (json.dumps(resp.body, ensure_ascii=False) + "\n").encode()
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
