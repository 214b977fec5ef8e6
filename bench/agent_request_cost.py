"""CPU the agent spends per request, measured on a real agent process.

Starts ``python -m provider.agent`` on loopback with a simulated 8-GPU inventory, sends 200
requests to each endpoint one after another, and divides the agent process's CPU time
(user + system, from /proc through psutil) by the request count. An idle window of the same
length is measured first and subtracted, which removes the background sampler's share.

    python bench/agent_request_cost.py [--json PATH] [--requests N]

Target: under 5 ms of CPU per request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.agents import gpus, start_agent, stop_agent  # noqa: E402

TOKEN = "bench-token"
TARGET_MS = 5.0


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def get(host: str, port: int, path: str) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}")
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        agent = start_agent(Path(tmp), "bench", gpus(8, "A100-80GB", 81920), TOKEN, interval_s=1.0)
        try:
            url = urlsplit(agent.url)
            host, port = url.hostname or "127.0.0.1", url.port or 80
            process = psutil.Process(agent.process.pid)
            for path in ("/v1/node", "/metrics"):
                get(host, port, path)
                started, before = time.monotonic(), cpu_s(process)
                for _ in range(args.requests):
                    get(host, port, path)
                busy_s, busy_wall = cpu_s(process) - before, time.monotonic() - started
                idle_before = cpu_s(process)
                time.sleep(busy_wall)
                idle_s = cpu_s(process) - idle_before
                results[path] = round(max(0.0, busy_s - idle_s) / args.requests * 1000, 3)
                print(f"{path:<9} {args.requests} requests in {busy_wall * 1000:.0f} ms wall: "
                      f"agent CPU {busy_s * 1000:.1f} ms (idle window {idle_s * 1000:.1f} ms) "
                      f"-> {results[path]:.3f} ms/request (target < {TARGET_MS:g})")
        finally:
            stop_agent(agent.process)
    if args.json:
        args.json.write_text(json.dumps({"cpu_ms_per_request": results}, indent=2) + "\n")
    return 0 if all(v < TARGET_MS for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
