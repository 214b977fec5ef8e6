"""``python -m provider.agent``: run the node agent until SIGTERM or SIGINT.

Prints one line ``listening on http://HOST:PORT`` (``https://`` with ``--tls-cert``) on stdout
once it serves (with ``--listen HOST:0`` the kernel picks the port, and that line tells which),
then logs to stderr.

An address other than loopback is refused without ``--token-file``: the agent's documents name
every GPU's processes and, with ``--engine``, the tasks that hold them, for anyone who can reach
the port. ``--no-auth`` serves them without a token all the same, for tests.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from provider.agent.cgroup_cpu import CgroupCpu
from provider.agent.gpu import GpuBackend, NvmlBackend
from provider.agent.metrics import make_registry
from provider.agent.sampler import DEFAULT_DOCKER_ROOT, Sampler
from provider.agent.server import AgentServer, Limits
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
    """The host's Docker engine: ``unix:///PATH`` (its local socket) or ``tcp://`` on loopback:
    the agent speaks to it without TLS, which only this machine's own traffic may be."""
    if value.startswith("unix:///"):
        return value
    host = urlsplit(value).hostname if value.startswith("tcp://") else None
    if host and is_loopback(host):
        return value
    raise argparse.ArgumentTypeError(
        f"--engine wants this host's Docker engine as unix:///var/run/docker.sock (or tcp://127.0.0.1:PORT: the "
        f"agent speaks to it without TLS, so never across the network), got {value!r}")


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (``0.0.0.0`` and ``::``, every
    interface, are not); a name that does not resolve is not."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in found)


def positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type for a number above zero."""
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if not 0 < number < float("inf"):  # nan is neither
            raise argparse.ArgumentTypeError(f"wants a number above zero, got {value!r}")
        return number
    return parse


def make_backend(spec: str, host_id: str) -> GpuBackend:
    """``nvml`` or ``simulated:FILE`` (development and tests only, see docs/agent.md)."""
    if spec == "nvml":
        return NvmlBackend()
    kind, _, path = spec.partition(":")
    if kind == "simulated" and path:
        return SimulatedBackend.from_file(path, time.monotonic, uuid_prefix=host_id)
    raise ValueError(f"--gpu-backend wants nvml or simulated:FILE, got {spec!r}")


def build_parser() -> argparse.ArgumentParser:
    defaults = Limits()
    p = argparse.ArgumentParser(prog="python -m provider.agent", description=__doc__)
    p.add_argument("--listen", type=parse_listen, required=True, help="HOST:PORT to bind, e.g. 127.0.0.1:9400")
    p.add_argument("--token-file", type=Path, help="file holding the bearer token; required unless --listen is "
                   "loopback or --no-auth is given")
    p.add_argument("--no-auth", action="store_true", help="serve without a token on any address (tests only)")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM, with its chain)")
    p.add_argument("--tls-key", type=Path, help="the private key of --tls-cert (PEM)")
    p.add_argument("--max-connections", type=positive(int), default=defaults.max_connections,
                   help=f"connections served at once; more are refused (default {defaults.max_connections})")
    p.add_argument("--max-connections-per-client", type=positive(int), default=defaults.max_per_client,
                   help=f"connections served at once from one address (default {defaults.max_per_client})")
    p.add_argument("--request-timeout", type=positive(float), default=defaults.request_timeout_s,
                   help=f"seconds a request's head or a TLS handshake may take (default {defaults.request_timeout_s:g})")
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


def check_auth(args: argparse.Namespace) -> str | None:
    """Why the agent must not start with these options (a sentence with the fix), or None."""
    host = args.listen[0]
    if args.no_auth and args.token_file is not None:
        return "--no-auth and --token-file contradict each other: drop one"
    if args.token_file is None and not args.no_auth and not is_loopback(host):
        return (
            f"Refusing to listen on {host}, which is not a loopback address, without a token: anyone who reaches "
            "the port could read every GPU's processes and the tasks that hold them. Fix: --token-file FILE (and the token as the host connection's password), or "
            "--listen 127.0.0.1:PORT; --no-auth serves without a token all the same (tests only)."
        )
    return None


def server_tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server context for ``--tls-cert`` and ``--tls-key``, or None for plain HTTP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together: give the certificate and its private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"Cannot load --tls-cert {cert} with --tls-key {key} ({exc}); give PEM files, the key "
                         "matching the certificate, readable by the agent") from exc
    return context


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = check_auth(args)
    if problem:
        log.error("%s", problem)
        return 2
    token = None
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
        if not token:
            log.error("Token file %s is empty; write a token into it or drop --token-file", args.token_file)
            return 2
    try:
        tls = server_tls(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        log.error("%s", exc)
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
    limits = Limits(max_connections=args.max_connections, max_per_client=args.max_connections_per_client,
                    request_timeout_s=args.request_timeout)
    server = AgentServer(args.listen, sampler, make_registry(sampler), token, tls=tls, limits=limits)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("Signal %s: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(target=server.serve_forever, name="agent-http", daemon=True)
    serving.start()
    print(f"listening on {server.url}", flush=True)
    log.info("Agent %s serving on %s (auth %s)", args.host_id, server.url, "on" if token else "off (--no-auth or loopback)")
    stop.wait()
    server.shutdown()
    server.server_close()
    sampler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
