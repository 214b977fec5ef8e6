"""Waiting for GPUs on a real engine with a real node agent (2 simulated GPUs).

The pool is made full with real reservations; a timer releases them while the sensor, the
trigger or the operator waits, which must then see the room and go on. Every engine, agent,
claim and hold is created here and removed by id/pid.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from provider.errors import NoRoom

from provider.scheduling.no_fit import NoFit
from provider.clients.engine import AsyncEngine
from provider.clients.hosts import resolve_pool
from provider.operators.gpu_docker import GpuDockerOperator
from provider.labels import CLAIM_LABEL, HOLD_LABEL, OWNER_LABEL, WAIT_LABEL
from provider.task_instance import TaskInstanceRef
from provider.reservations.placement import Reserved
from provider.reservations.pool import read_pool_view
from provider.reservations.queueing import QueueTicket, keep_place, line_answer
from provider.reservations.deployment import current_deployment
from provider.reservations.rules import hold_labels, hold_name
from provider.reservations.store import lift_holds
from provider.scheduling.model import PlacementRequest
from provider.scheduling.queues import Amounts, Waiting as LineWaiting
from provider.scheduling.waiting import Waiter
from provider.sensors.gpu_available import GpuAvailableSensor
from provider.triggers.gpu_available import GpuAvailableTrigger, first_event
from tests.conftest import FakeTI, TaskLog, eventually, release_now, reserve_now, run_task
from tests.integration.agents import RunningAgent, gpus, start_agent, stop_agent
from tests.integration.conftest import define_host
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd

pytestmark = pytest.mark.integration

HOST = "wait_a"
FREED_AFTER_S = 3.0


@dataclass
class Pool:
    engine: PrivateDockerd
    agent: RunningAgent


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    workdir: Path = tmp_path_factory.mktemp("wait")
    engine = PrivateDockerd(HOST, simulated_gpus=True).start()
    agent = None
    try:
        engine.load(TESTBOX_IMAGE)
        agent = start_agent(workdir, HOST, gpus(2, "A100-80GB", 81920))
        yield Pool(engine, agent)
    finally:
        if agent is not None:
            stop_agent(agent.process)
        engine.stop()


@pytest.fixture(autouse=True)
def connection(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    define_host(monkeypatch, HOST, pool.engine.url, pool.agent.url)
    yield
    assert labelled(pool.engine, CLAIM_LABEL) == [], "a test left a reservation behind"
    assert labelled(pool.engine, HOLD_LABEL) == [], "a test left a hold behind"
    assert labelled(pool.engine, WAIT_LABEL) == [], "a test left a place in line behind"


def labelled(engine: PrivateDockerd, label: str) -> list[str]:
    return [x["Id"] for x in engine.containers(f"{label}=true")]


def reserve(gpus_: int, waiter: Waiter | None = None) -> Reserved:
    hosts = resolve_pool([HOST], BaseHook.get_connection)
    return reserve_now(hosts, PlacementRequest(gpus=gpus_), image=TESTBOX_IMAGE,
                       task=TaskInstanceRef("hog", "train", "r0", -1, 1), waiter=waiter)


@pytest.fixture
def full_then_freed() -> Iterator[threading.Timer]:
    """Both GPUs reserved now, released after FREED_AFTER_S."""
    held = reserve(2)
    timer = threading.Timer(FREED_AFTER_S, release_now, args=(held,))
    timer.start()
    yield timer
    timer.cancel()
    release_now(held)


def sensor(**kwargs: Any) -> GpuAvailableSensor:
    return GpuAvailableSensor(task_id="room", gpu_pool=[HOST], gpus=1, poke_interval=0.5, timeout=60, **kwargs)


def run_trigger(trigger: GpuAvailableTrigger) -> dict[str, Any]:
    return asyncio.run(first_event(trigger))


def test_sensor_in_poke_mode_succeeds_once_a_gpu_is_freed(full_then_freed: threading.Timer) -> None:
    start = time.monotonic()
    assert sensor(mode="poke").execute({"ti": FakeTI()}) == HOST
    assert time.monotonic() - start >= FREED_AFTER_S - 0.5


def test_deferrable_sensor_defers_and_its_trigger_fires_when_a_gpu_is_freed(full_then_freed: threading.Timer) -> None:
    s = sensor(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        s.execute({"ti": FakeTI()})
    trigger = deferred.value.trigger
    assert isinstance(trigger, GpuAvailableTrigger)
    classpath, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs))["pool"] == [HOST]  # connection ids: no token, no TLS path stored
    event = run_trigger(type(trigger)(**kwargs))  # what the triggerer rebuilds from the kwargs
    assert classpath == "provider.triggers.gpu_available.GpuAvailableTrigger"
    assert event["status"] == "fits" and event["host"] == HOST
    assert s.execute_complete({}, event) == HOST


def test_sensor_fails_at_once_when_no_host_could_ever_fit() -> None:
    start = time.monotonic()
    with pytest.raises(AirflowFailException,
                       match="gpu free 2 of 2 < 3. No host of the pool could take it even with nothing else running"):
        GpuAvailableSensor(task_id="big", gpu_pool=[HOST], gpus=3, poke_interval=0.5, timeout=60).execute({})
    assert time.monotonic() - start < 10


def test_waiting_operator_runs_once_a_gpu_is_freed(full_then_freed: threading.Timer, task_log: TaskLog) -> None:
    ti = FakeTI()
    op = GpuDockerOperator(task_id="train", image=TESTBOX_IMAGE, command=["sh", "-c", "echo trained"], gpus=1,
                           gpu_pool=[HOST], pull="never", log_archive=None, wait_for_resources=True,
                           deferrable=False, poll_interval=0.5, wait_timeout=60)
    start = time.monotonic()
    result = run_task(op, ti)
    assert result["exit_code"] == 0 and result["host"] == HOST
    assert time.monotonic() - start >= FREED_AFTER_S - 0.5
    assert "trained" in task_log.texts()


def test_deferred_operator_resumes_when_the_reservation_is_released(
    full_then_freed: threading.Timer, task_log: TaskLog
) -> None:
    ti = FakeTI()
    op = GpuDockerOperator(task_id="train", image=TESTBOX_IMAGE, command=["sh", "-c", "echo resumed"], gpus=1,
                           gpu_pool=[HOST], pull="never", log_archive=None, wait_for_resources=True,
                           deferrable=True, poll_interval=0.5, wait_timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        run_task(op, ti)
    assert deferred.value.method_name == "execute_complete"
    event = run_trigger(deferred.value.trigger)  # type: ignore[arg-type]
    result = run_task(op, ti, event)
    assert result["exit_code"] == 0 and "resumed" in task_log.texts()


def test_waiting_operator_times_out_with_every_reason() -> None:
    held = reserve(2)
    try:
        op = GpuDockerOperator(task_id="train", image=TESTBOX_IMAGE, gpus=1, gpu_pool=[HOST], pull="never",
                               log_archive=None, wait_for_resources=True, deferrable=False, poll_interval=0.5,
                               wait_timeout=2)
        with pytest.raises(NoRoom, match=f"Still no room at the deadline, after wait_timeout=2 s: .*{HOST}: "
                                         r"gpu free 0 of 2 < 1 \(held by hog.train r0\).*Raise wait_timeout"):
            run_task(op, FakeTI())
    finally:
        release_now(held)


def test_a_due_waiter_holds_the_host_against_younger_and_non_waiting_requests(pool: Pool) -> None:
    """The large request has waited past hold_after_s: its trigger holds the host; then a
    1-GPU request that does not wait, and one that waits but came later, are refused there
    although a GPU is free; once the host drains, the large one gets both GPUs."""
    small = reserve(1)
    hosts = resolve_pool([HOST], BaseHook.get_connection)
    old = Waiter(owner="bigjob0000000001", since=time.time() - 100)
    trigger = GpuAvailableTrigger(
        pool=[HOST],
        request={"gpus": 2}, policy="least_loaded", deadline=time.time() + 60, poll_interval=0.5,
        waiter={"owner": old.owner, "since": old.since}, hold_after_s=10, image=TESTBOX_IMAGE,
        task=TaskInstanceRef("big", "train", "r1").to_dict(),
    )
    result: dict[str, Any] = {}
    waiting = threading.Thread(target=lambda: result.update(run_trigger(trigger)))
    waiting.start()
    try:
        eventually(lambda: labelled(pool.engine, HOLD_LABEL), 30, what="the due waiter's hold on the host")
        with pytest.raises(NoFit, match="held for big.train r1"):
            reserve(1)
        with pytest.raises(NoFit, match="held for big.train r1"):
            reserve(1, waiter=Waiter(owner="young", since=time.time()))
    finally:
        release_now(small)
    waiting.join(30)
    assert result["status"] == "fits" and result["gpu_ids"] == [0, 1]
    big = reserve(2, waiter=old)  # the task resumes, reserves, and lifts its hold
    release_now(big)
    assert labelled(pool.engine, HOLD_LABEL) == []
    assert asyncio.run(read_pool_view(hosts)).nodes[0].held is None


def test_a_lapsed_hold_is_removed_by_the_next_read_and_frees_the_host(pool: Pool) -> None:
    """A hold whose task died without its clean-up lapses at the end of that task's wait:
    whoever reads the host next removes it, and the host serves everyone again."""
    hosts = resolve_pool([HOST], BaseHook.get_connection)
    now = time.time()
    gone = TaskInstanceRef("gone", "t", "r")
    for owner, lease in (("lapsed00000001", 1.0), ("current0000001", 60.0)):
        labels = hold_labels(owner, now - 120, lease, gone, deployment=current_deployment())
        assert asyncio.run(AsyncEngine(hosts[0]).create_idle(hold_name(owner), TESTBOX_IMAGE, labels)) is not None
    time.sleep(2.5)  # the first lease ends, by the engine's clock
    try:
        view = asyncio.run(read_pool_view(hosts))
        assert [h.hold.owner for h in view.holds] == ["current0000001"]
        left = [x["Names"] for x in pool.engine.containers(f"{HOLD_LABEL}=true")]
        assert left == [["/" + hold_name("current0000001")]]
        assert view.nodes[0].held is not None  # the live hold still keeps the host
    finally:
        asyncio.run(lift_holds(hosts, "current0000001"))
    assert asyncio.run(read_pool_view(hosts)).nodes[0].held is None


QUEUES = {"vision": {"quota": {"gpus": 1}}, "nlp": {"quota": {"gpus": 1}}}
"""The queued pool of the line's tests: the host's two GPUs, one each; either may borrow the other's."""


