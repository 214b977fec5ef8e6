"""The agent's HTTP endpoints, on the standard library's threading server.

* ``GET /v1/node``: the cached sample as JSON (docs/agent.md describes every field);
* ``GET /metrics``: the same sample in Prometheus text format;
* ``GET /healthz``: liveness, unauthenticated so a supervisor needs no secret.

With a token, ``/v1/node`` and ``/metrics`` require ``Authorization: Bearer TOKEN``; the
comparison is constant-time so the token cannot be guessed byte by byte from response times.
Every request only copies bytes the sampler prepared, which keeps it cheap and lets the
server answer while a slow NVML read is in progress. Connections are kept alive (HTTP/1.1),
one thread each.

A server on the network meets clients that hold connections without finishing requests
(slowloris). :class:`Limits` bounds what they can take: a request's head (and a TLS handshake)
must arrive within ``request_timeout_s`` of its first byte, or of the connection's opening;
a kept-alive connection silent for ``idle_timeout_s`` is closed; at most ``max_connections``
connections are served at once, at most ``max_per_client`` from one address, so one client
cannot take them all. A connection over a cap is closed at once, after a 503 that says why
over plain HTTP, without starting a thread.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from provider.agent.sampler import Sampler

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS = 5
REFUSAL_LOG_EVERY_S = 10.0
"""Connections refused over a cap are logged at most this often (a flood must not flood the log)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client, or all of them, can hold of the server (docs/agent.md)."""

    max_connections: int = 256
    max_per_client: int = 64
    request_timeout_s: float = 10.0
    """A request's head, and a TLS handshake, must arrive within this."""
    idle_timeout_s: float = 60.0
    """A kept-alive connection that sends no request for this long is closed; readers close
    theirs sooner (provider.clients.connections.IDLE_S)."""


