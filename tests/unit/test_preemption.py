"""Victim choice (provider/scheduling/preemption.py): when, whom, on which host, never more than needed.

Two queues, ``vision`` and ``nlp``, each with a quota of 2 GPUs, share hosts of 4 GPUs. Every
task here takes whole GPUs; times are seconds on one made-up clock (``NOW``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from provider.errors import HostConfigError
from provider.scheduling.accounting import apply
from provider.scheduling.model import GpuState, NodeState, PlacementRequest, Resources
from provider.scheduling.preemption import (
    KUEUE_ORDER,
    LEAST_WORK_LOST,
    Preemption,
    PreemptionRules,
    Running,
    VictimKey,
    choose,
)
from provider.scheduling.queues import Amounts, QueueSpec, Waiting, usage_by_queue

NOW = 100_000.0
QUEUES = {q: QueueSpec(q, {"gpu_milli": 2000}) for q in ("vision", "nlp")}
ANY = PreemptionRules(reclaim="any")


def run(owner: str, queue: str, host: str, gpus: Sequence[int], priority: int = 1, ran_s: float = 3600.0,
        checkpoint_age_s: float | None = None) -> Running:
    return Running(owner, queue, priority, host, tuple(gpus), Resources(gpus=len(gpus)), NOW - ran_s,
                   None if checkpoint_age_s is None else NOW - checkpoint_age_s)


def hosts(running: Sequence[Running], names: Sequence[str] = ("a",)) -> list[NodeState]:
    """Hosts of 4 GPUs with ``running`` accounted on them."""
    nodes = {n: NodeState(n, cpu_milli=64_000, memory_mb=256_000, gpus=tuple(GpuState(i) for i in range(4)))
             for n in names}
    for r in running:
        nodes[r.host] = apply(nodes[r.host], r.taken, r.gpus)
    return list(nodes.values())


def preempt(queue: str, gpus: int, running: Sequence[Running], rules: PreemptionRules = ANY, priority: int = 1,
            names: Sequence[str] = ("a",), key: VictimKey = LEAST_WORK_LOST,
            queues: Mapping[str, QueueSpec] = QUEUES) -> Preemption | None:
    request = PlacementRequest(gpus=gpus)
    waiter = Waiting("waiter", queue, priority, NOW, Amounts.of(request))
    usage = usage_by_queue((r.queue, Amounts.of(r.taken)) for r in running)
    return choose(waiter, request, hosts(running, names), running, usage, queues, rules, NOW, key)


def victims(p: Preemption | None) -> list[str]:
    return [] if p is None else [v.running.owner for v in p.victims]


# nlp borrows a GPU of vision's quota (3 of its 2), vision runs 1 of its 2: host a is full.
BORROWED = [run("n1", "nlp", "a", [0]), run("n2", "nlp", "a", [1]), run("n3", "nlp", "a", [2]),
            run("v1", "vision", "a", [3])]


@pytest.mark.parametrize(
    ("rules", "priority", "expected"),
    [
        pytest.param(ANY, 1, ["n1"], id="reclaim-any-takes-a-borrower"),
        pytest.param(PreemptionRules(), 1, [], id="default-preempts-nothing"),
        pytest.param(PreemptionRules(reclaim="lower_priority"), 1, [], id="reclaim-lower-priority-spares-equals"),
        pytest.param(PreemptionRules(reclaim="lower_priority"), 5, ["n1"], id="reclaim-lower-priority-takes-lower"),
        pytest.param(PreemptionRules(reclaim="any", min_runtime_s=7200), 1, [], id="min-runtime-spares-young-runs"),
    ],
)
def test_a_queue_below_its_quota_reclaims_what_another_borrows(rules: PreemptionRules, priority: int,
                                                               expected: list[str]) -> None:
    found = preempt("vision", 1, BORROWED, rules, priority)
    assert victims(found) == expected
    if found is not None:
        assert "queue nlp borrows beyond its quota; queue vision reclaims" in found.victims[0].why


def test_no_reclaim_beyond_the_waiters_own_quota() -> None:
    """vision would use 3 GPUs of its 2 with the waiter: that is borrowing, not reclaiming."""
    running = [run("n1", "nlp", "a", [0]), run("n2", "nlp", "a", [1]), run("v1", "vision", "a", [2]),
               run("v2", "vision", "a", [3]), run("n3", "nlp", "b", [0, 1, 2, 3])]
    assert victims(preempt("vision", 1, running, names=("a", "b"))) == []


def test_a_queue_that_only_uses_its_quota_is_never_reclaimed_from() -> None:
    running = [run("n1", "nlp", "a", [0, 1]), run("v1", "vision", "a", [2, 3])]
    assert victims(preempt("vision", 1, running)) == []


@pytest.mark.parametrize(("within", "victim_priority", "expected"), [
    pytest.param("lower_priority", 1, ["v1"], id="lower-priority-in-own-queue"),
    pytest.param("lower_priority", 10, [], id="equal-priority-is-spared"),
    pytest.param("never", 1, [], id="never"),
])
def test_within_a_queue_only_lower_priority_gives_way(within: str, victim_priority: int, expected: list[str]) -> None:
    running = [run("v1", "vision", "a", [0, 1, 2, 3], priority=victim_priority)]
    rules = PreemptionRules(within_queue=within)
    assert victims(preempt("vision", 2, running, rules, priority=10)) == expected


def test_borrowers_go_before_lower_priority_tasks_of_the_waiters_own_queue() -> None:
    running = [run("v1", "vision", "a", [0], priority=0), run("n1", "nlp", "a", [1]), run("n2", "nlp", "a", [2]),
               run("n3", "nlp", "a", [3])]
    both = PreemptionRules(reclaim="any", within_queue="lower_priority")
    assert victims(preempt("vision", 1, running, both, priority=5)) == ["n1"]


def test_the_victim_that_loses_least_work_goes_first_where_kueue_takes_the_youngest() -> None:
    """n_old ran for a day and wrote a checkpoint 60 s ago; n_new ran 600 s without one. Ours
    loses a minute of work; Kueue's order, most recently admitted first, loses ten."""
    running = [run("n_old", "nlp", "a", [0], ran_s=86_400, checkpoint_age_s=60),
               run("n_new", "nlp", "a", [1], ran_s=600), run("n3", "nlp", "a", [2], ran_s=90_000),
               run("v1", "vision", "a", [3])]
    ours, kueue = preempt("vision", 1, running), preempt("vision", 1, running, key=KUEUE_ORDER)
    assert victims(ours) == ["n_old"] and victims(kueue) == ["n_new"]
    assert ours is not None and kueue is not None and ours.work_lost_s(NOW) == 60 and kueue.work_lost_s(NOW) == 600


