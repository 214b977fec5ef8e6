"""Latency of one placement decision over a pool: read every agent and engine, then decide.

For 10, 100 and 1000 distinct hosts, each with an agent-like and an engine-like server on
loopback ports of their own, this times what an operator does before it can claim: the one
pool reader (:func:`provider.reservations.pool.read_pool_view`, tidying, as placement reads:
every agent's ``/v1/node`` and every engine's list of reservation containers) plus the room
decision (:func:`provider.reservations.room.room`, ``--policy``, default least_loaded). Beside
it, the agents alone plus ``place()`` (what an operator did before engines' claims were
counted), and the reader with each engine also asked for the task's image (what the operator
does with the locality term on, ``docs/images.md``). The agents answer with the agent's own
``/v1/node`` documents (``NodeSample.to_json`` over simulated GPUs: 8, 4, 2 or no GPUs per
host); the engines with the container list a Docker engine sends for 0 to 3 claims made by
:func:`provider.reservations.rules.claim_labels` and their running tasks, its ``/info`` with an
``nvidia`` runtime (asked once per engine and process, as the reader does), and its answer
about the image (every third engine has it). One helper process serves them all, which leaves
the other core of a two-core machine to the reader; each answer is rendered once, so the
measurement is dominated by the reading side, as it is when every host is a machine of its own.

    python -m bench.placement_latency [--sizes 10,100,1000] [--json PATH] [--reps N] [--budget-s S]

``--sizes 2,5 --reps 3`` is a smoke run of a few seconds (tests/unit/test_bench_smoke.py).

Bars: p50 <= 50 ms at 100 hosts and <= 500 ms at 1000 hosts, with the engines' claims.

The servers answer like the real ones: HTTP/1.1 requests are kept alive (the agent sends a
Content-Length; the engine, like Go's net/http in dockerd, a Content-Length up to 2048 bytes and
chunked encoding above). The reader keeps one
connection per agent and engine on the process's I/O loop (``run_sync``), so after the two
warm-up reads of a pass no read opens a connection, except where one engine is asked two things
at once (its list and the image): the second connection is closed after its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provider.agent.sampler import NodeSample  # noqa: E402
from provider.agent.simulated import SimulatedBackend, SimulatedGpu  # noqa: E402
from provider.limits import MAX_CONCURRENT_HOSTS  # noqa: E402
from provider.reservations.measured import measure as measure_agents  # noqa: E402
from provider.clients.engine_sync import run_sync  # noqa: E402
from provider.clients.hosts import HostConfig  # noqa: E402
from provider.reservations.pool import read_pool_view  # noqa: E402
from provider.reservations.room import room  # noqa: E402
from provider.labels import OWNER_LABEL  # noqa: E402
from provider.reservations.rules import claim_labels  # noqa: E402
from provider.scheduling import POLICIES, PlacementContext, Policy, get_policy, place  # noqa: E402
from provider.scheduling.model import PlacementRequest  # noqa: E402

SIZES = (10, 100, 1000)
BARS_MS = {100: 50.0, 1000: 500.0}
HELPERS = 1
GPU_SHAPES = ((8, "A100-80GB", 81920), (4, "A100-80GB", 81920), (2, "T4", 16384), (0, "", 0))
REQUEST = PlacementRequest(gpus=2, cpu_milli=4000, memory_mb=16384)
IMAGE = "registry.example.com/team/trainer:1.2"
"""The task's image in the third column; every third engine answers that it has it."""
DEPLOYMENT = "bench"
"""The deployment the benchmark reads as, and whose claims its engines list."""
IMAGE_BYTES = 1_080_000_000


GO_CHUNKING_BYTES = 2048
"""Go's net/http sends a body it did not buffer whole in chunks; dockerd's answers over this size."""


