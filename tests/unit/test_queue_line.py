"""Queues as a pool connection declares them, a task's place in line and what it is told, and
the records on the hosts that carry the line: each against cases worked out by hand.

The pool of these cases: ``vision`` has a quota of 8 GPUs, ``nlp`` 4 and may borrow 4 more."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

from provider.errors import HostConfigError
from provider.operators.priority import effective_priority
from provider.reservations.queueing import QueueTicket, check_quotas, line_answer, never_admitted
from provider.reservations.rules import HoldRecord, PlaceInLine, claim_labels, line_labels, parse_claim, parse_place_in_line
from provider.reservations.strict import CREATED_RESOLUTION_S
from provider.reservations.view import HostView, PoolView
from provider.scheduling.line import place_in_line, queue_state, room_taker
from provider.scheduling.model import GpuState, NodeState, PlacementRequest, Resources
from provider.scheduling.no_fit import NoFit
from provider.scheduling.queues import Amounts, Waiting, queues_from_extra
from provider.scheduling.waiting import Hold
from provider.task_instance import TaskInstanceRef

G = 1000
EXTRA = {"hosts": ["h1", "h2"], "queues": {"vision": {"quota": {"gpus": 8}},
                                         "nlp": {"quota": {"gpus": 4}, "borrowing_limit": {"gpus": 4}, "weight": 1}}}
SETUP = queues_from_extra(EXTRA, "gpu_pool")[0]  # type: ignore[index]
TASK = TaskInstanceRef("train", "fit", "manual__1", -1, 1)


def gpus(n: float) -> Amounts:
    return Amounts(gpu_milli=round(n * G))


def waiting(owner: str, queue: str, n: float, since: float, priority: int = 1) -> Waiting:
    return Waiting(owner, queue, priority, since, gpus(n), task=f"train.{owner}")


def test_a_pool_connection_declares_queues_in_gpus_and_cpus() -> None:
    setup, default = queues_from_extra({"queues": {"a": {"quota": {"gpus": 1.5, "cpus": 8, "memory_mb": 1024},
                                                         "lending_limit": {"gpus": 0.5}, "weight": 2}},
                                        "default_queue": "a"}, "p")  # type: ignore[misc]
    assert default == "a"
    spec = setup["a"]
    assert spec.quota == {"gpu_milli": 1500, "cpu_milli": 8000, "memory_mb": 1024}
    assert spec.lending_limit == {"gpu_milli": 500} and spec.weight == 2.0


def test_a_pool_without_queues_stays_first_come_first_served() -> None:
    assert queues_from_extra({"hosts": ["h1"]}, "p") is None


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        pytest.param({"queues": []}, r'"queues" must be an object of queue names', id="not-an-object"),
        pytest.param({"queues": {"a": {"gpus": 2}}}, r'queue .a. must be an object with a "quota"', id="no-quota"),
        pytest.param({"queues": {"a": {"quota": {"gpus": 2}, "limit": 1}}}, r"unknown keys \['limit'\]",
                     id="unknown-key"),
        pytest.param({"queues": {"a": {"quota": {"gpus": 2}, "borrowing_limit": {"gpus": -1}}}},
                     r"borrowing_limit gpus=-1; it must be a number >= 0", id="negative-limit"),
        pytest.param({"queues": {"a": {"quota": {"gpus": math.inf}}}}, r"quota gpus=inf", id="infinite-quota"),
        pytest.param({"queues": {"a": {"quota": {"tpus": 2}}}}, r"quota names 'tpus'; use gpus, cpus, memory_mb",
                     id="unknown-resource"),
        pytest.param({"queues": {"a": {"quota": {"gpus": 2}, "weight": 0}}}, r"weight=0.0; it must be > 0",
                     id="zero-weight"),
        pytest.param({"queues": {"a": {"quota": {"gpus": 2}}}, "default_queue": "b"},
                     r'"default_queue" is .b., not one of its queues \(a\)', id="unknown-default"),
        pytest.param({"default_queue": "a"}, r'"default_queue" is set but no "queues"', id="default-without-queues"),
        pytest.param({"queues": {"a": {"quota": {"gpus": 2}, "lending_limit": {"cpus": 1}}}},
                     r"a limit on cpu_milli without a quota for it", id="limit-without-quota"),
    ],
)
def test_a_queue_definition_that_cannot_work_names_the_connection_and_the_fix(extra: dict[str, Any], says: str) -> None:
    with pytest.raises(HostConfigError, match=says) as failed:
        queues_from_extra(extra, "gpu_pool")
    assert "Pool connection 'gpu_pool'" in str(failed.value)


@pytest.mark.parametrize(
    ("extra", "queue", "says"),
    [
        pytest.param(EXTRA, "speech", r"gpu_queue='speech' is not a queue of pool connection 'gpu_pool'; its queues "
                     r"are nlp, vision", id="unknown-queue"),
        pytest.param(EXTRA, None, r"pass gpu_queue=, or give the pool a \"default_queue\"", id="no-queue-no-default"),
        pytest.param({"hosts": ["h1"]}, "vision", r"declares no queues", id="queue-on-a-pool-without"),
    ],
)
def test_a_task_naming_no_queue_or_an_unknown_one_is_told_which_there_are(
    extra: dict[str, Any], queue: str | None, says: str
) -> None:
    with pytest.raises(HostConfigError, match=says):
        QueueTicket.of("gpu_pool", extra, queue, 1)


def test_a_ticket_travels_to_the_trigger_and_back() -> None:
    ticket = QueueTicket.of("gpu_pool", {**EXTRA, "default_queue": "nlp"}, None, 7)
    assert ticket is not None and ticket.queue == "nlp"
    again = QueueTicket.from_dict(json.loads(json.dumps(ticket.to_dict())))
    assert (again.queue, again.priority, dict(again.setup)) == ("nlp", 7, dict(ticket.setup))


def slots(n: int) -> Callable[[Waiting], bool]:
    """A ``take`` for a pool with room for ``n`` one-GPU tasks."""
    left = [n]

    def take(w: Waiting) -> bool:
        if left[0] < 1:
            return False
        left[0] -= 1
        return True

    return take


def test_a_task_admitted_and_first_starts() -> None:
    answer = place_in_line(waiting("a", "vision", 2, 10.0), [], {"vision": gpus(6)}, SETUP, lambda w: True)
    assert answer.start and (answer.position, answer.length) == (1, 1)
    assert answer.as_record()["waits_for"] is None


def test_the_queue_below_its_share_goes_first_and_the_other_is_told_who() -> None:
    """nlp borrows 3 beyond its quota of 4 (7 in use); vision uses 1 of 8. A vision task that
    came later is ahead of the waiting nlp task, and the nlp task is told so, by name."""
    usage = {"vision": gpus(1), "nlp": gpus(7)}
    early_nlp, late_vision = waiting("n1", "nlp", 1, 10.0), waiting("v1", "vision", 1, 20.0)
    answer = place_in_line(early_nlp, [late_vision], usage, SETUP, slots(1))
    assert not answer.start and (answer.position, answer.length) == (2, 2)
    assert str(answer) == ("queue nlp: 7 of 4 GPUs in use; position 2 of 2; train.v1 of queue vision goes first")
    assert place_in_line(late_vision, [early_nlp], usage, SETUP, slots(1)).start
    assert place_in_line(early_nlp, [late_vision], usage, SETUP, slots(2)).start  # room for both: both start


def test_a_higher_priority_task_of_the_queue_goes_before_earlier_ones() -> None:
    line = [waiting(f"low{i}", "vision", 1, float(i)) for i in range(5)]
    urgent = waiting("urgent", "vision", 1, 100.0, priority=10)
    assert place_in_line(urgent, line, {}, SETUP, slots(1)).start
    behind = place_in_line(line[0], [*line, urgent], {}, SETUP, slots(1))
    assert (behind.start, behind.position, behind.first) == (False, 2, urgent)
    third = place_in_line(line[1], [*line, urgent], {}, SETUP, slots(2))  # urgent and low0 go first
    assert (third.start, third.position, third.first) == (False, 3, urgent)


def test_a_task_ahead_that_cannot_start_holds_no_one_back() -> None:
    """The large vision task is first but fits no host; the small one behind it starts."""
    large, small = waiting("big", "vision", 8, 1.0), waiting("small", "vision", 1, 2.0)
    answer = place_in_line(small, [large], {}, SETUP, lambda w: w.owner != "big")
    assert answer.start and answer.position == 2


def test_tasks_ahead_that_start_count_against_the_queue_of_those_behind() -> None:
    """vision has 7 of its 8 GPUs in use; two vision tasks of one GPU wait and the pool has room
    for both: the first starts, and the second is told its queue is full after the first."""
    usage = {"vision": gpus(7), "nlp": gpus(4)}
    first, second = waiting("v1", "vision", 1, 1.0), waiting("v2", "vision", 1, 2.0)
    assert place_in_line(first, [second], usage, SETUP, slots(2)).start
    answer = place_in_line(second, [first], usage, SETUP, slots(2))
    assert not answer.start and answer.short is not None and answer.short.used == 8 * G


def test_room_is_counted_once_for_the_tasks_ahead() -> None:
    """Two hosts with one free GPU each: two one-GPU tasks fit, the third does not, and a
    two-GPU task fits neither host's remainder."""
    hosts = [_host("h1", 1), _host("h2", 1)]
    take = room_taker(hosts)
    one = waiting("a", "vision", 1, 1.0)
    assert [take(one, PlacementRequest(gpus=1)) for _ in range(3)] == [True, True, False]
    assert not room_taker(hosts)(one, PlacementRequest(gpus=2))