def test_lower_priority_goes_before_less_work_lost() -> None:
    running = [run("n1", "nlp", "a", [0], priority=3, checkpoint_age_s=1), run("n2", "nlp", "a", [1], priority=2),
               run("n3", "nlp", "a", [2], priority=3), run("v1", "vision", "a", [3])]
    assert victims(preempt("vision", 1, running)) == ["n2"]


def test_never_more_than_needed_a_victim_taken_first_is_given_back() -> None:
    """The waiter needs 2 GPUs. n1 (one GPU) comes first in victim order, then n2 (two GPUs),
    which alone frees enough: n1 keeps running."""
    running = [run("n1", "nlp", "a", [0], priority=0), run("n2", "nlp", "a", [1, 2], priority=1),
               run("n3", "nlp", "a", [3], priority=2)]
    assert victims(preempt("vision", 2, running)) == ["n2"]


def test_victims_are_on_one_host_where_enough_can_be_freed() -> None:
    """One GPU to free on each of a and b does not make room for 2 GPUs (the rest of them run
    too briefly to be preempted): only c, whose borrower takes 2 GPUs, does, although a's and
    b's victims come earlier in victim order."""
    running = [run("na", "nlp", "a", [0], priority=0), run("ya", "nlp", "a", [1, 2, 3], ran_s=1),
               run("nb", "nlp", "b", [0], priority=0), run("yb", "nlp", "b", [1, 2, 3], ran_s=1),
               run("nc", "nlp", "c", [0, 1], priority=5), run("yc", "nlp", "c", [2, 3], ran_s=1)]
    rules = PreemptionRules(reclaim="any", min_runtime_s=60)
    found = preempt("vision", 2, running, rules, names=("a", "b", "c"), queues=quotas(vision=2, nlp=10))
    assert found is not None and found.host == "c" and victims(found) == ["nc"]


def test_of_hosts_that_can_make_room_the_one_with_the_cheapest_worst_victim_is_chosen() -> None:
    running = [run("na", "nlp", "a", [0, 1, 2, 3], priority=4), run("nb", "nlp", "b", [0, 1, 2, 3], priority=2),
               run("v1", "vision", "c", [0, 1, 2, 3])]
    found = preempt("vision", 1, running, names=("a", "b", "c"), queues=quotas(vision=10, nlp=2))
    assert found is not None and (found.host, victims(found)) == ("b", ["nb"])


def quotas(**gpus: int) -> dict[str, QueueSpec]:
    """Queues with these quotas of GPUs (adding up to the hosts' GPUs: all of it is lent)."""
    return {q: QueueSpec(q, {"gpu_milli": 1000 * n}) for q, n in gpus.items()}


@pytest.mark.parametrize("bad", [{"reclaim": "sometimes"}, {"within_queue": "any"}, {"min_runtime_s": -1.0},
                                 {"min_runtime_s": float("nan")}])
def test_rules_refuse_what_they_do_not_know_naming_the_choices(bad: dict[str, object]) -> None:
    with pytest.raises(HostConfigError, match="preemption"):
        PreemptionRules(**bad)  # type: ignore[arg-type]
