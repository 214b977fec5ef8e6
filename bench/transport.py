"""Which HTTP transport should read a pool: the provider's own keep-alive reader or aiohttp, measured.

A placement decision reads every host of a pool: each node agent's ``/v1/node`` and each Docker
engine's list of reservation containers. This benchmark reads N such hosts concurrently on one
asyncio loop, as the pool reader does (agents first, then engines, at most 256 requests at a
time), with two transports:

* ``provider``: the provider's reader, :mod:`provider.clients.connections` over
  :mod:`provider.clients.http11`: one ``Pool`` kept across reads (at most one idle HTTP/1.1
  connection per agent and per engine), each request bounded by ``within`` as the agent and
  engine clients bound theirs;
* ``aiohttp``: one ``aiohttp.ClientSession`` kept across reads, ``TCPConnector(limit=0,
  limit_per_host=1)``, so one kept-alive HTTP/1.1 connection per agent and per engine;

each over plain TCP and over TLS (a CA made with ``tools/pki.py``; the agents are served with a
server certificate, the engines also demand a client certificate as ``dockerd --tlsverify``
does; the clients verify the servers with that CA).

One helper process serves every host, an agent-like and an engine-like listener per host on
loopback ports of their own, with answers rendered once and connections kept alive: the agent's
answer carries a Content-Length and the engine's, like Go's net/http, a Content-Length up to
2048 bytes and chunked encoding above (as dockerd does). Each configuration gets a fresh helper,
so fresh ports; sockets in TIME_WAIT that an earlier configuration left on a port the kernel
hands out again are not counted.

Per configuration: p50 and p95 wall time of one full read (all agents, then one container list
per engine) and the p50 of each phase, the reader's CPU per read (process time), the helper's
CPU per read (the servers' side; all hosts share one core here, where a real pool has a machine
per host), the first read (in which both transports connect; it is not timed), and after the
timed reads, the client's open sockets and the sockets in TIME_WAIT on the helper's ports
(``/proc/net/tcp``). Every configuration runs ``--rounds`` times (default 2, in alternating
order); the summary is the median over rounds, and the provider's speed-up over aiohttp the
median of the ratios within a round (aiohttp's p50 / the provider's). Beside the pool, one engine
on a unix socket (the helper's, or a real one with ``--unix-engine``) is read 300 times in a row
per transport: per-request wall time and CPU.

    python -m bench.transport [--hosts 100,1000] [--reps N] [--rounds R] [--smoke] [--json PATH]
    python -m bench.transport --merge A.json B.json ... [--json PATH]   # several runs' rounds pooled

Default reps: 30 reads at 100 hosts, 15 at 1000 (after one warm-up read), within ``--budget-s``
(20 s; at least 5 reads). ``--smoke``: 5 hosts, 2 reps, one round. Figures and the decision:
docs/transport.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import resource
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The provider code under test: the only imports from provider/.
from provider.clients.connections import Endpoint, Pool, within  # noqa: E402
from provider.clients.http11 import decode_json  # noqa: E402

import aiohttp  # noqa: E402
import yarl  # noqa: E402

from tools.pki import Pki, make_pki  # noqa: E402

HOST = "127.0.0.1"
TRANSPORTS = ("provider", "aiohttp")
MAX_CONCURRENCY = 256
"""As the pool reader: at most this many requests at once (agents, then engines)."""
TIMEOUT_S = 30.0
"""Per request. The provider's reader allows an agent 2 s, but here one helper process on one
core answers every host, and in the first read at 1000 TLS hosts, which makes every handshake,
it cannot answer all within 2 s: a generous limit lets every read finish and be timed (a read
with requests cut short would look faster than it is)."""
POOL_MAX_IDLE = 4096
"""The provider's pool keeps up to this many idle connections: a read of 1000 hosts leaves 2000
(an agent and an engine per host), more than the default (half the soft open-file limit) may
allow."""
POOL_IDLE_S = 600.0
"""Idle connections are kept this long, so none expires between the reads of a configuration."""
BUDGET_S = 20.0
"""Timed reads stop after this long (at least ``MIN_REPS`` reads), to keep a run within minutes."""
MIN_REPS = 5
DEFAULT_REPS = {100: 30, 1000: 15}
GO_CHUNKING_BYTES = 2048
"""Go's net/http sends a body it cannot buffer whole (over 2048 bytes) chunked on HTTP/1.1."""
TOKEN = "bench-token"
LABEL = "airflow-gpu-docker.reservation"
LIST_PATH = "/v1.41/containers/json?all=1&filters=" + quote(json.dumps({"label": [LABEL]}))
UNIX_REQUESTS = 300
SPEEDUP_TO_KEEP = 1.5
"""The issue's rule: keep the hand-written reader only where it is at least this much faster."""


