"""Reading a cgroup's CPU quota and time from either layout, fed the files a kernel writes.

This machine runs cgroup v1, where tests/integration/test_agent_cgroup.py checks the reading
against real groups; cgroup v2's files are written here as the kernel formats them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provider.agent.cgroup_cpu import CgroupCpu, cgroup_mounts

V1_MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup {root}/cpu cgroup rw,relatime,cpu 0 0
cgroup {root}/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup {root}/memory cgroup rw,relatime,memory 0 0
"""
V1_JOINT_MOUNTS = "cgroup {root}/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
V2_MOUNTS = "cgroup2 {root} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"


def test_mounts_name_each_controller_and_the_unified_tree() -> None:
    points = cgroup_mounts(V1_MOUNTS.format(root="/c") + V2_MOUNTS.format(root="/u"))
    assert points == {"cpu": Path("/c/cpu"), "cpuacct": Path("/c/cpuacct"), "unified": Path("/u")}
    joint = cgroup_mounts(V1_JOINT_MOUNTS.format(root="/c"))
    assert joint == {"cpu": Path("/c/cpu,cpuacct"), "cpuacct": Path("/c/cpu,cpuacct")}


def _v2(tmp_path: Path, cpu_max: str) -> CgroupCpu:
    group = tmp_path / "hosts" / "h1"
    group.mkdir(parents=True)
    (group / "cpu.max").write_text(cpu_max + "\n")
    (group / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    return CgroupCpu("/hosts/h1", mounts=V2_MOUNTS.format(root=tmp_path))


@pytest.mark.parametrize(("cpu_max", "cores"), [("50000 100000", 0.5), ("300000 100000", 3.0), ("max 100000", None)])
def test_v2_quota_and_usage(tmp_path: Path, cpu_max: str, cores: float | None) -> None:
    group = _v2(tmp_path, cpu_max)
    assert group.quota_cores() == cores
    assert group.usage_s() == 2.5


def test_v1_quota_and_usage_in_separate_hierarchies(tmp_path: Path) -> None:
    for hierarchy, files in (("cpu", {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}),
                             ("cpuacct", {"cpuacct.usage": "1500000000"})):
        group = tmp_path / hierarchy / "h2"
        group.mkdir(parents=True)
        for name, text in files.items():
            (group / name).write_text(text + "\n")
    group = CgroupCpu("h2", mounts=V1_MOUNTS.format(root=tmp_path))
    assert group.name == "/h2" and group.quota_cores() is None and group.usage_s() == 1.5
    (tmp_path / "cpu" / "h2" / "cpu.cfs_quota_us").write_text("25000\n")
    assert group.quota_cores() == 0.25


@pytest.mark.parametrize(
    ("mounts", "message"),
    [
        pytest.param("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n", "no cgroup cpu controller is mounted", id="no-controller"),
        pytest.param(V2_MOUNTS, "not found; create the group", id="no-such-group"),
    ],
)
def test_a_group_that_cannot_be_read_is_refused_with_the_fix(tmp_path: Path, mounts: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CgroupCpu("/absent", mounts=mounts.format(root=tmp_path))