def test_a_queue_over_its_limits_waits_for_itself_and_says_what_it_uses() -> None:
    usage = {"nlp": gpus(8), "vision": gpus(0)}
    answer = place_in_line(waiting("n", "nlp", 1, 1.0), [], usage, SETUP, lambda w: True)
    assert not answer.start
    assert str(answer) == ("queue nlp: 8 of 4 GPUs in use; position 1 of 1; waits for its queue: queue nlp: 8 GPUs "
                           "in use (quota 4, borrowing up to 4 more), asks 1, over what the queue may use (8)")
    assert queue_state("vision", usage, SETUP) == "queue vision: 0 of 8 GPUs in use; nlp borrows 4"


def test_a_no_fit_in_line_says_its_place_and_the_hosts() -> None:
    request = PlacementRequest(gpus=2)
    no_fit = NoFit(request, {}, line="queue nlp: 7 of 4 GPUs in use; position 2 of 2")
    assert str(no_fit.advised("Pass wait_for_resources=True.")) == (
        "gpus=2 waits in line: queue nlp: 7 of 4 GPUs in use; position 2 of 2. Pass wait_for_resources=True.")


def test_a_claim_names_its_queue_and_a_place_in_line_reads_back() -> None:
    labels = claim_labels(Resources(gpus=1), [0], "o1", TASK, "vision", deployment="dep")
    claim = parse_claim({"Id": "c1", "Created": 5, "Labels": labels})
    assert claim is not None and claim.queue == "vision"
    request = PlacementRequest(gpus=2, cpu_milli=500, labels={"zone": "a"})
    me = Waiting("o2", "nlp", 3, 12.5, Amounts.of(request.resources), str(TASK))
    place = parse_place_in_line("h1", {"Id": "w1", "Created": 9,
                                       "Labels": line_labels(me, request, 90.0, TASK, "gpu_pool", deployment="dep")})
    assert place is not None
    assert (place.waiting, place.request, place.expires, place.host, place.pool) == (me, request, 99.0 + CREATED_RESOLUTION_S, "h1",
                                                                                      "gpu_pool")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param({"airflow-gpu-docker.wait.since": "nan"}, id="since-not-finite"),
        pytest.param({"airflow-gpu-docker.wait.lease-s": "inf"}, id="lease-not-finite"),
        pytest.param({"airflow-gpu-docker.wait.lease-s": "-60"}, id="lease-negative"),
        pytest.param({"airflow-gpu-docker.wait.priority": "1e400"}, id="priority-huge"),
        pytest.param({"airflow-gpu-docker.wait.request": "{\"gpus\": -1}"}, id="request-not-a-request"),
        pytest.param({"airflow-gpu-docker.wait.request": "[1]"}, id="request-not-an-object"),
        pytest.param({"airflow-gpu-docker.wait.priority": "high"}, id="priority-not-a-number"),
    ],
)
def test_a_malformed_place_in_line_is_ignored(damage: dict[str, str]) -> None:
    labels = line_labels(Waiting("o", "nlp", 1, 1.0, gpus(1)), PlacementRequest(gpus=1), 9.0, TASK, "gpu_pool",
                         deployment="dep")
    assert set(damage) <= set(labels)
    assert parse_place_in_line("h1", {"Id": "w", "Created": 1, "Labels": labels}) is not None
    assert parse_place_in_line("h1", {"Id": "w", "Created": 1, "Labels": {**labels, **damage}}) is None


