"""The orphan sweep against a real engine: it stops and removes the container of a task instance
that has ended and releases its claim, keeps those of tasks that run or will be retried, and
skips a host that does not answer.

Each task's first try runs the real operator in a process of its own (``cpus`` makes it claim
room on the host) and is killed with SIGKILL once its container runs, as a lost worker leaves
it. The task-instance states are what the metadata database would answer, given to the sweep
as its look-up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from provider.clients.hosts import HostConfig
from provider.reservations.adopt import discard, find_earlier
from provider.labels import CLAIM_LABEL, RESERVATION_LABEL
from provider.reservations.orphans import Known, sweep
from provider.task_instance import LABEL_PREFIX, TaskInstanceRef
from tests.conftest import FakeTI, eventually
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd
from tools.local_airflow import REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("it_host")]

FIRST_TRY = """
import sys
from provider.operators.gpu_docker import GpuDockerOperator
from tests.conftest import FakeTI
op = GpuDockerOperator(task_id="train", host="it_host", image=sys.argv[1], pull="never", cpus=0.5,
                       command=["sh", "-c", "echo started; sleep 300"], log_archive=None)
op.execute({"ti": FakeTI(run_id=sys.argv[2], try_number=1)})
"""
STATES = {"failed": "failed", "running": "running", "retry": "up_for_retry"}


def of_run(engine: PrivateDockerd, run_id: str, *labels: str) -> list[dict[str, Any]]:
    return engine.containers(f"{LABEL_PREFIX}.run_id={run_id}", *labels)


@pytest.fixture
def lost_tries(dockerd: PrivateDockerd) -> Iterator[dict[str, str]]:
    """One killed first try per entry of ``STATES``, its container running and its claim made:
    ``{name: run id}``. Whatever is left of them is removed after the test, by id."""
    runs = {name: f"orphan_{name}__{os.urandom(4).hex()}" for name in STATES}
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_TRY, TESTBOX_IMAGE, run_id], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for run_id in runs.values()]

    def all_running() -> bool:
        assert all(p.poll() is None for p in procs), "a first try ended by itself"
        return all(any(c["State"] == "running" for c in of_run(dockerd, r, f"{LABEL_PREFIX}.try_number=1"))
                   for r in runs.values())

    try:
        eventually(all_running, 120, what="the first tries' containers running")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)  # as the kernel's OOM killer ends a worker: no on_kill
            proc.wait()
    try:
        yield runs
    finally:
        with dockerd.client() as c:
            for run_id in runs.values():
                for left in of_run(dockerd, run_id):
                    c.api.remove_container(left["Id"], force=True)


@pytest.fixture
def silent_engine(tmp_path: Path) -> Iterator[str]:
    """A socket that takes connections and never answers: an engine that hangs."""
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(8)
        yield f"unix://{path}"


def test_the_sweep_reaps_the_ended_tasks_container_keeps_the_others_and_skips_dead_hosts(
    dockerd: PrivateDockerd, lost_tries: dict[str, str], silent_engine: str, tmp_path: Path
) -> None:
    states = {lost_tries[name]: state for name, state in STATES.items()}
    asked: list[TaskInstanceRef] = []

    def lookup(keys: Sequence[TaskInstanceRef]) -> Known:
        asked.extend(keys)
        return Known({k: states.get(k.run_id, "running") for k in keys},  # other tests' containers: left alone
                     {k.dag_id for k in keys})

    hosts = [HostConfig("it_host", dockerd.url), HostConfig("refusing", f"unix://{tmp_path / 'none.sock'}"),
             HostConfig("silent", silent_engine)]
    orphan = lost_tries["failed"]
    [container] = [c for c in of_run(dockerd, orphan) if RESERVATION_LABEL not in c["Labels"]]
    assert [c for c in of_run(dockerd, orphan, f"{CLAIM_LABEL}=true")], "the first try made no claim"

    started = time.monotonic()
    result = asyncio.run(sweep(hosts, lookup, engine_timeout=1.0, grace_s=1))
    took = time.monotonic() - started

    assert [(r.task.run_id, r.container_id, r.host, r.error) for r in result.reaped] == [
        (orphan, container["Id"], "it_host", None)]
    assert "failed" in result.reaped[0].reason
    assert of_run(dockerd, orphan) == []  # the container and its claim
    for name in ("running", "retry"):
        kept = of_run(dockerd, lost_tries[name])
        assert sorted(str(c["State"]) for c in kept) == ["created", "running"], (name, kept)  # claim, container
    assert {k.run_id for k in asked} >= set(lost_tries.values())
    assert result.hosts == ("it_host",)
    assert [s.split(":")[0] for s in result.skipped] == ["refusing", "silent"]
    assert "did not answer within 1 s" in result.skipped[1]
    assert took < 15, f"a silent host held the sweep for {took:.1f} s"


def test_reaping_a_container_that_is_gone_or_being_removed_is_no_error(
    dockerd: PrivateDockerd, lost_tries: dict[str, str]
) -> None:
    """Two api-servers may sweep the same host at once: both reap the same orphan."""
    task = TaskInstanceRef(FakeTI().dag_id, "train", lost_tries["failed"])
    [earlier] = asyncio.run(find_earlier([HostConfig("it_host", dockerd.url)], task))

    async def twice() -> None:
        await asyncio.gather(*(discard(earlier, 1) for _ in range(2)))

    asyncio.run(twice())
    assert of_run(dockerd, lost_tries["failed"]) == []
    asyncio.run(discard(earlier, 1))  # once more, when nothing is left