# -- documents --------------------------------------------------------------------------------

GPU_SHAPES = ((8, "NVIDIA A100-SXM4-80GB", 81920), (4, "NVIDIA A100-SXM4-80GB", 81920), (2, "Tesla T4", 16384),
              (0, "", 0))


def agent_body(index: int, rng: random.Random) -> bytes:
    """A ``/v1/node`` document (schema 1, docs/agent.md) of a 32-CPU host with 8, 4, 2 or no GPUs."""
    count, model, memory = GPU_SHAPES[index % len(GPU_SHAPES)]
    per_cpu = [{"cpu": c, "utilization_pct": round(rng.uniform(0, 100), 2)} for c in range(32)]
    gpus = []
    for g in range(count):
        used = rng.randrange(memory // 2 + 1)
        gpus.append({"index": g, "uuid": f"GPU-{index:08x}-{g:04x}-bench", "name": model,
                     "memory_total_mib": memory, "memory_used_mib": used, "memory_reserved_mib": 512,
                     "memory_free_mib": memory - used - 512, "utilization_pct": round(rng.uniform(0, 100), 1),
                     "temperature_c": 41.0, "power_w": 250.0,
                     "processes": [{"pid": 4000 + g, "used_memory_mib": used}] if used else []})
    doc = {"schema": 1, "host": f"gpu-{index:04d}", "sampled_at": "2025-05-01T12:00:00.123456Z",
           "cpu": {"count": 32, "utilization_pct": round(sum(c["utilization_pct"] for c in per_cpu) / 32, 2),
                   "per_cpu": per_cpu, "load_avg": {"1m": 4.0, "5m": 3.5, "15m": 3.0}},
           "memory": {"total_bytes": 256 << 30, "available_bytes": rng.randrange(32 << 30, 256 << 30)},
           "disk": {"path": "/var/lib/docker", "requested_path": "/var/lib/docker", "total_bytes": 2 << 40,
                    "free_bytes": 1 << 40},
           "gpu_backend": "nvml" if count else "none", "gpu_reason": None if count else "no NVIDIA driver",
           "gpus": gpus}
    return json.dumps(doc, separators=(",", ":")).encode()


def engine_body(index: int, rng: random.Random) -> bytes:
    """A Docker engine's container list for 0 to 3 claims, each with its running task, with the
    fields the engine sends for each container."""
    listed = []
    for n in range(min(GPU_SHAPES[index % len(GPU_SHAPES)][0], rng.randrange(4))):
        owner = f"owner{index}x{n}"
        for kind, number, state in (("claim", n, "created"), ("task", n + 8, "running")):
            labels = ({LABEL: "claim", f"{LABEL}.owner": owner, f"{LABEL}.gpus": str(n), f"{LABEL}.cpu-milli": "2000",
                       f"{LABEL}.memory-mb": "0", f"{LABEL}.created": "1746100800.123"}
                      if kind == "claim" else {f"{LABEL}.owner": owner})
            listed.append({
                "Id": f"{index:08x}{number:056x}", "Names": [f"/{kind}-{index}-{n}"],
                "Image": "registry.example.com/team/trainer:1.2", "ImageID": f"sha256:{index:064x}",
                "Command": "true" if kind == "claim" else "python train.py", "Created": 1746100800,
                "Ports": [], "Labels": labels, "State": state,
                "Status": "Created" if kind == "claim" else "Up 2 hours",
                "HostConfig": {"NetworkMode": "none"}, "NetworkSettings": {"Networks": {}}, "Mounts": [],
            })
    return json.dumps(listed, separators=(",", ":")).encode()


def rendered(body: bytes, go_chunking: bool) -> bytes:
    """A listener's answer, rendered once: HTTP/1.1, its body by Content-Length, or chunked above
    2048 bytes where ``go_chunking`` (the engine, as Go's net/http sends it)."""
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if go_chunking and len(body) > GO_CHUNKING_BYTES:
        return f"{head}Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


# -- the helper process: every host's servers --------------------------------------------------

def answering(answer: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A connection handler: every request on the connection gets ``answer``, until the client
    closes it (both transports keep their connections alive)."""
    async def answer_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
    return answer_all


def serve(count: int, seed: int, tls: Pki | None, unix_path: str | None, conn: Connection) -> None:
    """Helper process: an agent and an engine listener per host (and an engine on ``unix_path``);
    sends their ports, then serves until told to stop."""
    async def main() -> None:
        agent_tls = engine_tls = None
        if tls is not None:
            agent_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            agent_tls.load_cert_chain(tls.server_cert, tls.server_key)
            engine_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            engine_tls.load_cert_chain(tls.server_cert, tls.server_key)
            engine_tls.load_verify_locations(tls.ca)
            engine_tls.verify_mode = ssl.CERT_REQUIRED
        rng = random.Random(seed)
        servers = []
        ports = []
        for index in range(count):
            agent = rendered(agent_body(index, rng), go_chunking=False)
            engine = rendered(engine_body(index, rng), go_chunking=True)
            for answer, context in ((agent, agent_tls), (engine, engine_tls)):
                server = await asyncio.start_server(answering(answer), HOST, 0, backlog=1024, ssl=context)
                servers.append(server)
                ports.append(server.sockets[0].getsockname()[1])
        if unix_path is not None:
            engine = rendered(engine_body(1, random.Random(1)), go_chunking=True)
            servers.append(await asyncio.start_unix_server(answering(engine), unix_path, backlog=1024))
        conn.send(ports)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        for server in servers:
            server.close()

    asyncio.run(main())


class Helper:
    """The helper process serving ``count`` hosts, stopped (by its pid) on exit."""

    def __init__(self, count: int, tls: Pki | None, unix_path: str | None = None, seed: int = 0) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipe, theirs = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(count, seed, tls, unix_path, theirs), daemon=True)
        self.count = count

    def __enter__(self) -> list[tuple[int, int]]:
        self.process.start()
        if not self.pipe.poll(120):
            self.stop()
            raise RuntimeError("the helper did not start its servers within 120 s")
        ports = self.pipe.recv()
        return list(zip(ports[0::2], ports[1::2]))

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.pipe.send("stop")
            except OSError:
                pass
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the transports ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One request of a read: where it goes and what it sends, in the form each transport takes."""

    endpoint: Endpoint
    path: str
    host: str
    headers: Mapping[str, str]
    url: yarl.URL
    what: str


class BadAnswer(Exception):
    """A host answered, but not with what a pool read expects (a status other than 200, or
    another document)."""


class Transport:
    """A client kept across the reads of one configuration."""

    async def fetch(self, r: Request) -> tuple[int, bytes]:
        """Status and body of one request, within ``TIMEOUT_S``."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Provider(Transport):
    """The provider's reader: one pool kept across reads, each request within the timeout by
    ``within``, as the agent and engine clients call it."""

    def __init__(self) -> None:
        self.pool = Pool(max_idle=POOL_MAX_IDLE, idle_s=POOL_IDLE_S)

    async def fetch(self, r: Request) -> tuple[int, bytes]:
        answer = await within(self.pool.request(r.endpoint, "GET", r.path, host=r.host, what=r.what,
                                                headers=r.headers), TIMEOUT_S)
        return answer.status, answer.body

    async def close(self) -> None:
        self.pool.close()


class Aiohttp(Transport):
    """aiohttp with one session for every read: one kept-alive connection per host and port (or
    to the engine's socket at ``unix``)."""

    def __init__(self, unix: str | None = None) -> None:
        self.session = aiohttp.ClientSession(
            connector=(aiohttp.UnixConnector(path=unix) if unix else
                       aiohttp.TCPConnector(limit=0, limit_per_host=1, keepalive_timeout=60.0)),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def fetch(self, r: Request) -> tuple[int, bytes]:
        """The session's ClientTimeout bounds each request."""
        async with self.session.get(r.url, headers=r.headers, ssl=r.endpoint.tls or True) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        await self.session.close()


def transport(name: str, unix: str | None = None) -> Transport:
    """A client of transport ``name``; aiohttp's session is bound to the engine socket ``unix``
    if given (the provider's pool takes the socket from each request's endpoint)."""
    return Provider() if name == "provider" else Aiohttp(unix)


# -- one read of the pool ---------------------------------------------------------------------

@dataclass(frozen=True)
class Contexts:
    agent: ssl.SSLContext
    engine: ssl.SSLContext

    @classmethod
    def made(cls, pki: Pki) -> Contexts:
        """What the clients verify with: the CA; the engine also gets the client certificate."""
        agent = ssl.create_default_context(cafile=str(pki.ca))
        engine = ssl.create_default_context(cafile=str(pki.ca))
        engine.load_cert_chain(pki.client_cert, pki.client_key)
        return cls(agent, engine)


def pool_requests(ports: Sequence[tuple[int, int]], contexts: Contexts | None) -> tuple[list[Request], list[Request]]:
    """The agents' and the engines' requests, built once as a client keeps its hosts' URLs."""
    scheme = "https" if contexts else "http"
    agents, engines = [], []
    for agent_port, engine_port in ports:
        path = "/v1/node"
        agents.append(Request(Endpoint(HOST, agent_port, contexts.agent if contexts else None), path,
                              f"{HOST}:{agent_port}", {"Authorization": f"Bearer {TOKEN}"},
                              yarl.URL(f"{scheme}://{HOST}:{agent_port}{path}", encoded=True),
                              f"agent {scheme}://{HOST}:{agent_port}"))
        engines.append(Request(Endpoint(HOST, engine_port, contexts.engine if contexts else None), LIST_PATH,
                               f"{HOST}:{engine_port}", {},
                               yarl.URL(f"{scheme}://{HOST}:{engine_port}{LIST_PATH}", encoded=True),
                               f"engine {scheme}://{HOST}:{engine_port}"))
    return agents, engines


async def read_pool(client: Transport, agents: Sequence[Request], engines: Sequence[Request],
                    phases: list[tuple[float, float]] | None = None) -> int:
    """One read: every agent's document, then every engine's list, decoded; the failures' count.
    Each phase's wall and CPU time (ms) are appended to ``phases``."""
    gate = asyncio.Semaphore(MAX_CONCURRENCY)

    async def agent(r: Request) -> None:
        async with gate:
            status, body = await client.fetch(r)
        doc = decode_json(body, r.what)
        if status != 200 or doc.get("schema") != 1:
            raise BadAnswer(f"{r.what}: HTTP {status}")

    async def engine(r: Request) -> None:
        async with gate:
            status, body = await client.fetch(r)
        if status != 200 or not isinstance(decode_json(body, r.what), list):
            raise BadAnswer(f"{r.what}: HTTP {status}")

    failed = 0
    for phase, targets in ((agent, agents), (engine, engines)):
        started, cpu = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(phase(r) for r in targets), return_exceptions=True)
        failed += sum(1 for r in results if isinstance(r, BaseException))
        if phases is not None:
            phases.append(((time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000))
    return failed


# -- sockets ----------------------------------------------------------------------------------

def tcp_table(ports: set[int]) -> tuple[int, set[tuple[int, int]]]:
    """From ``/proc/net/tcp``: the client's open connections to ``ports``, and the sockets in
    TIME_WAIT on them (local and remote port)."""
    established, waiting = 0, set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[3]
        if state == "01" and remote in ports:
            established += 1
        elif state == "06" and (local in ports or remote in ports):
            waiting.add((local, remote))
    return established, waiting


def sockets(ports: set[int], earlier: set[tuple[int, int]]) -> dict[str, int]:
    """The client's open connections, and the sockets in TIME_WAIT that were not there before
    (``earlier``: a fresh helper's port may be one an earlier configuration's helper used), on
    the servers' side and on the client's."""
    established, waiting = tcp_table(ports)
    new = waiting - earlier
    server = sum(1 for local, _ in new if local in ports)
    return {"open_sockets": established, "time_wait": len(new), "time_wait_server_side": server,
            "time_wait_client_side": len(new) - server}


# -- measuring --------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def measure(name: str, hosts: int, pki: Pki | None, reps: int, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """One configuration: a fresh helper, one warm-up read, ``reps`` timed reads."""
    helper = Helper(hosts, pki)
    with helper as ports:
        contexts = Contexts.made(pki) if pki else None
        agents, engines = pool_requests(ports, contexts)
        port_set = {p for pair in ports for p in pair}

        async def run() -> dict[str, Any]:
            client = transport(name)
            earlier = tcp_table(port_set)[1]
            try:
                started = time.perf_counter()
                failed = await read_pool(client, agents, engines)
                first_ms = (time.perf_counter() - started) * 1000
                walls: list[float] = []
                cpus: list[float] = []
                phases: list[tuple[float, float]] = []
                server_before = helper.cpu_s()
                deadline = time.monotonic() + budget_s
                while len(walls) < reps and (len(walls) < MIN_REPS or time.monotonic() < deadline):
                    started, cpu = time.perf_counter(), time.process_time()
                    failed += await read_pool(client, agents, engines, phases)
                    cpus.append((time.process_time() - cpu) * 1000)
                    walls.append((time.perf_counter() - started) * 1000)
                server_ms = (helper.cpu_s() - server_before) * 1000 / len(walls)
                held = sockets(port_set, earlier)
            finally:
                await client.close()
            return {"transport": name, "tls": pki is not None, "hosts": hosts, "reps": len(walls),
                    "p50_ms": round(percentile(walls, 50), 2), "p95_ms": round(percentile(walls, 95), 2),
                    "cpu_ms": round(statistics.median(cpus), 2), "server_cpu_ms": round(server_ms, 2),
                    "first_read_ms": round(first_ms, 2), **held, "errors": failed,
                    "agents_p50_ms": round(percentile([w for w, _ in phases[0::2]], 50), 2),
                    "agents_cpu_ms": round(statistics.median(c for _, c in phases[0::2]), 2),
                    "engines_p50_ms": round(percentile([w for w, _ in phases[1::2]], 50), 2),
                    "engines_cpu_ms": round(statistics.median(c for _, c in phases[1::2]), 2),
                    "load_avg_1m": os.getloadavg()[0]}

        return asyncio.run(run())


def measure_unix(name: str, count: int, engine: str | None = None) -> dict[str, Any]:
    """One engine on a unix socket (the helper's, or a real one at ``engine``), its container list
    read ``count`` times in a row: per request wall and CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        path = engine or str(Path(tmp) / "engine.sock")
        with contextlib.nullcontext() if engine else Helper(0, None, unix_path=path):
            request = Request(Endpoint(unix=path), LIST_PATH, "docker", {},
                              yarl.URL(f"http://docker{LIST_PATH}", encoded=True), f"engine unix://{path}")

            async def run() -> dict[str, Any]:
                client = transport(name, unix=path)
                try:
                    await client.fetch(request)
                    walls = []
                    cpu = time.process_time()
                    for _ in range(count):
                        started = time.perf_counter()
                        json.loads((await client.fetch(request))[1])
                        walls.append((time.perf_counter() - started) * 1000)
                    cpu_ms = (time.process_time() - cpu) * 1000 / count
                finally:
                    await client.close()
                return {"transport": name, "requests": count, "p50_ms": round(percentile(walls, 50), 3),
                        "p95_ms": round(percentile(walls, 95), 3), "cpu_ms": round(cpu_ms, 3)}
            return asyncio.run(run())


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median over rounds of each figure, with each round's figures."""
    first = runs[0]
    out: dict[str, Any] = {k: first[k] for k in ("transport", "tls", "hosts")}
    out["reps"] = min(r["reps"] for r in runs)
    for key in ("p50_ms", "p95_ms", "cpu_ms", "server_cpu_ms", "first_read_ms", "open_sockets", "time_wait",
                "time_wait_server_side", "time_wait_client_side", "agents_p50_ms", "agents_cpu_ms", "engines_p50_ms",
                "engines_cpu_ms"):
        if any(key in r for r in runs):  # runs of an earlier version of this file lack the phases
            out[key] = round(statistics.median(r[key] for r in runs if key in r), 2)
    out["errors"] = sum(r["errors"] for r in runs)
    out["p50_ms_by_round"] = [r["p50_ms"] for r in runs]
    out["cpu_ms_by_round"] = [r["cpu_ms"] for r in runs]
    for key in ("agents_p50_ms", "engines_p50_ms"):
        out[f"{key}_by_round"] = [r.get(key) for r in runs]
    out["reps_by_round"] = [r["reps"] for r in runs]
    out["load_avg_1m_by_round"] = [round(r["load_avg_1m"], 2) for r in runs]
    return out


def decisions(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size and TLS: how much faster the provider's reader is than aiohttp, as the median of
    the ratios within each round (the transports of a round ran back to back, so under the same
    load from the machine's other work), with the lowest and highest."""
    out = []
    by = {(r["transport"], r["tls"], r["hosts"]): r for r in rows}
    for hosts in sorted({r["hosts"] for r in rows}):
        for tls in (False, True):
            base, ours = by.get(("aiohttp", tls, hosts)), by.get(("provider", tls, hosts))
            if base is None or ours is None:
                continue
            entry: dict[str, Any] = {"hosts": hosts, "tls": tls}
            for figure, key in (("wall", "p50_ms_by_round"), ("cpu", "cpu_ms_by_round"),
                                ("agents_wall", "agents_p50_ms_by_round"),
                                ("engines_wall", "engines_p50_ms_by_round")):
                ratios = [a / p for a, p in zip(base.get(key, []), ours.get(key, [])) if a and p]
                if ratios:
                    entry[f"speedup_{figure}"] = round(statistics.median(ratios), 2)
                    entry[f"speedup_{figure}_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
            entry["keep_hand_written"] = entry.get("speedup_wall", 0.0) >= SPEEDUP_TO_KEEP
            out.append(entry)
    return out


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="100,1000", help="pool sizes, comma-separated (default 100,1000)")
    parser.add_argument("--reps", type=int, help="timed reads per configuration (default 30 at 100 hosts, 15 at "
                                                 "1000, otherwise 20)")
    parser.add_argument("--rounds", type=int, default=2, help="times each configuration runs (default 2)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help=f"stop timed reads of a configuration after this long, at least {MIN_REPS} reads "
                             f"(default {BUDGET_S:g})")
    parser.add_argument("--tls", choices=("both", "plain", "tls"), default="both")
    parser.add_argument("--no-unix", action="store_true", help="skip the unix-socket engine")
    parser.add_argument("--unix-engine", metavar="PATH",
                        help="read a real engine's socket (e.g. /var/run/docker.sock) instead of the helper's")
    parser.add_argument("--smoke", action="store_true", help="5 hosts, 2 reps, one round: does it run at all")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="measure nothing: summarise these runs' --json files together")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.json)
    sizes = [5] if args.smoke else [int(h) for h in args.hosts.split(",")]
    rounds = 1 if args.smoke else args.rounds
    tls_modes = {"both": (False, True), "plain": (False,), "tls": (True,)}[args.tls]
    raise_fd_limit()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 2 * max(sizes) + 512:
        sys.exit(f"Need about {2 * max(sizes) + 512} open files per process, the hard limit is {soft}.")

    results: dict[tuple[str, bool, int], list[dict[str, Any]]] = {}
    unix: dict[str, list[dict[str, Any]]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp))
        for round_ in range(rounds):
            order = TRANSPORTS if round_ % 2 == 0 else TRANSPORTS[::-1]
            for hosts in sizes:
                reps = 2 if args.smoke else args.reps or DEFAULT_REPS.get(hosts, 20)
                for tls in tls_modes:
                    for name in order:
                        row = measure(name, hosts, pki if tls else None, reps, args.budget_s)
                        results.setdefault((name, tls, hosts), []).append(row)
                        print(f"  round {round_ + 1}: {name:<8} {'tls' if tls else 'plain':<5} {hosts:>5} hosts "
                              f"p50 {row['p50_ms']:8.2f} ms  cpu {row['cpu_ms']:8.2f} ms  "
                              f"errors {row['errors']}", file=sys.stderr)
            if not args.no_unix:
                for name in order:
                    unix.setdefault(name, []).append(
                        measure_unix(name, 20 if args.smoke else UNIX_REQUESTS, args.unix_engine))

    return report(results, unix, args.unix_engine, time.monotonic() - started, args.json)


def merge(paths: Sequence[Path], out: Path | None) -> int:
    """The summary of several runs' JSON files together (their rounds pooled); rows of transports
    this file no longer measures are left out."""
    results: dict[tuple[str, bool, int], list[dict[str, Any]]] = {}
    unix: dict[str, list[dict[str, Any]]] = {}
    engines = set()
    for path in paths:
        doc = json.loads(path.read_text())
        for row in doc["runs"]:
            if row["transport"] in TRANSPORTS:
                results.setdefault((row["transport"], row["tls"], row["hosts"]), []).append(row)
        for row in doc["unix_runs"]:
            if row["transport"] in TRANSPORTS:
                unix.setdefault(row["transport"], []).append(row)
        engines.add(doc.get("unix_engine"))
    return report(results, unix, " or ".join(sorted(e or "the helper" for e in engines)), None, out)


def report(results: Mapping[tuple[str, bool, int], list[dict[str, Any]]], unix: Mapping[str, list[dict[str, Any]]],
           unix_engine: str | None, took_s: float | None, out: Path | None) -> int:
    """Print the table (medians over rounds) and the ratios; write the JSON."""
    rows = [summarise(runs) for runs in results.values()]
    rows.sort(key=lambda r: (r["hosts"], r["tls"], TRANSPORTS.index(r["transport"])))
    rounds = max(len(runs) for runs in results.values()) if results else 0
    took = "" if took_s is None else f"; took {took_s:.0f} s"
    print(f"\n{len(os.sched_getaffinity(0))} CPUs; medians over up to {rounds} round(s); wall and CPU per full read "
          f"(agents + one engine list per host; agents, engines: p50 of each phase){took}")
    print(f"{'transport':<9} {'tls':<5} {'hosts':>5} {'reps':>4} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms':>8} "
          f"{'agents':>8} {'engines':>8} {'srv cpu':>8} {'1st ms':>8} {'open':>5} {'TW':>6} {'err':>4}  p50 by round")
    for r in rows:
        print(f"{r['transport']:<9} {'tls' if r['tls'] else 'plain':<5} {r['hosts']:>5} {r['reps']:>4} "
              f"{r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['cpu_ms']:>8.2f} {r.get('agents_p50_ms', math.nan):>8.2f} "
              f"{r.get('engines_p50_ms', math.nan):>8.2f} {r['server_cpu_ms']:>8.2f} "
              f"{r['first_read_ms']:>8.2f} {r['open_sockets']:>5.0f} {r['time_wait']:>6.0f} {r['errors']:>4}  "
              f"{r['p50_ms_by_round']}")
    unix_rows = []
    for name, runs in unix.items():
        unix_rows.append({"transport": name, "requests": runs[0]["requests"],
                          **{k: round(statistics.median(r[k] for r in runs), 3) for k in ("p50_ms", "p95_ms",
                                                                                          "cpu_ms")}})
    if unix_rows:
        print(f"\nengine on a unix socket ({unix_engine or 'the helper'}), its container list, one request "
              "at a time:")
        for u in sorted(unix_rows, key=lambda u: TRANSPORTS.index(u["transport"])):
            print(f"{u['transport']:<9} p50 {u['p50_ms']:.3f} ms  p95 {u['p95_ms']:.3f} ms  cpu {u['cpu_ms']:.3f} ms")
    verdicts = decisions(rows)
    print(f"\nprovider vs aiohttp, aiohttp's p50 / the provider's per round, median [range] (the rule: keep the "
          f"hand-written reader only at >= {SPEEDUP_TO_KEEP}x):")
    for d in verdicts:
        print(f"  {d['hosts']:>5} hosts {'tls' if d['tls'] else 'plain':<5}  {d['speedup_wall']}x "
              f"{d['speedup_wall_range']} (cpu {d['speedup_cpu']}x {d['speedup_cpu_range']}, "
              f"agents {d.get('speedup_agents_wall')}x, engines {d.get('speedup_engines_wall')}x)  -> "
              f"{'the provider' if d['keep_hand_written'] else 'aiohttp'}")
    if out:
        out.write_text(json.dumps({
            "machine": {"cpus": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
                        "aiohttp": aiohttp.__version__, "load_avg_at_end": os.getloadavg()},
            "rounds": rounds, "configurations": rows, "unix_socket": unix_rows, "decisions": verdicts,
            "unix_engine": unix_engine, "runs": [r for runs in results.values() for r in runs],
            "unix_runs": [r for runs in unix.values() for r in runs],
        }, indent=2) + "\n")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