class AgentServer(ThreadingHTTPServer):
    """Serves one sampler; ``token`` None disables authentication, ``tls`` None serves plain HTTP."""

    daemon_threads = True
    request_queue_size = 128
    """The kernel's queue of connections not yet accepted (the standard library's 5 drops a burst's
    handshakes, which clients then retry only after a second)."""

    def __init__(
        self,
        address: tuple[str, int],
        sampler: Sampler,
        registry: CollectorRegistry,
        token: str | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        limits: Limits = Limits(),
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sampler = sampler
        self.registry = registry
        self.token = token.encode() if token else None
        self.tls = tls
        self.limits = limits
        self._lock = threading.Lock()
        self._served: Counter[str] = Counter()
        self._refused_since_log = 0
        self._last_refusal_log = 0.0
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for the connection, or refuse it at once when a cap is reached."""
        peer = str(client_address[0])
        with self._lock:
            total = sum(self._served.values())
            if total >= self.limits.max_connections:
                reason = f"the agent serves {total} connections, its cap (--max-connections {self.limits.max_connections})"
            elif self._served[peer] >= self.limits.max_per_client:
                reason = (f"{peer} holds {self._served[peer]} connections, the cap per client address "
                          f"(--max-connections-per-client {self.limits.max_per_client})")
            else:
                reason = ""
                self._served[peer] += 1
        if reason:
            self._refuse(request, peer, reason)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(peer)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """As the threading server does, with the TLS handshake in this thread (a client that
        never finishes it holds only its own connection, for ``request_timeout_s``)."""
        try:
            if self.tls is not None:
                request.settimeout(self.limits.request_timeout_s)
                request = self.tls.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._release(str(client_address[0]))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that breaks off, times out or fails the handshake is routine: one line at
        DEBUG. Anything else is a defect of the agent: logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("Connection from %s dropped: %s", client_address[0], error)
        else:
            log.exception("Serving %s failed", client_address[0])

    def _release(self, peer: str) -> None:
        with self._lock:
            self._served[peer] -= 1
            if self._served[peer] <= 0:
                del self._served[peer]

    def _refuse(self, request: socket.socket, peer: str, reason: str) -> None:
        """Close ``request`` without a thread; over plain HTTP say why first (a TLS client could
        not read it before a handshake, which a refused connection must not cost)."""
        if self.tls is None:
            body = json.dumps({"error": f"too many connections: {reason}",
                               "fix": "retry later; close idle connections, or raise the cap"}).encode()
            head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
            try:
                request.setblocking(False)  # never wait for a client over the cap
                request.sendall(head + body)
            except OSError:
                pass
        self.shutdown_request(request)
        now = time.monotonic()
        with self._lock:
            self._refused_since_log += 1
            if now - self._last_refusal_log < REFUSAL_LOG_EVERY_S:
                return
            count, self._refused_since_log, self._last_refusal_log = self._refused_since_log, 0, now
        log.warning("Refused %d connection(s) over the cap, the last from %s: %s", count, peer, reason)


class _RequestClock(io.RawIOBase):
    """The connection's reading side, under the two bounds of :class:`Limits`.

    A socket timeout alone bounds each ``recv``, so a client sending one byte a second would
    hold its thread for ever; here the whole head of a request must arrive by a deadline."""

    def __init__(self, sock: socket.socket, limits: Limits) -> None:
        self._sock = sock
        self._limits = limits
        self._due: float | None = time.monotonic() + limits.request_timeout_s  # the first request

    def readable(self) -> bool:
        return True

    def next_request(self) -> None:
        """The next request may come after up to ``idle_timeout_s`` of silence; its head is then due
        ``request_timeout_s`` after its first byte."""
        self._due = None

    def readinto(self, buffer: Any) -> int:
        if self._due is None:
            self._sock.settimeout(self._limits.idle_timeout_s)
        else:
            left = self._due - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the request did not arrive within {self._limits.request_timeout_s:g} s")
            self._sock.settimeout(left)
        n = self._sock.recv_into(buffer)
        if self._due is None and n:
            self._due = time.monotonic() + self._limits.request_timeout_s
        return n


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = "provider-agent/1"
    # Kept alive: a reader asks again over the same connection on its next read (every
    # placement reads every agent). Every answer carries a Content-Length. A connection that
    # sends nothing for ``timeout`` seconds is closed, so idle readers do not pin this server's
    # threads; readers close theirs sooner (provider.clients.connections.IDLE_S).
    protocol_version = "HTTP/1.1"
    _clock: _RequestClock

    def setup(self) -> None:
        super().setup()
        self._clock = _RequestClock(self.connection, self.server.limits)
        self.rfile = io.BufferedReader(self._clock)

    def handle_one_request(self) -> None:
        super().handle_one_request()
        self._clock.next_request()

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._healthz()
        elif path not in ("/v1/node", "/metrics"):
            self._json(404, {"error": f"no such endpoint {path!r}", "endpoints": ["/v1/node", "/metrics", "/healthz"]})
        elif not self._authorised():
            self._json(
                401,
                {
                    "error": "missing or wrong bearer token",
                    "fix": "send 'Authorization: Bearer TOKEN' with the token from the agent's "
                    "--token-file (in Airflow: the host connection's password)",
                },
                {"WWW-Authenticate": 'Bearer realm="provider-agent"'},
            )
        elif (latest := self.server.sampler.latest()) is None:
            self._json(503, {"error": "no sample yet; retry in a second"})
        elif path == "/v1/node":
            self._send(200, "application/json", latest[1])
        else:
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))

    def _authorised(self) -> bool:
        expected = self.server.token
        if expected is None:
            return True
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)

    def _healthz(self) -> None:
        latest = self.server.sampler.latest()
        if latest is None:
            self._json(503, {"status": "starting"})
            return
        age = time.monotonic() - latest[2]
        stale = age > STALE_AFTER_INTERVALS * self.server.sampler.interval_s + 1.0
        self._json(503 if stale else 200, {"status": "stale" if stale else "ok", "sample_age_s": round(age, 3)})

    def _json(self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(doc).encode(), headers)

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.connection.settimeout(self.server.limits.request_timeout_s)  # a client that does not read
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        log.debug("%s " + format, self.address_string(), *args)
