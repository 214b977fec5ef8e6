"""The agent's HTTP endpoints, on the standard library's threading server.

* ``GET /v1/node``: the cached sample as JSON (docs/agent.md describes every field);
* ``GET /metrics``: the same sample in Prometheus text format;
* ``GET /healthz``: liveness, unauthenticated so a supervisor needs no secret.

With a token, ``/v1/node`` and ``/metrics`` require ``Authorization: Bearer TOKEN``; the
comparison is constant-time so the token cannot be guessed byte by byte from response times.
Every request only copies bytes the sampler prepared, which keeps it cheap and lets the
server answer while a slow NVML read is in progress. Connections are kept alive (HTTP/1.1),
one thread each, until the reader closes them or sends nothing for ``IDLE_TIMEOUT_S``.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from provider.agent.sampler import Sampler

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS = 5
IDLE_TIMEOUT_S = 60.0
"""A kept-alive connection that sends no request for this long is closed."""


class AgentServer(ThreadingHTTPServer):
    """Serves one sampler; ``token`` None disables authentication."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        sampler: Sampler,
        registry: CollectorRegistry,
        token: str | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sampler = sampler
        self.registry = registry
        self.token = token.encode() if token else None
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = "provider-agent/1"
    # Kept alive: a reader asks again over the same connection on its next read (every
    # placement reads every agent). Every answer carries a Content-Length. A connection that
    # sends nothing for ``timeout`` seconds is closed, so idle readers do not pin this server's
    # threads; readers close theirs sooner (provider.clients.connections.IDLE_S).
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S

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
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        log.debug("%s " + format, self.address_string(), *args)
