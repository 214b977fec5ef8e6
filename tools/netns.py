"""Network namespaces as machines of their own for tests and benchmarks: a veth pair each.

A registry or a host that must be reached over a real network path (an address that is not
loopback, a link limited in rate) runs inside a namespace made here, joined to this one by a
veth pair with two addresses of a private /30 that nothing else on this machine uses. Only
these addresses are ever contacted; the namespace, the veth pair and any qdisc are removed by
name when the context ends, also on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

TBF = ("burst", "256kb", "latency", "20ms")
"""A bucket of about 2 ms at 1 Gbit/s: larger than a veth's segments, small enough to keep the rate."""
SUBNETS = "10.213"
"""The /16 whose /30s the links take their two addresses from (one that nothing here uses)."""


@dataclass(frozen=True)
class Link:
    """A namespace and the veth end in this one; ``peer_ip`` is the address inside."""

    netns: str
    host_dev: str
    peer_ip: str

    def _counter(self, name: str) -> int:
        return int(Path(f"/sys/class/net/{self.host_dev}/statistics/{name}").read_text())

    def received_bytes(self) -> int:
        """Bytes that came out of the namespace so far: what pulls downloaded."""
        return self._counter("rx_bytes")

    def sent_bytes(self) -> int:
        """Bytes that went into the namespace so far: what pushes uploaded."""
        return self._counter("tx_bytes")


def run_cmd(*cmd: str) -> None:
    """A set-up command; fails with its own message (``ip`` and ``tc`` say what is missing)."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")


def undo_cmd(*cmd: str) -> None:
    """A clean-up command: reported, not raised, so that the clean-ups after it still run."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(f"clean-up `{' '.join(cmd)}` failed: {done.stderr.strip()}", file=sys.stderr)


def free_subnet(start: int, prefix: str = SUBNETS) -> int:
    """A third octet ``N`` such that no address or route here is in ``prefix.N.0/24``."""
    used = " ".join(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    for cmd in (["ip", "-4", "-o", "addr"], ["ip", "-4", "route"]))
    for n in ((start + k) % 256 for k in range(256)):
        if f"{prefix}.{n}." not in used:
            return n
    raise RuntimeError(f"every {prefix}.N.0/24 is in use here")


@contextmanager
def veth_namespace(tag: str, rate: str | None = None) -> Iterator[Link]:
    """A network namespace joined to this one by a veth pair, with the two addresses of a /30 that
    nothing else here uses: ``.1`` on this side, ``.2`` inside. With ``rate`` (``"1gbit"``) both
    ends are limited to it (tbf on each: pushes go one way, pulls the other). Each qdisc, the
    veth pair and the namespace are removed by name afterwards."""
    n = free_subnet(os.getpid())
    netns, host_dev, peer_dev = f"gdloc-{tag}", f"gdl{tag}h", f"gdl{tag}n"
    host_ip, peer_ip = f"{SUBNETS}.{n}.1", f"{SUBNETS}.{n}.2"
    with ExitStack() as undo:
        run_cmd("ip", "netns", "add", netns)
        undo.callback(undo_cmd, "ip", "netns", "del", netns)
        run_cmd("ip", "link", "add", host_dev, "type", "veth", "peer", "name", peer_dev, "netns", netns)
        undo.callback(undo_cmd, "ip", "link", "del", host_dev)
        run_cmd("ip", "addr", "add", f"{host_ip}/30", "dev", host_dev)
        run_cmd("ip", "-n", netns, "addr", "add", f"{peer_ip}/30", "dev", peer_dev)
        run_cmd("ip", "link", "set", host_dev, "up")
        run_cmd("ip", "-n", netns, "link", "set", peer_dev, "up")
        if rate is not None:
            shaping = ("root", "tbf", "rate", rate, *TBF)
            run_cmd("tc", "qdisc", "add", "dev", host_dev, *shaping)
            undo.callback(undo_cmd, "tc", "qdisc", "del", "dev", host_dev, "root")
            run_cmd("tc", "-n", netns, "qdisc", "add", "dev", peer_dev, *shaping)
            undo.callback(undo_cmd, "tc", "-n", netns, "qdisc", "del", "dev", peer_dev, "root")
        yield Link(netns, host_dev, peer_ip)
