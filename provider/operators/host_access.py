"""What a task may reach on its host: bind-mount sources, root, the host's network.

The operator's ``mounts``, ``user`` and ``network_mode`` are template fields, so a DAG that fills
them from ``params`` or ``dag_run.conf`` hands them to whoever may trigger it over the REST API.
A bind mount of ``/`` or of the Docker socket, or root with a host path, is root on the GPU host
and on its engine; the host's network reaches the engine's TCP port and every neighbour. So the
host's administrator decides, and the task's arguments only ask:

* a bind-mount source must lie under a prefix of ``[gpu_docker] allowed_mount_sources`` (none by
  default), and never be ``/``, an engine's socket or a directory that holds one, even when listed;
* ``user`` root and ``network_mode="host"`` (or ``"container:NAME"``, whose network may be the
  host's) need ``allow_root_user`` / ``allow_host_network`` in the extra of every host
  connection the task may be placed on.

Checked on the rendered arguments, before anything is reserved (docs/security/edge.md). Pure: the
setting's text and the host connections are passed in.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from provider.clients.hosts import HostConfig
from provider.errors import HostConfigError, SpecError
from provider.operators.container_spec import ContainerSpec, parse_mount

SETTING = "[gpu_docker] allowed_mount_sources"
SETTING_ENV = "AIRFLOW__GPU_DOCKER__ALLOWED_MOUNT_SOURCES"
ENGINE_SOCKET_NAMES = ("docker.sock", "containerd.sock")
"""Sockets that are root on the host to whoever can write to them, wherever they live."""
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock")
_ROOT_USER = re.compile(r"(?:root|[+-]?0+)(?::.*)?")
"""``user`` values that run as uid 0: the name, or any number the engine reads as 0."""


@dataclass(frozen=True, slots=True)
class Allowed:
    """One entry of the setting: a host directory tree, read-only when ``read_only``."""

    prefix: str
    read_only: bool

    def covers(self, source: str) -> bool:
        """Whether ``source`` (normalised) is the prefix or below it, by whole path components."""
        return source == self.prefix or source.startswith(self.prefix + "/")


def normalise(path: str) -> str:
    """``path`` with repeated and trailing ``/`` and ``.`` components removed.

    ``..`` is refused rather than folded: the host resolves it after following symlinks, so
    ``/data/link/..`` need not be ``/data`` there, and a check on the folded text would be a
    check of another path."""
    if ".." in path.split("/"):
        raise ValueError("'..' in a host path")
    return _collapse(path)


def _collapse(path: str) -> str:
    return posixpath.normpath(re.sub("/+", "/", path))


def mount_policy(setting: str) -> tuple[Allowed, ...]:
    """The allowed sources from the setting's text: comma-separated absolute paths, each
    optionally ``:ro`` (only read-only mounts below it); empty allows no host path at all, and
    ``/`` is refused: it would allow them all."""
    allowed = []
    for entry in (e.strip() for e in setting.split(",")):
        if not entry:
            continue
        path, _, mode = entry.partition(":")
        if not path.startswith("/") or mode not in ("", "ro"):
            raise HostConfigError(
                f"{SETTING} entry {entry!r} must be an absolute host directory, optionally followed by ':ro' "
                f"(e.g. '/datasets:ro,/scratch'); fix the setting (or {SETTING_ENV})."
            )
        try:
            prefix = normalise(path)
        except ValueError as exc:
            raise HostConfigError(f"{SETTING} entry {entry!r}: {exc} is refused; write the path without it.") from None
        if prefix == "/":
            raise HostConfigError(
                f"{SETTING} entry {entry!r} would allow every host path (/etc, /root, the engine's files); list the "
                f"data directories tasks need instead, e.g. '/datasets:ro,/scratch' (or {SETTING_ENV})."
            )
        allowed.append(Allowed(prefix, mode == "ro"))
    return tuple(allowed)


def check_mounts(mounts: Sequence[str], allowed: Sequence[Allowed], hosts: Sequence[HostConfig]) -> None:
    """Refuse a bind mount that the setting does not allow or that would reach an engine.

    Named volumes are not host paths and always pass. ``/`` and the engines' sockets (and any
    directory that holds one, such as ``/run``) are refused even when listed: no task needs
    them, and either is root on the host.
    """
    named = [_collapse(h.docker_url.removeprefix("unix://")) for h in hosts if h.docker_url.startswith("unix://")]
    sockets = dict.fromkeys([*ENGINE_SOCKETS, *named])
    for text in mounts:
        mount = parse_mount(text)
        if mount["Type"] != "bind":
            continue
        try:
            source = normalise(mount["Source"])
        except ValueError as exc:
            raise SpecError(
                f"mounts entry {text!r}: {exc} is refused: the host resolves it after following symlinks, so it "
                "cannot be checked; write the source without '..'."
            ) from None
        reached = [s for s in sockets if source == "/" or source == s or s.startswith(source + "/")]
        if source == "/" or reached or posixpath.basename(source) in ENGINE_SOCKET_NAMES:
            what = "the host's root directory" if source == "/" else \
                f"the container engine's socket ({', '.join(reached) or source})"
            raise SpecError(
                f"mounts entry {text!r} would give the container {what}, which is root on the host and on its "
                f"engine; it is refused whatever {SETTING} lists. Mount only the data directory the task needs."
            )
        fits = [a for a in allowed if a.covers(source)]
        if not fits:
            listed = ", ".join(a.prefix + (":ro" if a.read_only else "") for a in allowed) or "nothing"
            raise SpecError(
                f"mounts entry {text!r}: host path {source!r} is not under {SETTING} (it allows {listed}). Ask the "
                f"administrator to add its directory to that setting ({SETTING_ENV} on every worker), or use a "
                "named volume."
            )
        if not mount["ReadOnly"] and all(a.read_only for a in fits):
            raise SpecError(
                f"mounts entry {text!r}: {SETTING} allows {source!r} read-only only; end the entry with ':ro'."
            )


def runs_as_root(user: str | None) -> bool:
    """Whether ``user`` (as checked by the spec) asks for uid 0. None keeps the image's USER."""
    return user is not None and _ROOT_USER.fullmatch(user) is not None


