"""Seeded fuzzing of what a DAG, a connection or a client can hand the provider: every input
either works or is refused with a :class:`GpuDockerError` that names the field, and the node
agent answers every request (docs/security.md). The labels on the engines have a fuzz of their
own, beside their strict readers (tests/unit/test_label_strict.py). Each target draws from a seeded generator for a bounded time, so a run
is repeatable (the seed is printed with the count of inputs tried) and the suite stays fast.

Values come from a table of hostile ones (NaN, infinities, huge and negative numbers, wrong
types, templates, control characters, path tricks, the Docker socket) mixed into valid inputs,
one to three fields at a time, so that each input goes past the checks it does not aim at.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from provider.agent.metrics import make_registry
from provider.agent.sampler import Sampler
from provider.agent.server import AgentServer
from provider.agent.simulated import SimulatedBackend, parse_inventory
from provider.clients.hosts import HOST_CONN_TYPE, POOL_CONN_TYPE, host_from_connection, resolve_pool
from provider.errors import GpuDockerError
from provider.operators.arguments import ARGUMENT_NAMES, check_arguments
from provider.operators.gpu_docker import GpuDockerOperator
from provider.scheduling.queues import queues_from_extra

SEED = 20261207
BUDGET_S = 2.0
"""Seconds each target is fuzzed for; the count of inputs tried is printed."""

HOSTILE: tuple[Any, ...] = (
    None, "", " ", "\x00", "\n", "é", "a" * 5000, "{{ dag_run.conf['x'] }}", "../../etc/passwd",
    "/var/run/docker.sock:/sock", "/:/host", 0, 1, -1, 2**31, 2**63, -(2**63), 10**100, 0.5, -0.5,
    float("nan"), float("inf"), float("-inf"), True, False, "0", "-5", "1e9", "nan", "inf", "1.5g",
    [], [""], ["a", 1], [None], {}, {"": ""}, {"a": 1}, {"a": {"b": None}}, b"bytes", object(),
)
"""Values no field should take without a clear answer."""


def hostile(rng: random.Random) -> Any:
    return rng.choice(HOSTILE)


@dataclass
class Tally:
    """How many inputs a target tried, accepted and refused."""

    tried: int = 0
    accepted: int = 0
    refused: int = 0


def fuzz(rng: random.Random, attempt: Callable[[random.Random], bool]) -> Tally:
    """Run ``attempt`` (True: accepted, False: refused as it should be) for :data:`BUDGET_S`."""
    tally = Tally()
    deadline = time.monotonic() + BUDGET_S
    while time.monotonic() < deadline:
        accepted = attempt(rng)
        tally.tried += 1
        tally.accepted += accepted
        tally.refused += not accepted
    return tally


FLAGS = ("wait_for_resources", "deferrable", "reattach")
"""The operator's yes-or-no arguments: the only ones a bool may be."""


def names_field(exc: GpuDockerError, field: str) -> bool:
    return field in str(exc)


def finite_numbers(value: Any) -> Iterator[float]:
    """Every float reachable in a checked value (dataclasses, tuples, mappings)."""
    if isinstance(value, float):
        yield value
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from finite_numbers(getattr(value, f.name))
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from finite_numbers(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from finite_numbers(item)


# -- operator arguments ------------------------------------------------------------------------


def operator_defaults() -> dict[str, Any]:
    """The operator's arguments as a DAG that sets none but ``image`` passes them."""
    signature = inspect.signature(GpuDockerOperator.__init__)
    found = {name: signature.parameters[name].default for name in ARGUMENT_NAMES}
    found["image"] = "registry.example.com/team/trainer:1.2"
    return found


def test_operator_arguments_work_or_name_the_bad_one(report: Callable[[str], None]) -> None:
    base = operator_defaults()
    check_arguments(base)  # the defaults themselves are accepted

    def attempt(rng: random.Random) -> bool:
        changed = {name: hostile(rng) for name in rng.sample(ARGUMENT_NAMES, rng.randint(1, 3))}
        try:
            checked = check_arguments({**base, **changed})
        except GpuDockerError as exc:
            assert any(names_field(exc, name) for name in changed), (changed, str(exc))
            return False
        assert all(math.isfinite(x) for x in finite_numbers(checked)), changed
        assert not any(isinstance(v, bool) for k, v in changed.items() if k not in FLAGS), changed
        return True

    tally = fuzz(random.Random(SEED), attempt)
    report(f"fuzz operator arguments (seed {SEED}): {tally.tried} inputs, {tally.accepted} accepted, "
           f"{tally.refused} refused naming the argument")
    assert tally.refused > tally.tried // 2


# -- host and pool connections -----------------------------------------------------------------


@dataclass
class Conn:
    conn_id: str
    conn_type: str | None
    host: str | None
    password: str | None
    extra: Mapping[str, Any]

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return dict(self.extra)


HOST_EXTRA = {"agent_url": "http://gpu-a:9400", "labels": {"zone": "a"}, "tls_ca_cert": "/etc/gpu/ca.pem",
              "tls_client_cert": "/etc/gpu/cert.pem", "tls_client_key": "/etc/gpu/key.pem"}
POOL_EXTRA = {"hosts": ["gpu_a", "gpu_b"], "queues": {"vision": {"quota": {"gpus": 4}, "weight": 2},
                                                      "nlp": {"quota": {"gpus": 4, "cpus": 8}}},
              "default_queue": "vision"}


def mutate(doc: Mapping[str, Any], rng: random.Random) -> tuple[dict[str, Any], str]:
    """``doc`` with one key, at any depth, set to a hostile value (or a new unknown key); the
    changed key's name."""
    out = json.loads(json.dumps(doc))
    node: dict[str, Any] = out
    while True:
        key = rng.choice([*node, "unexpected"])
        if isinstance(node.get(key), dict) and node[key] and rng.random() < 0.6:
            node = node[key]
            continue
        node[key] = hostile(rng)
        return out, key


def test_host_connections_work_or_name_the_bad_field(report: Callable[[str], None]) -> None:
    def attempt(rng: random.Random) -> bool:
        extra, key = mutate(HOST_EXTRA, rng)
        url = rng.choice(["tcp://gpu-a:2376", "unix:///var/run/docker.sock", hostile(rng)])
        conn = Conn("gpu_a", rng.choice([HOST_CONN_TYPE, None]), url if isinstance(url, str) or url is None else str(url),
                    rng.choice([None, "token"]), extra)
        try:
            host = host_from_connection(conn)
        except GpuDockerError as exc:
            assert "gpu_a" in str(exc), str(exc)
            return False
        assert host.agent_url is None or isinstance(host.agent_url, str), (key, extra)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in host.labels.items()), (key, extra)
        if host.tls is not None:
            assert all(f is None or isinstance(f, str) for f in (host.tls.ca_cert, host.tls.client_cert,
                                                                host.tls.client_key)), (key, extra)
        return True

    tally = fuzz(random.Random(SEED), attempt)
    report(f"fuzz host connections (seed {SEED}): {tally.tried} inputs, {tally.accepted} accepted, "
           f"{tally.refused} refused naming the connection")
    assert tally.refused > 0 and tally.accepted > 0


