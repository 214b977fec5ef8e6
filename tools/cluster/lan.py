"""Machines of their own on one Linux box: a network namespace per machine on a switched LAN.

Every machine is a namespace with one interface (``eth0``) on a /24 that nothing else here uses,
plugged into a bridge that lives in a namespace of its own (the "switch"), so no traffic
between machines touches this box's own firewall or routes. This box joins the LAN too, at
``.1``, as the user's desk from which the UI and the REST API are reached. Each machine has its
own hostname (a UTS namespace per process, set by :meth:`Lan.wrap`) and an ``/etc/hosts`` that
names every machine (``/etc/netns/NS/hosts``, bound over ``/etc/hosts`` for its programs only),
so components address each other by name, as on a real network.

A machine is taken off the network by downing its switch port (:meth:`Lan.unplug`), exactly
what a pulled cable or a dead top-of-rack port does. Everything is removed by name at the end.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.netns import free_subnet, run_cmd, undo_cmd

PREFIX = "10.214"
"""The /16 the LAN's /24 is taken from (one that nothing here uses)."""
NETNS_ETC = Path("/etc/netns")


@dataclass(frozen=True)
class Machine:
    """One machine: its hostname, address on the LAN and namespace."""

    name: str
    ip: str
    netns: str


class Lan:
    """``names`` as machines on one switched /24; :meth:`start` it, :meth:`stop` it.

    ``tag`` prefixes every namespace and interface, so two LANs (a test's and a user's
    ``./run cluster``) can exist side by side; interface names stay under 16 bytes.
    """

    def __init__(self, names: Sequence[str], tag: str = "gdc") -> None:
        if len(tag) + max(map(len, names)) > 12:
            raise ValueError(f"tag {tag!r} with names {list(names)} makes interface names over 15 bytes")
        self.tag = tag
        self.names = list(names)
        self.switch = f"{tag}-switch"
        self.desk_dev = f"{tag}desk"
        self.machines: dict[str, Machine] = {}
        self.desk_ip = ""
        self._made: list[str] = []

    def __getitem__(self, name: str) -> Machine:
        return self.machines[name]

    def start(self) -> Lan:
        n = free_subnet(200, PREFIX)
        self.desk_ip = f"{PREFIX}.{n}.1"
        try:
            self._add_netns(self.switch)
            run_cmd("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            run_cmd("ip", "-n", self.switch, "link", "set", "br0", "up")
            # This box's own port, so a user (or a test) reaches the UI as from a desk.
            self._plug(self.desk_dev, None, f"{self.desk_ip}/24")
            for k, name in enumerate(self.names):
                machine = Machine(name, f"{PREFIX}.{n}.{10 + k}", f"{self.tag}-{name}")
                self._add_netns(machine.netns)
                self._plug(self._port(name), machine.netns, f"{machine.ip}/24")
                run_cmd("ip", "-n", machine.netns, "link", "set", "lo", "up")
                self.machines[name] = machine
            hosts = "127.0.0.1 localhost\n" + "".join(f"{m.ip} {m.name}\n" for m in self.machines.values())
            for m in self.machines.values():
                (NETNS_ETC / m.netns).mkdir(parents=True, exist_ok=True)
                (NETNS_ETC / m.netns / "hosts").write_text(hosts)
        except BaseException:
            self.stop()
            raise
        return self

    def _add_netns(self, netns: str) -> None:
        done = subprocess.run(["ip", "netns", "add", netns], capture_output=True, text=True)
        if done.returncode:
            fix = (f" A LAN tagged {self.tag!r} is already up (another `./run cluster`, or one that was killed): "
                   f"stop it, or remove its namespaces with `ip netns del {netns}`.") if "exists" in done.stderr else ""
            raise RuntimeError(f"`ip netns add {netns}` failed: {done.stderr.strip()}.{fix}")
        self._made.append(netns)

    def _port(self, name: str) -> str:
        return f"{self.tag}{name}"

    def _plug(self, port: str, netns: str | None, cidr: str) -> None:
        """A veth pair: ``port`` on the switch's bridge, ``eth0`` (or ``port`` here) with ``cidr``."""
        inner = "eth0" if netns else port
        run_cmd("ip", "link", "add", "tmp-" + port[-11:], "type", "veth", "peer", "name", inner,
                *(("netns", netns) if netns else ()))
        run_cmd("ip", "link", "set", "tmp-" + port[-11:], "netns", self.switch)
        run_cmd("ip", "-n", self.switch, "link", "set", "tmp-" + port[-11:], "name", port)
        run_cmd("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
        ns = ("-n", netns) if netns else ()
        run_cmd("ip", *ns, "addr", "add", cidr, "dev", inner)
        run_cmd("ip", *ns, "link", "set", inner, "up")

    def wrap(self, name: str) -> list[str]:
        """The command prefix that runs a program on machine ``name``: in its network namespace,
        with its hostname and its ``/etc/hosts`` (bound in a private mount namespace, so this
        box's file is untouched). ``ip netns exec`` is not used because it also remounts
        ``/sys``, which hides the cgroup hierarchy a Docker engine needs. Each step ``exec``s,
        so the pid of the started process is the program's own."""
        m = self.machines[name]
        return ["nsenter", f"--net=/run/netns/{m.netns}", "unshare", "--uts", "--mount", "--",
                "sh", "-c", 'mount --bind "$1" /etc/hosts && hostname "$0" && shift && exec "$@"',
                m.name, str(NETNS_ETC / m.netns / "hosts")]

    def unplug(self, name: str) -> None:
        """Take ``name`` off the network: its switch port goes down (a pulled cable)."""
        run_cmd("ip", "-n", self.switch, "link", "set", self._port(name), "down")

    def plug(self, name: str) -> None:
        """Put ``name`` back on the network."""
        run_cmd("ip", "-n", self.switch, "link", "set", self._port(name), "up")

    def stop(self) -> None:
        """Remove every namespace made (their veth pairs go with them) and the hosts files."""
        if self.desk_ip:
            subprocess.run(["ip", "link", "del", self.desk_dev], capture_output=True)
        for netns in reversed(self._made):
            undo_cmd("ip", "netns", "del", netns)
            shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)
        self._made.clear()
        self.machines.clear()

    def __enter__(self) -> Lan:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

