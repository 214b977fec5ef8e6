"""A container's output as a stream: the hand-written reader against aiohttp, on a real engine.

The pool read's transport was decided by measurement (``bench/transport.py``,
``docs/transport.md``); this decides the streams'. A private Docker engine runs a container that
prints ``--lines`` lines (``seq``) and exits; then its whole log is read, ``--reps`` times in
turn by each client, through ``GET /containers/ID/logs`` (the multiplexed frames the log
follower reads after a drop, and attach sends alike):

* ``hand_written``: the pool's reader (:mod:`provider.clients.http11`) on a connection of its
  own, HTTP/1.1 (the engine sends the log chunked), read chunk by chunk as the log follower does;
* ``aiohttp``: what the provider reads streams with, :meth:`provider.clients.engine.AsyncEngine.logs`
  (:mod:`provider.clients.streams`).

Both only count the bytes (the frames are parsed later, the same way for both). Printed per
client: the median wall and CPU seconds per read, MB/s, and the hand-written reader's speed-up
over aiohttp. The rule (docs/transport.md): keep the hand-written reader only where it is at
least 1.5 times faster.

    python -m bench.stream_transport [--lines N] [--reps N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provider.clients.connections import Endpoint  # noqa: E402
from provider.clients.engine import AsyncEngine  # noqa: E402
from provider.clients.http11 import open_response  # noqa: E402
from provider.clients.hosts import HostConfig  # noqa: E402
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd  # noqa: E402

API = "/v1.41"


async def read_hand_written(socket_path: str, container_id: str) -> int:
    reader, writer = await Endpoint(unix=socket_path).connect()
    path = f"{API}/containers/{container_id}/logs?stdout=1&stderr=1&follow=0"
    response = await open_response(reader, writer, "GET", path, host="docker", what="bench engine")
    size = 0
    try:
        while chunk := await response.read():
            size += len(chunk)
    finally:
        response.close()
    return size


async def read_aiohttp(engine: AsyncEngine, container_id: str) -> int:
    response = await engine.logs(container_id, follow=False)
    size = 0
    try:
        while chunk := await response.read():
            size += len(chunk)
    finally:
        response.close()
    return size


def timed(read: Callable[[], Awaitable[int]]) -> tuple[float, float, int]:
    """(wall s, CPU s, bytes) of one read, on a fresh event loop as a caller would run it."""
    wall, cpu = time.perf_counter(), time.process_time()
    size = asyncio.run(read())  # type: ignore[arg-type]
    return time.perf_counter() - wall, time.process_time() - cpu, size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines the container prints")
    parser.add_argument("--reps", type=int, default=5, help="reads per client, taken in turn")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    engine_d = PrivateDockerd("stream").start()
    try:
        engine_d.load(TESTBOX_IMAGE)
        with engine_d.client() as c:
            container = c.containers.run(TESTBOX_IMAGE, ["seq", "1", str(args.lines)], detach=True,
                                         network_mode="none")
            container.wait()
            cid = container.id
        host = HostConfig("stream", engine_d.url)
        socket_path = str(engine_d.socket)
        readers: dict[str, Callable[[], Awaitable[int]]] = {
            "hand_written": lambda: read_hand_written(socket_path, cid),
            "aiohttp": lambda: read_aiohttp(AsyncEngine(host), cid),
        }
        figures: dict[str, list[tuple[float, float, int]]] = {name: [] for name in readers}
        for _ in range(args.reps):
            for name, read in readers.items():
                figures[name].append(timed(read))
    finally:
        engine_d.stop()
    sizes = {r[2] for runs in figures.values() for r in runs}
    doc: dict[str, Any] = {"lines": args.lines, "reps": args.reps, "bytes": max(sizes), "same_bytes": len(sizes) == 1,
                           "clients": {}}
    print(f"{'client':<13} {'wall s':>8} {'cpu s':>8} {'MB/s':>8}")
    for name, runs in figures.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        doc["clients"][name] = {"wall_s": wall, "cpu_s": cpu, "mb_per_s": max(sizes) / 1e6 / wall}
        print(f"{name:<13} {wall:8.3f} {cpu:8.3f} {max(sizes) / 1e6 / wall:8.1f}")
    ours, theirs = doc["clients"]["hand_written"], doc["clients"]["aiohttp"]
    doc["speedup_wall"] = theirs["wall_s"] / ours["wall_s"]
    doc["speedup_cpu"] = theirs["cpu_s"] / ours["cpu_s"]
    print(f"hand-written speed-up over aiohttp: {doc['speedup_wall']:.2f}x wall, {doc['speedup_cpu']:.2f}x CPU "
          f"(keep the hand-written reader where >= 1.5x); same bytes read: {doc['same_bytes']}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0 if doc["same_bytes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