def test_pool_connections_work_or_name_the_bad_field(report: Callable[[str], None]) -> None:
    hosts = {name: Conn(name, HOST_CONN_TYPE, f"unix:///run/{name}/docker.sock", None, {}) for name in ("gpu_a", "gpu_b")}

    def attempt(rng: random.Random) -> bool:
        extra, key = mutate(POOL_EXTRA, rng)
        pool = Conn("gpu_pool", POOL_CONN_TYPE, None, None, extra)
        lookup = {**hosts, "gpu_pool": pool}

        def get_connection(conn_id: str) -> Conn:
            if not isinstance(conn_id, str) or conn_id not in lookup:
                raise KeyError(f"The conn_id `{conn_id}` isn't defined")
            return lookup[conn_id]

        try:
            resolve_pool("gpu_pool", get_connection)
            queues_from_extra(extra, "gpu_pool")
        except GpuDockerError as exc:
            assert "gpu_pool" in str(exc) and (key in str(exc) or "queue" in str(exc)), (key, str(exc))
            return False
        return True

    tally = fuzz(random.Random(SEED), attempt)
    report(f"fuzz pool connections (seed {SEED}): {tally.tried} inputs, {tally.accepted} accepted, "
           f"{tally.refused} refused naming the connection and the field")
    assert tally.refused > 0 and tally.accepted > 0


# -- requests to the node agent ----------------------------------------------------------------

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "BREW", "GET\x00", "")
PATHS = ("/v1/node", "/metrics", "/healthz", "/", "//v1/node", "/v1/node?x=1", "/v1/../metrics", "/%00",
         "/" + "a" * 10000, "*", "http://other/v1/node", "/v1/node#frag")
HEADERS = ("Authorization: Bearer wrong", "Authorization: Bearer token", "Authorization: Basic eA==",
           "Content-Length: -1", "Content-Length: 99999999", "Transfer-Encoding: chunked", "Host:",
           "X: " + "y" * 70000, "\x00: \x00", "Connection: close", "Expect: 100-continue")


def test_agent_answers_every_request_with_a_status_and_keeps_serving(tmp_path: Path,
                                                                     report: Callable[[str], None]) -> None:
    inventory = [{"model": "A100-80GB", "memory_total_mb": 81920}]
    backend = SimulatedBackend(parse_inventory(inventory), time.monotonic, uuid_prefix="fz")
    sampler = Sampler("fz", backend, cpus=[0], docker_root=str(tmp_path))
    sampler.refresh()
    server = AgentServer(("127.0.0.1", 0), sampler, make_registry(sampler), token="token")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    statuses: dict[str, int] = {}
    try:
        def attempt(rng: random.Random) -> bool:
            method = rng.choice(METHODS)
            lines = [f"{method} {rng.choice(PATHS)} HTTP/1.1", "Host: agent"]
            lines += rng.sample(HEADERS, rng.randint(0, 3))
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
            with socket.create_connection(server.server_address[:2], timeout=5) as s:
                try:
                    s.sendall(raw + rng.randbytes(rng.choice([0, 0, 16, 300])))
                    s.shutdown(socket.SHUT_WR)
                except OSError:  # the agent answered and closed before reading it all (a 431, a 400)
                    pass
                answer = b"".join(iter(lambda: s.recv(65536), b""))  # all of it: the agent writes to the end
            status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.") else "none"
            statuses[status] = statuses.get(status, 0) + 1
            assert status != "500", raw[:200]
            # No status line only for a request line without a method, which HTTP/0.9 answers bare.
            assert status != "none" or not method, raw[:200]
            return status == "200"

        tally = fuzz(random.Random(SEED), attempt)
        with socket.create_connection(server.server_address[:2], timeout=5) as s:  # still serving
            s.sendall(b"GET /v1/node HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer token\r\nConnection: close\r\n\r\n")
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"200" and json.loads(body)["host"] == "fz", head
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    report(f"fuzz agent requests (seed {SEED}): {tally.tried} inputs, statuses {dict(sorted(statuses.items()))}")
    assert tally.tried > 0
