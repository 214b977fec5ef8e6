"""An agent given its host's cgroup (``--cgroup``) reports that group's CPU quota as capacity and
the group's own CPU time as utilisation: a busy neighbour on the same machine does not show.

Two real cgroup v1 groups with a half-core quota each, one running a busy loop, one empty; an
agent per group. The machine's busy share is the loop's (about a quarter of two cores); each
agent must report its own group's instead. The hosts of ``bench/cluster.py`` rest on this.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from provider.clients.hosts import HostConfig
from provider.reservations.measured import node_state
from tests.conftest import eventually
from tests.integration.agents import start_agent, stop_agent
from tools.cgroups import CGROUP_ROOT, join_cpu_quota_group, make_cpu_quota_group, remove_cgroup

QUOTA_CORES = 0.5

pytestmark = pytest.mark.skipif(
    not (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists() or os.geteuid() != 0,
    reason="needs root and cgroup v1's cpu and cpuacct hierarchies (the CI machines have both)",
)


@pytest.fixture
def groups() -> Iterator[dict[str, str]]:
    """``busy`` and ``idle`` groups of half a core each; a busy loop runs in ``busy``."""
    names = {role: f"gdt-{os.getpid()}-{role}" for role in ("busy", "idle")}
    loop: subprocess.Popen[bytes] | None = None
    made: list[str] = []
    try:
        for name in names.values():
            make_cpu_quota_group(name, QUOTA_CORES)
            made.append(name)
        loop = subprocess.Popen(["sh", "-c", "while :; do :; done"])
        join_cpu_quota_group(names["busy"], loop.pid)
        yield names
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()
        for name in made:
            remove_cgroup(name)


def _doc(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/v1/node", timeout=5).json())


def test_each_agent_reports_its_own_groups_quota_and_use(tmp_path: Path, groups: dict[str, str]) -> None:
    agents = {role: start_agent(tmp_path, role, [], cgroup=name) for role, name in groups.items()}
    try:
        docs = eventually(lambda: {role: _doc(a.url)["cpu"] for role, a in agents.items()}, 20,
                          what="busy agent near its quota, idle agent near zero",
                          until=lambda d: d["busy"]["utilization_pct"] > 70 and d["idle"]["utilization_pct"] < 10)
        for role, cpu in docs.items():
            assert cpu["capacity_milli"] == 500 and cpu["cgroup"] == f"/{groups[role]}"
        host = HostConfig(name="gpu_busy", docker_url="unix:///nonexistent/docker.sock", agent_url=agents["busy"].url)
        node = node_state(host, _doc(agents["busy"].url))
        assert node.cpu_milli == 500 and node.cpu_utilization_pct > 70
    finally:
        for agent in agents.values():
            stop_agent(agent.process)


def test_a_group_that_does_not_exist_stops_the_agent_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="create the group"):
        start_agent(tmp_path, "nogroup", [], cgroup=f"gdt-{os.getpid()}-absent")
