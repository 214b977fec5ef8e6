"""``python -m provider.agent``: run the node agent until SIGTERM or SIGINT.

Prints one line ``listening on http://HOST:PORT`` on stdout once it serves (with
``--listen HOST:0`` the kernel picks the port, and that line tells which), then logs to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from provider.agent.cgroup_cpu import CgroupCpu
from provider.agent.gpu import GpuBackend, NvmlBackend
from provider.agent.metrics import make_registry
from provider.agent.sampler import DEFAULT_DOCKER_ROOT, Sampler
from provider.agent.server import AgentServer
from provider.agent.simulated import SimulatedBackend
from provider.agent.tasks import EngineTasks

log = logging.getLogger("provider.agent")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; the host is required so binding is always explicit."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT such as 127.0.0.1:9400, got {value!r}")
    return host.strip("[]"), int(port)


def parse_cpus(value: str) -> list[int]:
    try:
        return [int(c) for c in value.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cpus wants a list such as 0,1, got {value!r}") from None


def parse_engine(value: str) -> str:
    """The host's Docker engine: ``unix:///PATH`` (its local socket) or ``tcp://HOST:PORT`` without TLS."""
    if value.startswith("unix:///") or (value.startswith("tcp://") and len(value) > len("tcp://")):
        return value
    raise argparse.ArgumentTypeError(
        f"--engine wants this host's Docker engine as unix:///var/run/docker.sock (or tcp://HOST:PORT without "
        f"TLS), got {value!r}")


def make_backend(spec: str, host_id: str) -> GpuBackend:
    """``nvml`` or ``simulated:FILE`` (development and tests only, see docs/agent.md)."""
    if spec == "nvml":
        return NvmlBackend()
    kind, _, path = spec.partition(":")
    if kind == "simulated" and path:
        return SimulatedBackend.from_file(path, time.monotonic, uuid_prefix=host_id)
    raise ValueError(f"--gpu-backend wants nvml or simulated:FILE, got {spec!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m provider.agent", description=__doc__)
    p.add_argument("--listen", type=parse_listen, required=True, help="HOST:PORT to bind, e.g. 127.0.0.1:9400")
    p.add_argument("--token-file", type=Path, help="file holding the bearer token; without it, no auth")
    p.add_argument("--cpus", type=parse_cpus, help="CPUs to report, e.g. 0,1 (default: all)")
    p.add_argument("--cgroup", help="report this cgroup's CPU quota and use (e.g. the engine's --cgroup-parent) "
                   "instead of the machine's CPUs")
    p.add_argument("--gpu-backend", default="nvml", help="nvml (default) or simulated:FILE")
    p.add_argument("--engine", type=parse_engine, help="this host's Docker engine, e.g. unix:///var/run/docker.sock: "
                   "GPU series then name the task that holds each GPU (default: no task labels)")
    p.add_argument("--docker-root", default=DEFAULT_DOCKER_ROOT, help="Docker data root whose free disk is reported")
    p.add_argument("--host-id", default=socket.gethostname(), help="name reported as host (default: hostname)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = None
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
        if not token:
            log.error("Token file %s is empty; write a token into it or drop --token-file", args.token_file)
            return 2
    try:
        sampler = Sampler(
            args.host_id,
            make_backend(args.gpu_backend, args.host_id),
            cpus=args.cpus,
            docker_root=args.docker_root,
            interval_s=args.interval,
            cgroup=CgroupCpu(args.cgroup) if args.cgroup else None,
            tasks=EngineTasks(args.engine) if args.engine else None,
        )
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    sampler.start()
    server = AgentServer(args.listen, sampler, make_registry(sampler), token)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("Signal %s: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(target=server.serve_forever, name="agent-http", daemon=True)
    serving.start()
    print(f"listening on {server.url}", flush=True)
    log.info("Agent %s serving on %s (auth %s)", args.host_id, server.url, "on" if token else "off")
    stop.wait()
    server.shutdown()
    server.server_close()
    sampler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