def ticket(queue: str, priority: int = 1) -> QueueTicket:
    found = QueueTicket.of("wait_q", {"hosts": [HOST], "queues": QUEUES}, queue, priority)
    assert found is not None
    return found


def claim_for(queue: str, who: str) -> Reserved:
    """One GPU claimed for ``queue`` (admitted like a task), held by the task ``who``."""
    hosts = resolve_pool([HOST], BaseHook.get_connection)
    return reserve_now(hosts, PlacementRequest(gpus=1), image=TESTBOX_IMAGE, ticket=ticket(queue),
                       task=TaskInstanceRef(who, "train", "r0", -1, 1))


class Waiting:
    """A task of the queued pool waiting in a trigger of its own, on a thread with its own event
    loop; its event once fired. :meth:`stop` ends the wait as a killed task's does."""

    def __init__(self, queue: str, owner: str, since: float, priority: int = 1) -> None:
        self.waiter = Waiter(owner, since)
        self.ticket = ticket(queue, priority)
        self.trigger = GpuAvailableTrigger(
            pool=[HOST], request={"gpus": 1}, policy="least_loaded",
            deadline=time.time() + 120, poll_interval=0.3, waiter={"owner": owner, "since": since},
            hold_after_s=None, image=TESTBOX_IMAGE, task=TaskInstanceRef(owner, "train", "r1").to_dict(),
            queue=self.ticket.to_dict())
        self.event: dict[str, Any] = {}
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(first_event(self.trigger))
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.event.update(self.loop.run_until_complete(self.task))
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def stop(self) -> None:
        """Cancel the wait if it goes on, and give the place in line back (the trigger's on_kill)."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(30)
        asyncio.run(lift_holds(resolve_pool([HOST], BaseHook.get_connection), self.waiter.owner))

    def reserve(self) -> Reserved:
        """What the task does when its trigger fires: place again, in line, and claim."""
        hosts = resolve_pool([HOST], BaseHook.get_connection)
        return reserve_now(hosts, PlacementRequest(gpus=1), image=TESTBOX_IMAGE, ticket=self.ticket,
                           waiter=self.waiter, task=TaskInstanceRef(self.waiter.owner, "train", "r1", -1, 1))


def places(engine: PrivateDockerd) -> list[str]:
    """The owners of the places in line on ``engine``."""
    return sorted(x["Labels"][OWNER_LABEL] for x in engine.containers(f"{WAIT_LABEL}=true"))


def test_the_queue_below_its_share_gets_the_freed_gpu_before_an_earlier_borrower(pool: Pool) -> None:
    """nlp borrows vision's GPU (both GPUs are nlp's). An nlp task waits first, a vision task
    later; when one nlp GPU is freed, the vision task starts and the nlp task keeps waiting."""
    hogs = [claim_for("nlp", "hog1"), claim_for("nlp", "hog2")]
    nlp = Waiting("nlp", "nlpwaiter0000001", time.time() - 30)
    vision = Waiting("vision", "viswaiter0000001", time.time())
    got: list[Reserved] = []
    try:
        eventually(lambda: places(pool.engine) == ["nlpwaiter0000001", "viswaiter0000001"], 30,
                   what="both waiters' places in line on the host")
        release_now(hogs.pop())
        vision.thread.join(30)
        assert vision.event["status"] == "fits"
        got.append(vision.reserve())
        assert str(got[0].line) == "queue vision: 0 of 1 GPUs in use; position 1 of 2"
        time.sleep(1.5)  # several polls: the nlp task has not been let in
        assert nlp.thread.is_alive() and places(pool.engine) == ["nlpwaiter0000001"], (nlp.event, places(pool.engine))
    finally:
        for r in hogs + got:
            release_now(r)
        nlp.thread.join(30)
        nlp.stop()
        vision.stop()
    assert nlp.event["status"] == "fits"  # alone in line once the pool is free


def test_a_high_priority_task_starts_before_five_earlier_ones_of_its_queue(pool: Pool) -> None:
    """Five vision tasks of priority 1 wait, then one of priority 10 comes: when vision's GPU
    is freed, the later, higher-priority one starts. The earliest low one is told position 2
    of 6 before, and position 1 of 5 after."""
    hogs = [claim_for("vision", "hog1"), claim_for("nlp", "hog2")]
    now = time.time()
    low = [Waiting("vision", f"low{i:013d}", now - 60 + i) for i in range(5)]
    high: Waiting | None = None
    got: list[Reserved] = []
    try:
        eventually(lambda: len(places(pool.engine)) == 5, 30, what="five places in line")
        high = Waiting("vision", "high000000000001", time.time(), priority=10)
        eventually(lambda: len(places(pool.engine)) == 6, 30, what="the sixth place in line")
        assert str(asyncio.run(_line_of(low[0]))).startswith("queue vision: 1 of 1 GPUs in use; position 2 of 6")
        release_now(hogs.pop(0))
        high.thread.join(30)
        assert high.event["status"] == "fits"
        got.append(high.reserve())
        time.sleep(1.0)  # several polls: vision's GPU is the high one's now, the low ones wait on
        assert all(w.thread.is_alive() for w in low), [w.event for w in low]
        assert "position 1 of 5; waits for its queue: queue vision: 1 GPUs in use (quota 1)" in \
            str(asyncio.run(_line_of(low[0])))
    finally:
        for w in [*low, *([high] if high else [])]:
            w.stop()
        for r in hogs + got:
            release_now(r)


async def _line_of(w: Waiting) -> Any:
    """Where ``w`` stands now, as its trigger works it out."""
    hosts = resolve_pool([HOST], BaseHook.get_connection)
    view = await read_pool_view(hosts, w.waiter)
    return line_answer(view, w.ticket, w.waiter.owner, w.waiter.since, PlacementRequest(gpus=1), False, None)


def test_a_renewed_place_in_line_is_made_before_the_old_one_goes(pool: Pool) -> None:
    """A place in line is renewed by making it again (a container's labels are fixed): the new one
    is made first, so at no instant, as the engine saw it, is the waiter missing from the line,
    and a task behind it that reads the line then cannot start ahead of it."""
    hosts = resolve_pool([HOST], BaseHook.get_connection)
    request = PlacementRequest(gpus=1)
    me = LineWaiting("renewer000000001", "vision", 1, time.time(), Amounts.of(request.resources), "renewer.train")
    since = time.time()

    async def place_then_renew_twice() -> None:
        for renew in (False, True, True):
            view = await read_pool_view(hosts, tidy=False)
            await keep_place(hosts, view, me, request, TaskInstanceRef(me.owner, "train", "r1"), TESTBOX_IMAGE,
                             "wait_q", lease=60.0, renew=renew)
    try:
        asyncio.run(place_then_renew_twice())
        assert len(places(pool.engine)) == 1
        with pool.engine.client() as c:
            events = list(c.api.events(since=int(since), until=int(time.time()) + 1, decode=True,
                                       filters={"type": "container", "label": [f"{WAIT_LABEL}=true", f"{OWNER_LABEL}={me.owner}"]}))
        steps = [e["Action"] for e in sorted(events, key=lambda e: e["timeNano"]) if e["Action"] in ("create", "destroy")]
        assert steps == ["create", "create", "destroy", "create", "destroy"], steps
    finally:
        asyncio.run(lift_holds(hosts, me.owner))


def test_a_task_over_its_own_queues_limit_holds_no_host(pool: Pool) -> None:
    """vision may use one GPU and borrow none, and uses it; a second vision task, due at once,
    waits without holding the host: the host's other GPU stays free for nlp."""
    declared = {"hosts": [HOST], "queues": {"vision": {"quota": {"gpus": 1}, "borrowing_limit": {"gpus": 0}},
                                            "nlp": {"quota": {"gpus": 1}}}}
    strict = QueueTicket.of("wait_q", declared, "vision", 1)
    assert strict is not None
    hosts = resolve_pool([HOST], BaseHook.get_connection)
    hog = reserve_now(hosts, PlacementRequest(gpus=1), image=TESTBOX_IMAGE, ticket=strict,
                      task=TaskInstanceRef("hog", "train", "r0", -1, 1))
    trigger = GpuAvailableTrigger(
        pool=[HOST], request={"gpus": 1}, policy="least_loaded", deadline=time.time() + 6,
        poll_interval=0.5, waiter={"owner": "overlimit0000001", "since": time.time() - 60}, hold_after_s=0,
        image=TESTBOX_IMAGE, task=TaskInstanceRef("over", "train", "r1").to_dict(), queue=strict.to_dict())
    event: dict[str, Any] = {}
    waiting = threading.Thread(target=lambda: event.update(run_trigger(trigger)))
    waiting.start()
    try:
        eventually(lambda: labelled(pool.engine, WAIT_LABEL), 10, what="the task's place in line")
        time.sleep(1.5)  # three polls past due: a hold would be there by now
        assert labelled(pool.engine, HOLD_LABEL) == []
        waiting.join(30)
        assert event["status"] == "timeout" and "over what the queue may use (1)" in event["message"], event
    finally:
        waiting.join(30)
        release_now(hog)
        asyncio.run(lift_holds(hosts, "overlimit0000001"))
