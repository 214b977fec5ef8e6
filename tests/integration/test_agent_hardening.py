"""The node agent under attack, as a real process on loopback: slowloris clients, connection
floods, TLS with the right and a wrong CA, and a network address without a token."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provider.clients.agent import read_agent
from provider.clients.hosts import HostConfig
from tools.local_airflow import REPO
from tools.node_agent import RunningAgent, start_agent, stop_agent
from tools.pki import make_pki

TOKEN = "hardening-token"
REQUEST_TIMEOUT_S = 2.0
"""The agent's --request-timeout in these tests (default 10 s), so that drops are seen quickly."""
HEAD = b"GET /v1/node HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
"""A request's head without its closing blank line: what a slowloris client sends, then trickles."""


def _agent(tmp_path: Path, name: str, *extra: str) -> RunningAgent:
    (tmp_path / "gpus.json").write_text(json.dumps([{"model": "T4", "memory_total_mb": 16384,
                                                     "timeline": [[0, 5, 100]]}]))
    (tmp_path / "token").write_text(TOKEN + "\n")
    options = ["--host-id", name, "--interval", "0.2", "--docker-root", str(tmp_path / "none"),
               "--gpu-backend", f"simulated:{tmp_path / 'gpus.json'}", "--token-file", str(tmp_path / "token"),
               "--request-timeout", str(REQUEST_TIMEOUT_S), *extra]
    return start_agent(name, options, tmp_path / f"{name}.log")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[RunningAgent]:
    running = _agent(tmp_path, "guarded")
    try:
        yield running
    finally:
        stop_agent(running.process)


def _port(agent: RunningAgent) -> int:
    return int(agent.url.rsplit(":", 1)[1])


def _get_node(port: int, source: str) -> tuple[int, float]:
    """An honest reader from ``source``: the status of ``GET /v1/node`` and how long it took."""
    started = time.monotonic()
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        client.request("GET", "/v1/node", headers={"Authorization": f"Bearer {TOKEN}"})
        answer = client.getresponse()
        answer.read()
        return answer.status, time.monotonic() - started
    finally:
        client.close()


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes ``sock`` within ``within_s`` (what it sent first is skipped)."""
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slowloris_does_not_starve_other_readers(agent: RunningAgent) -> None:
    """100 connections from one address, half silent and half sending an unfinished head: the
    agent serves another reader within 1 s, refuses what is over the per-client cap (64) at
    once, and drops every stalled connection once its --request-timeout has passed."""
    port = _port(agent)
    attackers = []
    try:
        for i in range(100):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:
                sock.sendall(HEAD)
            attackers.append(sock)
        time.sleep(0.3)  # let the agent accept them all
        for _ in range(5):
            status, took = _get_node(port, "127.0.0.2")
            assert status == 200 and took < 1.0, f"an honest reader waited {took:.2f} s (status {status})"
        refused = 0
        for sock in attackers[64:]:
            sock.settimeout(1.0)
            try:
                refused += sock.recv(4096).startswith(b"HTTP/1.1 503")
            except TimeoutError:
                pass  # held, not refused
        assert refused == 36, f"{refused} of the 36 connections over the per-client cap got a 503"
        started = time.monotonic()
        for sock in attackers[:64]:
            assert _closed_by_server(sock, max(0.01, REQUEST_TIMEOUT_S + 2.0 - (time.monotonic() - started)))
        assert time.monotonic() - started < REQUEST_TIMEOUT_S + 2.0
        assert _get_node(port, "127.0.0.1")[0] == 200  # their slots are free again
    finally:
        for sock in attackers:
            sock.close()


def test_a_trickling_client_is_dropped_after_the_request_timeout(agent: RunningAgent) -> None:
    """A byte every 0.2 s keeps a per-read socket timeout from ever firing; the head's deadline
    does not move."""
    with socket.create_connection(("127.0.0.1", _port(agent)), timeout=5) as sock:
        started, dropped = time.monotonic(), False
        for byte in (HEAD + b"X-Pad: " + b"a" * 200):
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            if _closed_by_server(sock, 0.2):
                dropped = True
                break
        took = time.monotonic() - started
    assert dropped, "the agent still held a connection trickling for 40 s"
    assert REQUEST_TIMEOUT_S - 0.5 < took < REQUEST_TIMEOUT_S + 1.5, f"dropped after {took:.2f} s"


def test_connections_over_the_cap_get_a_quick_503_that_says_why(tmp_path: Path) -> None:
    running = _agent(tmp_path, "capped", "--max-connections-per-client", "4", "--max-connections", "6")
    port, held = _port(running), []
    try:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
        status, took = _get_node(port, "127.0.0.1")
        assert status == 503 and took < 1.0
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request("GET", "/v1/node")
        answer = client.getresponse()
        doc = json.loads(answer.read())
        client.close()
        assert answer.status == 503 and answer.getheader("Retry-After") == "1"
        assert "--max-connections-per-client 4" in doc["error"] and "retry" in doc["fix"]
        held += [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0), timeout=5)
                 for _ in range(2)]
        time.sleep(0.2)
        status, _ = _get_node(port, "127.0.0.3")  # a third address: the cap of all connections is reached
        assert status == 503
    finally:
        for sock in held:
            sock.close()
        stop_agent(running.process)


def _tls_host(agent: RunningAgent, ca: Path | None) -> HostConfig:
    return HostConfig("gpu_tls", "unix:///nonexistent/docker.sock", agent_url=agent.url, agent_token=TOKEN,
                      agent_ca_cert=None if ca is None else str(ca))


def test_tls_agent_is_verified_with_the_connections_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    running = _agent(tmp_path, "tls", "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    stalled = socket.create_connection(("127.0.0.1", _port(running)), timeout=5)  # never starts its handshake
    try:
        assert running.url.startswith("https://127.0.0.1:")
        started = time.monotonic()
        good = asyncio.run(read_agent(_tls_host(running, pki.ca), 2.0))
        assert good.unreachable is None and good.doc is not None and good.doc["host"] == "tls"
        assert time.monotonic() - started < 1.0
        for ca in (pki.stranger_ca, None):  # a wrong CA; the system's trust store
            bad = asyncio.run(read_agent(_tls_host(running, ca), 2.0))
            assert bad.doc is None and bad.unreachable is not None
            assert "failed the TLS handshake" in bad.unreachable and "CERTIFICATE_VERIFY_FAILED" in bad.unreachable
            assert "agent_ca_cert of 'gpu_tls'" in bad.unreachable
        plain = asyncio.run(read_agent(HostConfig("gpu_plain", "unix:///x.sock", agent_url=running.url.replace(
            "https://", "http://"), agent_token=TOKEN), 2.0))
        assert plain.doc is None  # plain HTTP to a TLS agent is not served
        assert _closed_by_server(stalled, REQUEST_TIMEOUT_S + 2.0)  # the stalled handshake is dropped
    finally:
        stalled.close()
        stop_agent(running.process)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_a_network_address_without_a_token_is_refused(tmp_path: Path, listen: str) -> None:
    (tmp_path / "gpus.json").write_text("[]")
    done = subprocess.run(
        [sys.executable, "-m", "provider.agent", "--listen", listen, "--gpu-backend", f"simulated:{tmp_path / 'gpus.json'}"],
        cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2 and "listening on" not in done.stdout
    assert "not a loopback address, without a token" in done.stderr and "--token-file FILE" in done.stderr
    assert "--no-auth" in done.stderr