def rendered(doc: object, status: str = "200 OK", chunked_over: int | None = None) -> bytes:
    """One HTTP/1.1 answer, rendered once."""
    body = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
    head = "Content-Type: application/json\r\n"
    if chunked_over is not None and len(body) > chunked_over:
        return (f"HTTP/1.1 {status}\r\n{head}Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode()
                + body + b"\r\n0\r\n\r\n")
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def agent_document(index: int, rng: random.Random) -> bytes:
    """The answers carrying the ``/v1/node`` document an agent would send."""
    count, model, memory = GPU_SHAPES[index % len(GPU_SHAPES)]
    inventory = [
        SimulatedGpu(model, memory, ((0.0, rng.uniform(0, 100), rng.randrange(memory // 2 + 1)),), power_w=250.0)
        for _ in range(count)
    ]
    backend = SimulatedBackend(inventory, lambda: 0.0, uuid_prefix=f"bench-{index}")
    cpus = tuple(range(32))
    sample = NodeSample(
        host=f"gpu-{index:04d}",
        sampled_at=datetime.now(timezone.utc),
        cpus=cpus,
        cpu_pct=tuple(rng.uniform(0, 100) for _ in cpus),
        load_avg=(4.0, 3.5, 3.0),
        memory_total_bytes=256 << 30,
        memory_available_bytes=rng.randrange(32 << 30, 256 << 30),
        disk_path="/var/lib/docker",
        disk_requested_path="/var/lib/docker",
        disk_total_bytes=2 << 40,
        disk_free_bytes=1 << 40,
        gpu_backend=backend.name,
        gpus=tuple(backend.read()),
        gpu_reason=backend.reason,
    )
    return rendered(json.dumps(sample.to_json(), separators=(",", ":")).encode())


def engine_documents(index: int, rng: random.Random) -> tuple[bytes, ...]:
    """An engine's answers: its container list (0 to 3 claims, each with its running task), its
    ``/info``, and its answer about the task's image (every third host has it)."""
    count = GPU_SHAPES[index % len(GPU_SHAPES)][0]
    listed: list[dict[str, object]] = []
    for n in range(min(count, rng.randrange(4))):
        owner = f"owner{index}x{n}"
        labels = claim_labels(PlacementRequest(gpus=1, cpu_milli=2000), (n,), owner, None, deployment=DEPLOYMENT)
        listed.append({"Id": f"{index:08x}{n:056x}", "Names": [f"/claim-{index}-{n}"], "State": "created",
                       "Created": int(time.time()), "Labels": labels})
        listed.append({"Id": f"{index:08x}{n + 8:056x}", "Names": [f"/task-{index}-{n}"], "State": "running",
                       "Labels": {OWNER_LABEL: owner}})
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    info = rendered({"Runtimes": {"nvidia": {}, "runc": {}}, "ServerVersion": "20.10", "SystemTime": now},
                    chunked_over=GO_CHUNKING_BYTES)
    if index % 3 == 0:
        image = rendered({"Id": f"sha256:{index:064x}", "Size": IMAGE_BYTES}, chunked_over=GO_CHUNKING_BYTES)
    else:
        image = rendered({"message": f"No such image: {IMAGE}"}, "404 Not Found", GO_CHUNKING_BYTES)
    return rendered(listed, chunked_over=GO_CHUNKING_BYTES), info, image


def serve(indices: Sequence[int], conn: Connection) -> None:
    """Helper process: an agent and an engine listener per host; sends their ports, serves until told to stop."""
    async def main() -> None:
        rng = random.Random(indices[0] if indices else 0)
        servers = []
        open_connections: set[asyncio.Task[object]] = set()

        def answering(*responses: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
            """A server that sends ``responses[0]``, or ``responses[1]`` to a request for ``/info``
            and ``responses[2]`` to one for an image, on a connection kept alive."""
            async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = asyncio.current_task()
                if task is not None:
                    open_connections.add(task)
                try:
                    while True:
                        head = await reader.readuntil(b"\r\n\r\n")
                        writer.write(responses[1] if b"/info " in head else responses[2] if b"/images/" in head
                                     else responses[0])
                        await writer.drain()
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                        asyncio.CancelledError):
                    pass  # cancelled: the helper stops
                finally:
                    writer.close()
                    open_connections.discard(task)  # type: ignore[arg-type]
            return answer

        for index in indices:
            agent = agent_document(index, rng)
            servers.append(await asyncio.start_server(answering(agent, agent, agent), "127.0.0.1", 0, backlog=512))
            servers.append(await asyncio.start_server(answering(*engine_documents(index, rng)), "127.0.0.1", 0,
                                                      backlog=512))
        conn.send([s.sockets[0].getsockname()[1] for s in servers])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        for s in servers:
            s.close()
        for task in list(open_connections):  # the reader's kept-alive connections
            task.cancel()
        await asyncio.gather(*open_connections, return_exceptions=True)

    asyncio.run(main())


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            sys.exit(f"Need {needed} open files, the hard limit is {hard}: raise it (ulimit -Hn) or bench fewer hosts.")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (with fewer than 100 values, p99 is the maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


Decide = Callable[[Sequence[HostConfig]], tuple[str, int]]
"""One decision over the hosts: the chosen host and how many hosts could not be read."""


def with_claims(policy: Policy, context: PlacementContext, image: str | None = None) -> Decide:
    """What the operator does: the one pool reader (agents and engines, and with ``image`` each
    engine's answer about the task's image), then the room decision."""
    def decide(hosts: Sequence[HostConfig]) -> tuple[str, int]:
        view = run_sync(read_pool_view(hosts, agent_timeout=2.0, image=image, deployment=DEPLOYMENT))
        answer = room(REQUEST, view, policy, context)
        return (answer.placement.node if answer.placement else "(none)"), sum(1 for n in view.nodes if n.unreachable)
    return decide


def agents_only(policy: Policy, context: PlacementContext) -> Decide:
    """The agents alone and ``place()``: what a read without the engines' claims costs."""
    def decide(hosts: Sequence[HostConfig]) -> tuple[str, int]:
        nodes = run_sync(measure_agents(hosts, 2.0))
        return place(REQUEST, nodes, policy, context).node, sum(1 for n in nodes if n.unreachable)
    return decide


def timed(hosts: Sequence[HostConfig], decide: Decide, reps: int, budget_s: float) -> tuple[list[float], int, str]:
    """Time one decision ``reps`` times (2 warm-up runs first, which connect), within ``budget_s``."""
    for _ in range(2):
        decide(hosts)
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    chosen, unreachable = "", 0
    while len(times) < reps and time.monotonic() < deadline:
        started = time.perf_counter()
        chosen, down = decide(hosts)
        times.append((time.perf_counter() - started) * 1000)
        unreachable = max(unreachable, down)
    return times, unreachable, chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--reps", type=int, default=50, help="timed runs per size (default 50)")
    parser.add_argument("--policy", default="least_loaded", choices=sorted(POLICIES), help="placement policy")
    parser.add_argument("--budget-s", type=float, default=40.0, help="time limit per size and reader (default 40 s)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="pool sizes, comma-separated (default 10,100,1000)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    total = max(sizes)
    # Kept alive: 2 connections per host in the reader and 2 in the helper, plus those in flight.
    raise_fd_limit(total * 4 + 4 * MAX_CONCURRENT_HOSTS + 256)
    ctx = multiprocessing.get_context("fork")
    helpers, pipes = [], []
    try:
        for h in range(HELPERS):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(list(range(h, total, HELPERS)), theirs), daemon=True)
            proc.start()
            helpers.append(proc)
            pipes.append(ours)
        ports: dict[int, tuple[int, int]] = {}
        for h, pipe in enumerate(pipes):
            if not pipe.poll(120):
                sys.exit(f"helper {h} did not start within 120 s")
            found = pipe.recv()
            ports.update(zip(range(h, total, HELPERS), zip(found[0::2], found[1::2])))
        hosts = [  # the helpers' engine-like listeners speak plain HTTP on loopback: insecure says so
            HostConfig(name=f"gpu-{i:04d}", docker_url=f"tcp://127.0.0.1:{ports[i][1]}",
                       agent_url=f"http://127.0.0.1:{ports[i][0]}", insecure=True)
            for i in range(total)
        ]
        policy, context = get_policy(args.policy), PlacementContext(rng=random.Random(0))
        print(f"decision: read_pool_view + room, policy {args.policy}; request: {REQUEST}")
        print(f"{'hosts':>6} {'runs':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'agents-only p50':>16} "
              f"{'+image p50':>11} {'+image p95':>11} {'bar p50':>8} {'ok':>4} {'unreach':>7}  chosen")
        figures: dict[str, dict[str, float]] = {name: {} for name in (
            "p50_ms", "p95_ms", "p99_ms", "agents_only_p50_ms", "agents_only_p95_ms", "with_image_p50_ms",
            "with_image_p95_ms")}
        ok = True
        for size in sizes:
            times, unreachable, chosen = timed(hosts[:size], with_claims(policy, context), args.reps, args.budget_s)
            alone, down, _ = timed(hosts[:size], agents_only(policy, context), args.reps, args.budget_s)
            imaged, gone, _ = timed(hosts[:size], with_claims(policy, context, IMAGE), args.reps, args.budget_s)
            key = str(size)
            for name, values in (("", times), ("agents_only_", alone), ("with_image_", imaged)):
                for q in (50, 95, 99):
                    if f"{name}p{q}_ms" in figures:
                        figures[f"{name}p{q}_ms"][key] = round(percentile(values, q), 2)
            bar = BARS_MS.get(size)
            met = bar is None or figures["p50_ms"][key] <= bar
            ok = ok and met and unreachable == down == gone == 0
            print(f"{size:>6} {len(times):>5} {figures['p50_ms'][key]:>8.2f} {figures['p95_ms'][key]:>8.2f} "
                  f"{figures['p99_ms'][key]:>8.2f} {figures['agents_only_p50_ms'][key]:>16.2f} "
                  f"{figures['with_image_p50_ms'][key]:>11.2f} {figures['with_image_p95_ms'][key]:>11.2f} "
                  f"{'-' if bar is None else f'{bar:.0f}':>8} {'yes' if met else 'NO':>4} "
                  f"{max(unreachable, down, gone):>7}  {chosen}")
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for proc in helpers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    if args.json:
        args.json.write_text(json.dumps({**figures, "policy": args.policy}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
