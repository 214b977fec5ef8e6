"""Latency of one placement decision over a pool: read every agent, then choose a host.

For 10, 100 and 1000 distinct hosts, each an agent-like server on its own loopback port,
this times ``NodeMetricsHook.snapshot()`` plus ``provider.scheduling.place`` (``--policy``,
default least_loaded), which is the work an operator does before it can start a container. The servers answer with the agent's
own ``/v1/node`` documents (``NodeSample.to_json`` over simulated GPUs: 8, 4, 2 or no GPUs per
host) from one helper process, which leaves the other core of a two-core machine to the
reader; each answer is rendered once, so the measurement is dominated by the reading side,
as it is when every agent runs on its own host.

    python bench/placement_latency.py [--json PATH] [--reps N] [--budget-s S]

Bars: p50 <= 50 ms at 100 hosts and <= 500 ms at 1000 hosts.
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
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provider.agent.sampler import NodeSample  # noqa: E402
from provider.agent.simulated import SimulatedBackend, SimulatedGpu  # noqa: E402
from provider.hooks.hosts import HostConfig  # noqa: E402
from provider.hooks.node_metrics import NodeMetricsHook  # noqa: E402
from provider.scheduling import POLICIES, PlacementContext, get_policy, place  # noqa: E402
from provider.scheduling.model import NodeState, Placement, PlacementRequest  # noqa: E402

SIZES = (10, 100, 1000)
BARS_MS = {100: 50.0, 1000: 500.0}
HELPERS = 1
GPU_SHAPES = ((8, "A100-80GB", 81920), (4, "A100-80GB", 81920), (2, "T4", 16384), (0, "", 0))
REQUEST = PlacementRequest(gpus=2, cpu_milli=4000, memory_mb=16384)


def agent_document(index: int, rng: random.Random) -> bytes:
    """An HTTP/1.0 response carrying the ``/v1/node`` document an agent would send."""
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
    body = json.dumps(sample.to_json(), separators=(",", ":")).encode()
    head = f"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def serve(indices: Sequence[int], conn: Connection) -> None:
    """Helper process: one loopback listener per host; sends its ports, serves until told to stop."""
    async def main() -> None:
        rng = random.Random(indices[0] if indices else 0)
        servers = []
        for index in indices:
            response = agent_document(index, rng)

            async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: bytes = response) -> None:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(response)
                    await writer.drain()
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass
                finally:
                    writer.close()

            servers.append(await asyncio.start_server(answer, "127.0.0.1", 0, backlog=512))
        conn.send([s.sockets[0].getsockname()[1] for s in servers])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        for s in servers:
            s.close()

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


def measure(hosts: Sequence[HostConfig], decide: Callable[[PlacementRequest, Sequence[NodeState]], Placement],
            reps: int, budget_s: float) -> tuple[list[float], int, str]:
    """Time snapshot + decision ``reps`` times (2 warm-up runs first), within ``budget_s``."""
    hook = NodeMetricsHook(hosts=hosts, timeout=2.0)
    for _ in range(2):
        decide(REQUEST, hook.snapshot())
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    unreachable, chosen = 0, ""
    while len(times) < reps and time.monotonic() < deadline:
        started = time.perf_counter()
        nodes = hook.snapshot()
        decision = decide(REQUEST, nodes)
        times.append((time.perf_counter() - started) * 1000)
        unreachable = max(unreachable, sum(1 for n in nodes if n.unreachable))
        chosen = decision.node
    return times, unreachable, chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--reps", type=int, default=50, help="timed runs per size (default 50)")
    parser.add_argument("--policy", default="least_loaded", choices=sorted(POLICIES), help="placement policy")
    parser.add_argument("--budget-s", type=float, default=40.0, help="time limit per size (default 40 s)")
    args = parser.parse_args()
    total = max(SIZES)
    raise_fd_limit(total * 2 + 2 * NodeMetricsHook(hosts=[]).max_concurrency + 256)
    ctx = multiprocessing.get_context("fork")
    helpers, pipes, ports = [], [], []
    try:
        for h in range(HELPERS):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(list(range(h, total, HELPERS)), theirs), daemon=True)
            proc.start()
            helpers.append(proc)
            pipes.append(ours)
        by_index: dict[int, int] = {}
        for h, pipe in enumerate(pipes):
            if not pipe.poll(60):
                sys.exit(f"helper {h} did not start within 60 s")
            by_index.update(zip(range(h, total, HELPERS), pipe.recv()))
        hosts = [
            HostConfig(name=f"gpu-{i:04d}", docker_url="tcp://127.0.0.1:2376", agent_url=f"http://127.0.0.1:{by_index[i]}")
            for i in range(total)
        ]
        policy, context = get_policy(args.policy), PlacementContext(rng=random.Random(0))
        name = f"provider.scheduling.place, policy {args.policy}"

        def decide(request: PlacementRequest, nodes: Sequence[NodeState]) -> Placement:
            return place(request, nodes, policy, context)

        print(f"placement: {name}; request: {REQUEST}")
        print(f"{'hosts':>6} {'runs':>5} {'p50 ms':>8} {'p99 ms':>8} {'bar p50':>8} {'ok':>4} {'unreach':>7}  chosen")
        p50: dict[str, float] = {}
        p99: dict[str, float] = {}
        ok = True
        for size in SIZES:
            times, unreachable, chosen = measure(hosts[:size], decide, args.reps, args.budget_s)
            p50[str(size)] = round(percentile(times, 50), 2)
            p99[str(size)] = round(percentile(times, 99), 2)
            bar = BARS_MS.get(size)
            met = bar is None or p50[str(size)] <= bar
            ok = ok and met and unreachable == 0
            print(f"{size:>6} {len(times):>5} {p50[str(size)]:>8.2f} {p99[str(size)]:>8.2f} "
                  f"{'-' if bar is None else f'{bar:.0f}':>8} {'yes' if met else 'NO':>4} {unreachable:>7}  {chosen}")
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for proc in helpers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    if args.json:
        args.json.write_text(json.dumps({"p50_ms": p50, "p99_ms": p99, "placement": name}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
