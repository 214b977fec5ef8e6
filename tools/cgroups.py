"""Making CPU-quota cgroups for hosts that share a machine, and removing the cgroups that private
Docker engines leave behind (cgroup v1).

An engine started with ``--cgroup-parent=/NAME`` makes ``/NAME`` in *every* controller's
hierarchy (cpu, memory, pids, ...), not only in the ones a benchmark made for it, and
removes only its containers' groups below it; the rest stays until someone removes it.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def make_cpu_quota_group(name: str, cores: float) -> None:
    """Make the top-level cgroup ``name`` whose processes together get at most ``cores`` CPUs
    (a CFS quota), with its CPU time accounted (``cpuacct``, mounted apart from ``cpu`` here).

    Remove it with :func:`remove_cgroup`. Raises ``RuntimeError`` without cgroup v1's cpu and
    cpuacct hierarchies, and ``FileExistsError`` when the group exists.
    """
    cpu, acct = CGROUP_ROOT / "cpu", CGROUP_ROOT / "cpuacct"
    if not (cpu / "cpu.cfs_quota_us").exists() or not (acct / "cpuacct.usage").exists():
        raise RuntimeError(f"CPU quota groups need cgroup v1's cpu and cpuacct hierarchies under {CGROUP_ROOT}")
    (cpu / name).mkdir()
    if not (acct / name).exists():  # the same directory where cpu and cpuacct are mounted together
        (acct / name).mkdir()
    (cpu / name / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (cpu / name / "cpu.cfs_quota_us").write_text(str(round(cores * PERIOD_US)))


def join_cpu_quota_group(name: str, pid: int) -> None:
    """Move process ``pid`` into ``name``'s cpu and cpuacct groups."""
    for hierarchy in ("cpu", "cpuacct"):
        (CGROUP_ROOT / hierarchy / name / "cgroup.procs").write_text(str(pid))


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
