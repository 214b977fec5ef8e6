"""CPU capacity and use of one control group, for a host whose containers run under a CPU quota.

A GPU host that is a VM slice, a container, or a share of a bigger machine can use only its
group's CPU quota, however many cores the kernel shows; and the machine's busy share counts the
work of every other group (a neighbouring host on the same machine included) as this host's. An
agent started with ``--cgroup NAME`` reports the group's quota as capacity and the group's own
CPU time over that quota as utilisation, so placement compares hosts by what each can still give.

Both layouts are read: cgroup v2 (``cpu.max``, ``usage_usec`` in ``cpu.stat``) and v1, where the
quota (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) lives in the ``cpu`` hierarchy and the CPU
time (``cpuacct.usage``) in ``cpuacct``'s, which may be mounted apart from it.
"""

from __future__ import annotations

from pathlib import Path

PROC_MOUNTS = "/proc/self/mounts"


def cgroup_mounts(mounts: str) -> dict[str, Path]:
    """Mount point per cgroup v1 controller of interest (``cpu``, ``cpuacct``), and ``unified``
    for a cgroup v2 mount, from the text of ``/proc/self/mounts``."""
    points: dict[str, Path] = {}
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        _, where, fstype, options = fields[:4]
        if fstype == "cgroup2":
            points.setdefault("unified", Path(where))
        elif fstype == "cgroup":
            for controller in {"cpu", "cpuacct"} & set(options.split(",")):
                points[controller] = Path(where)
    return points


class CgroupCpu:
    """Reads one cgroup's CPU quota and cumulative CPU time; construction checks both exist."""

    def __init__(self, name: str, mounts: str | None = None) -> None:
        self.name = "/" + name.strip("/")
        relative = self.name.lstrip("/")
        points = cgroup_mounts(Path(PROC_MOUNTS).read_text() if mounts is None else mounts)
        self._quota_files: tuple[Path, ...]
        if "cpu" in points and "cpuacct" in points:
            self._v2 = False
            cpu, acct = points["cpu"] / relative, points["cpuacct"] / relative
            self._quota_files = (cpu / "cpu.cfs_quota_us", cpu / "cpu.cfs_period_us")
            self._usage_file = acct / "cpuacct.usage"
        elif "unified" in points:
            self._v2 = True
            group = points["unified"] / relative
            self._quota_files = (group / "cpu.max",)
            self._usage_file = group / "cpu.stat"
        else:
            raise ValueError(f"--cgroup {self.name}: no cgroup cpu controller is mounted on this host; "
                             "mount cgroup v2, or v1's cpu and cpuacct, or drop --cgroup.")
        missing = [str(p) for p in (*self._quota_files, self._usage_file) if not p.exists()]
        if missing:
            raise ValueError(f"--cgroup {self.name}: {', '.join(missing)} not found; create the group "
                             "(the engine's --cgroup-parent) before starting the agent, or fix the name.")

    def quota_cores(self) -> float | None:
        """Cores the group may use per period; None when it has no quota."""
        if self._v2:
            quota, _, period = self._quota_files[0].read_text().partition(" ")
            if quota.strip() == "max":
                return None
            return int(quota) / int(period)
        quota_us, period_us = (int(p.read_text()) for p in self._quota_files)
        return None if quota_us < 0 else quota_us / period_us

    def usage_s(self) -> float:
        """CPU seconds the group's processes have used since it was made."""
        if self._v2:
            for line in self._usage_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            raise ValueError(f"{self._usage_file} has no usage_usec line")
        return int(self._usage_file.read_text()) / 1e9