def _pool(*nodes: NodeState) -> PoolView:
    return PoolView(tuple(HostView(node=n, measured=n) for n in nodes))


def _host(name: str, n_gpus: int) -> NodeState:
    return NodeState(name=name, cpu_milli=8000, memory_mb=32_000,
                     gpus=tuple(GpuState(index=i, memory_total_mb=16_000) for i in range(n_gpus)))


def test_quotas_larger_than_the_pool_are_refused_once_every_host_answered() -> None:
    ticket = QueueTicket.of("gpu_pool", EXTRA, "vision", 1)
    assert ticket is not None
    check_quotas(_pool(_host("h1", 8), _host("h2", 4)), ticket)  # 12 GPUs: the quotas fit
    with pytest.raises(HostConfigError, match=r"quotas of gpu_milli add up to 12 GPUs but its hosts have 10"):
        check_quotas(_pool(_host("h1", 8), _host("h2", 2)), ticket)
    check_quotas(_pool(_host("h1", 8), NodeState(name="h2", unreachable="agent refused")), ticket)


def test_a_task_is_ordered_by_the_priority_airflow_computes_for_it() -> None:
    with DAG("prio"):
        first = EmptyOperator(task_id="first", priority_weight=5)
        second = EmptyOperator(task_id="second")
        last = EmptyOperator(task_id="last", weight_rule="absolute", priority_weight=7)
        up = EmptyOperator(task_id="up", weight_rule="upstream")
        first >> second >> last >> up
    assert [effective_priority(t) for t in (first, second, last, up)] == [5 + 1 + 7 + 1, 1 + 7 + 1, 7, 1 + 5 + 1 + 7]
    assert effective_priority(EmptyOperator(task_id="alone", priority_weight=3)) == 3