def check_access(spec: ContainerSpec, hosts: Sequence[HostConfig], setting: str) -> None:
    """Every rule of this module for ``spec`` on the pool ``hosts``, with ``setting`` the text of
    ``[gpu_docker] allowed_mount_sources``."""
    check_mounts(spec.mounts, mount_policy(setting), hosts)
    check_privileges(spec, hosts)


def check_privileges(spec: ContainerSpec, hosts: Sequence[HostConfig]) -> None:
    """Refuse root and the host's network unless every host of the pool allows them.

    Every host, not the one placement will choose: the check runs before placement, and a task
    is placed anywhere on its pool. A pool of the hosts that allow it is the way to run such a
    task on some hosts only.
    """
    asks = []
    if runs_as_root(spec.user):
        asks.append((f"user={spec.user!r} (root)", "allow_root_user", [h for h in hosts if not h.allow_root_user]))
    if spec.network_mode == "host" or spec.network_mode.startswith("container:"):
        # Another container's network may be the host's: joining it is the same permission.
        asks.append((f"network_mode={spec.network_mode!r}", "allow_host_network",
                     [h for h in hosts if not h.allow_host_network]))
    for what, flag, refusing in asks:
        if refusing:
            names = ", ".join(repr(h.name) for h in refusing)
            raise SpecError(
                f"{what} is refused on host connection(s) {names}: it would give the task the host itself. Run as "
                f'a non-root user and network_mode="none", or, where the host is meant for it, set "{flag}": true '
                "in the extra of each of those connections."
            )
