"""Removing the cgroups that private Docker engines leave behind (cgroup v1).

An engine started with ``--cgroup-parent=/NAME`` makes ``/NAME`` in *every* controller's
hierarchy (cpu, memory, pids, ...), not only in the cpuset one a benchmark made for it, and
removes only its containers' groups below it; the rest stays until someone removes it.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def remove_cgroup(name: str) -> None:
    """Remove the top-level cgroup ``name`` from every hierarchy, deepest groups first.

    Groups must be empty of processes; a group that still holds one raises ``OSError``.
    """
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if top.is_dir() and not top.is_symlink():
            for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    sub.rmdir()
            top.rmdir()