def _place(owner: str, queue: str, since: float, pool: str = "gpu_pool", n: int = 1) -> PlaceInLine:
    request = PlacementRequest(gpus=n)
    me = Waiting(owner, queue, 1, since, Amounts.of(request.resources), f"train.{owner}")
    place = parse_place_in_line("h1", {"Id": owner, "Created": 1,
                                       "Labels": line_labels(me, request, 3600, TASK, pool, deployment="dep")})
    assert place is not None
    return place


def test_places_of_other_pools_and_of_queues_not_declared_are_not_in_the_line() -> None:
    """A queue renamed while its tasks wait, and a second pool keeping its line on the same host:
    neither crashes the reader nor stands in its line."""
    ticket = QueueTicket.of("gpu_pool", EXTRA, "vision", 1)
    assert ticket is not None
    host = _host("h1", 1)
    view = PoolView((HostView(node=host, measured=host,
                              line=(_place("old", "speech", 1.0), _place("other", "vision", 2.0, pool="pool_b"))),))
    answer = line_answer(view, ticket, "me", 3.0, PlacementRequest(gpus=1), True, None)
    assert (answer.start, answer.position, answer.length) == (True, 1, 1)


def test_a_hold_counts_as_each_waiter_sees_it_so_two_waiters_never_wait_for_each_other() -> None:
    """nlp's task waited first and holds h1, whose GPU is the only free one; vision's task came
    later and is ahead in line (its queue is below its share). The hold keeps h1 from vision's
    task, so nlp's starts: neither waits for the other."""
    ticket_nlp, ticket_vision = QueueTicket.of("gpu_pool", EXTRA, "nlp", 1), QueueTicket.of("gpu_pool", EXTRA, "vision", 1)
    assert ticket_nlp is not None and ticket_vision is not None
    host = _host("h1", 1)
    hold = HoldRecord("hold1", 1e12, Hold("h1", "nlpwaiter", 1.0, "train.nlpwaiter"))
    usage = tuple(c for c in (parse_claim({"Id": f"c{i}", "Created": 1, "Labels": claim_labels(
        Resources(gpus=1), [0], f"o{i}", TASK, "nlp", deployment="dep")}) for i in range(4)) if c)
    line = (_place("nlpwaiter", "nlp", 1.0), _place("viswaiter", "vision", 2.0))
    seen_by_nlp = PoolView((HostView(node=host, measured=host, claims=usage, holds=(hold,), line=line),))
    held = replace(host, held="held for train.nlpwaiter, waiting first")
    seen_by_vision = PoolView((HostView(node=held, measured=host, claims=usage, holds=(hold,), line=line),))
    vision = line_answer(seen_by_vision, ticket_vision, "viswaiter", 2.0, PlacementRequest(gpus=1), False, None)
    nlp = line_answer(seen_by_nlp, ticket_nlp, "nlpwaiter", 1.0, PlacementRequest(gpus=1), True, None)
    assert (vision.start, vision.position, nlp.start, nlp.position) == (False, 1, True, 2)


def test_a_task_its_queue_could_never_admit_is_told_so() -> None:
    strict = {"queues": {"nlp": {"quota": {"gpus": 4}, "borrowing_limit": {"gpus": 0}}}}
    ticket = QueueTicket.of("gpu_pool", strict, "nlp", 1)
    assert ticket is not None
    assert never_admitted(ticket, PlacementRequest(gpus=4)) is None
    short = never_admitted(ticket, PlacementRequest(gpus=8))
    assert short is not None and "over what the queue may use (4)" in str(short)
