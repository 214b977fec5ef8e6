"""Two Airflow deployments on one real engine, and a worker whose clock is 10 minutes off.

Deployment A and deployment B share a host and even a task instance (same ``dag_id``,
``task_id``, ``run_id``). B's reads, sweep and adoption must leave every container of A alone,
and B's claims must count A's as taken: the two never double-book a GPU. Ages are the engine's:
a placement process whose wall clock is skewed by +/-10 minutes reclaims a dead claim and keeps
a live one. The host's GPUs are simulated by its node agent (no GPU here); everything else is
the real engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.errors import ClaimTaken
from provider.labels import DEPLOYMENT_LABEL, OWNER_LABEL
from provider.reservations.adopt import find_earlier
from provider.reservations.orphans import Known, sweep
from provider.reservations.pool import read_pool_view
from provider.reservations.rules import claim_labels, claim_name
from provider.reservations.store import ClaimStore
from provider.scheduling.model import PlacementRequest
from provider.task_instance import TaskInstanceRef
from tests.integration.agents import RunningAgent, gpus, start_agent, stop_agent
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd

pytestmark = pytest.mark.integration

A, B = "deployment-a", "deployment-b"
ONE_GPU = PlacementRequest(gpus=1)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[RunningAgent]:
    running = start_agent(tmp_path, "shared", gpus(3, "A100-80GB", 81920))
    try:
        yield running
    finally:
        stop_agent(running.process)


@pytest.fixture
def made(dockerd: PrivateDockerd) -> Iterator[list[str]]:
    """Ids of the containers a test makes; each is removed afterwards, by id."""
    ids: list[str] = []
    try:
        yield ids
    finally:
        with dockerd.client() as client:
            for cid in ids:
                try:
                    client.api.remove_container(cid, force=True)
                except Exception:  # removed by the test itself (a sweep, a reclaim): fine
                    pass


def claim(host: HostConfig, owner: str, gpu: int, deployment: str, task: TaskInstanceRef | None = None) -> str:
    """A claim as a deployment's placement writes it, made directly on the engine."""
    labels = claim_labels(ONE_GPU.resources, (gpu,), owner, task, deployment=deployment)
    made = asyncio.run(AsyncEngine(host).create_idle(claim_name(owner), TESTBOX_IMAGE, labels))
    assert made is not None
    return made


def task_container(dockerd: PrivateDockerd, task: TaskInstanceRef, owner: str, deployment: str) -> str:
    """A running task container of ``deployment``, as its operator labels it."""
    labels = {**task.to_labels(), DEPLOYMENT_LABEL: deployment, OWNER_LABEL: owner}
    with dockerd.client() as client:
        return str(client.containers.run(TESTBOX_IMAGE, ["sleep", "300"], labels=labels, detach=True,
                                         network_mode="none").id)


def ids(dockerd: PrivateDockerd) -> set[str]:
    return {str(c["Id"]) for c in dockerd.containers()}


def test_a_second_deployment_counts_the_firsts_claims_and_never_touches_its_containers(
    dockerd: PrivateDockerd, agent: RunningAgent, made: list[str],
) -> None:
    host = HostConfig("shared", dockerd.url, agent.url)
    task = TaskInstanceRef("train", "fit", f"manual__{time.time_ns()}", -1, 1)
    # A: a live claim on GPU 0 with its running task, and a dead claim on GPU 1 (its task gone).
    made.append(claim(host, "a-live", 0, A, task))
    made.append(a_task := task_container(dockerd, task, "a-live", A))
    made.append(a_dead := claim(host, "a-dead", 1, A))
    # B: the same task instance, which its metadata database says has ended.
    made.append(b_task := task_container(dockerd, task, "b-gone", B))
    time.sleep(2.5)  # past the 1 s grace below: the dead claim is stale by the engine's clock

    seen_by_b = asyncio.run(read_pool_view([host], tidy=True, grace_s=1.0, deployment=B))
    assert [g.allocated_milli for g in seen_by_b.nodes[0].gpus] == [1000, 1000, 0]  # both of A's claims count
    assert seen_by_b.hosts[0].stale == ()  # A's dead claim is A's to judge
    assert a_dead in ids(dockerd)
    node = seen_by_b.nodes[0]
    store = ClaimStore(AsyncEngine(host), B)
    for gpu in (0, 1):
        with pytest.raises(ClaimTaken, match=f"gpu {gpu} free 0"):  # no double booking of either GPU
            asyncio.run(store.reserve(node, ONE_GPU, [gpu], f"b{gpu}", TESTBOX_IMAGE, task))
    free = asyncio.run(store.reserve(node, ONE_GPU, [2], "b2", TESTBOX_IMAGE, task))  # the free one is B's to take
    assert free.claim_id is not None
    made.append(free.claim_id)

    earlier = asyncio.run(find_earlier([host], task, B))
    assert [e.container_id for e in earlier] == [b_task]  # A's container of the same task is not B's to adopt

    def ended(refs: Sequence[TaskInstanceRef]) -> Known:
        return Known({r: "failed" for r in refs}, {r.dag_id for r in refs})

    swept = asyncio.run(sweep([host], ended, grace_s=1, deployment=B))
    assert [r.container_id for r in swept.reaped] == [b_task]
    assert a_task in ids(dockerd) and b_task not in ids(dockerd)

    seen_by_a = asyncio.run(read_pool_view([host], tidy=True, grace_s=1.0, deployment=A))
    assert [c.owner for c in seen_by_a.hosts[0].stale] == ["a-dead"]  # A reclaims its own
    assert a_dead not in ids(dockerd) and a_task in ids(dockerd)


@pytest.mark.parametrize("skew_s", [600.0, -600.0], ids=["worker-10-min-ahead", "worker-10-min-behind"])
def test_ages_are_the_engines_whatever_the_workers_clock_says(
    dockerd: PrivateDockerd, agent: RunningAgent, made: list[str], monkeypatch: pytest.MonkeyPatch, skew_s: float,
) -> None:
    """A dead claim (its task gone for longer than the grace) is reclaimed and a live one (made
    within the grace, its task about to start) is kept, by a reader whose clock is 10 minutes
    off: ahead, it would reclaim the live claim; behind, it would keep the dead one."""
    host = HostConfig("shared", dockerd.url, agent.url)
    deployment = f"skew-{int(skew_s)}"
    made.append(dead := claim(host, f"dead{int(skew_s)}", 0, deployment))
    time.sleep(4.0)
    made.append(live := claim(host, f"live{int(skew_s)}", 1, deployment))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew_s)

    view = asyncio.run(read_pool_view([host], tidy=True, grace_s=3.0, deployment=deployment))

    assert [c.container_id for c in view.hosts[0].stale] == [dead]
    assert dead not in ids(dockerd) and live in ids(dockerd)
    assert [c.container_id for c in view.hosts[0].claims] == [live]
