"""Queues on a pool: admission within quota and by borrowing, fair-share order, priorities, and
queue definitions that cannot work, each against cases worked out by hand.

The pool of these cases has 12 GPUs. ``vision`` has a quota of 8 GPUs and lends at most 6 of
them (2 are kept for it alone); ``nlp`` has 4, lends them all and may borrow up to 4 more;
``tabular`` (in some cases) has 0 and borrows whatever is lent."""

from __future__ import annotations

import pytest

from provider.errors import HostConfigError
from provider.scheduling.model import Resources
from provider.scheduling.queues import (
    Admitted,
    Amounts,
    QueueSetup,
    QueueShort,
    QueueSpec,
    Waiting,
    admit,
    dominant_share,
    may_start,
    order,
)

G = 1000  # one GPU in milli-GPUs
VISION = QueueSpec("vision", {"gpu_milli": 8 * G}, lending_limit={"gpu_milli": 6 * G})
NLP = QueueSpec("nlp", {"gpu_milli": 4 * G}, borrowing_limit={"gpu_milli": 4 * G})
TABULAR = QueueSpec("tabular", {"gpu_milli": 0})
QUEUES = QueueSetup([VISION, NLP], capacity=Amounts(12 * G, 64_000, 512_000))


def gpus(n: float) -> Amounts:
    return Amounts(gpu_milli=round(n * G))


@pytest.mark.parametrize(
    ("queue", "asks", "usage", "answer"),
    [
        pytest.param("vision", gpus(2), {"vision": gpus(6)}, Admitted(gpus(0)), id="within-quota"),
        pytest.param("nlp", gpus(2), {"nlp": gpus(4)}, Admitted(gpus(2)), id="borrows-what-vision-leaves-idle"),
        pytest.param("nlp", gpus(2), {"nlp": gpus(7)}, QueueShort("nlp", "gpu_milli", 2 * G, 7 * G, 4 * G, 8 * G),
                     id="over-its-borrowing-limit"),
        pytest.param("nlp", gpus(0.5), {"nlp": gpus(4)}, Admitted(gpus(0.5)), id="a-share-borrows-its-part"),
        pytest.param("vision", gpus(2), {"vision": gpus(0), "nlp": gpus(8)}, Admitted(gpus(0)),
                     id="borrowed-by-others-yet-its-kept-part-is-there"),
        pytest.param("vision", Amounts(cpu_milli=500_000), {}, Admitted(gpus(0)), id="ungoverned-resource-is-free"),
    ],
)
def test_admission(queue: str, asks: Amounts, usage: dict[str, Amounts], answer: object) -> None:
    assert admit(queue, asks, usage, QUEUES) == answer


def test_a_queue_borrows_only_what_the_others_lend() -> None:
    """tabular has no quota of its own: it borrows nlp's 4 and the 6 vision lends, not the 2
    vision keeps; the 11th GPU is refused naming how much could be had."""
    queues = QueueSetup([VISION, NLP, TABULAR])
    assert admit("tabular", gpus(10), {}, queues) == Admitted(gpus(10))
    short = admit("tabular", gpus(11), {}, queues)
    assert short == QueueShort("tabular", "gpu_milli", 11 * G, 0, 0, None, room=10 * G)
    assert str(short) == ("queue tabular: 0 GPUs in use (quota 0), asks 11; 10 more can be had now, the rest of "
                          "what the queues share is in use")
    # With nlp using 3 of its own and vision 5, what is left to lend is 1 + 3 (vision keeps 2).
    usage = {"nlp": gpus(3), "vision": gpus(5)}
    assert admit("tabular", gpus(4), usage, queues) == Admitted(gpus(4))
    assert isinstance(admit("tabular", gpus(5), usage, queues), QueueShort)


def test_the_borrowing_limit_is_worded_with_the_queue_and_its_limits() -> None:
    short = admit("nlp", gpus(2), {"nlp": gpus(7)}, QUEUES)
    assert str(short) == ("queue nlp: 7 GPUs in use (quota 4, borrowing up to 4 more), asks 2, over what the queue "
                          "may use (8)")


def test_amounts_of_a_request_count_a_share_as_its_part() -> None:
    assert Amounts.of(Resources(gpus=1, gpu_milli=250, cpu_milli=2000, memory_mb=100)) == Amounts(250, 2000, 100)
    assert Amounts.of(Resources(gpus=2)) == gpus(2)
    assert Amounts.of(Resources(cpu_milli=100)) == Amounts(cpu_milli=100)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: QueueSpec("a", {"gpus": 4}), r"quota names 'gpus'; use gpu_milli, cpu_milli, memory_mb",
                     id="unknown-resource"),
        pytest.param(lambda: QueueSpec("a", {"gpu_milli": -1}), r"quota gpu_milli=-1; it must be a whole number >= 0",
                     id="negative-quota"),
        pytest.param(lambda: QueueSpec("a", {"gpu_milli": 1}, borrowing_limit={"gpu_milli": -2}),
                     r"borrowing_limit gpu_milli=-2", id="negative-limit"),
        pytest.param(lambda: QueueSpec("a", {"gpu_milli": 1.5}), r"quota gpu_milli=1.5", id="fractional-milli"),
        pytest.param(lambda: QueueSpec("a", {"gpu_milli": 1}, lending_limit={"cpu_milli": 1}),
                     r"a limit on cpu_milli without a quota for it", id="limit-without-quota"),
        pytest.param(lambda: QueueSpec("a", {"gpu_milli": 1}, weight=0), r"weight=0; it must be > 0", id="zero-weight"),
        pytest.param(lambda: QueueSetup([VISION, VISION], pool="gpu_pool_a"),
                     r"gpu_pool_a: queue 'vision' is declared twice", id="twice"),
        pytest.param(lambda: QueueSetup([VISION, NLP], capacity=gpus(10), pool="gpu_pool_a"),
                     r"gpu_pool_a: the queues' quotas of gpu_milli add up to 12 GPUs but its hosts have 10; lower",
                     id="quotas-over-the-pool"),
        pytest.param(lambda: QUEUES.known("speech", pool="gpu_pool_a"),
                     r"gpu_queue='speech' is not a queue of gpu_pool_a; its queues are nlp, vision", id="unknown-queue"),
    ],
)
def test_bad_queue_definitions(make: object, message: str) -> None:
    with pytest.raises(HostConfigError, match=message):
        make()  # type: ignore[operator]


def w(owner: str, queue: str, since: float, priority: int = 0, n: float = 1) -> Waiting:
    return Waiting(owner, queue, priority, since, gpus(n))


def owners(line: list[Waiting]) -> list[str]:
    return [x.owner for x in line]


def test_within_a_queue_priority_first_then_arrival() -> None:
    line = order([w("a", "vision", 1), w("b", "vision", 2, priority=5), w("c", "vision", 0)], {}, QUEUES)
    assert owners(line) == ["b", "c", "a"]


def test_across_queues_the_one_furthest_below_its_share_goes_first() -> None:
    """nlp uses 4 of the 12 GPUs of quota (a third), vision none: vision's heads go first until
    what they take brings vision's share up to nlp's, then they alternate."""
    waiting = [w("n1", "nlp", 0), w("n2", "nlp", 1), w("v1", "vision", 5), w("v2", "vision", 6),
               w("v3", "vision", 7), w("v4", "vision", 8), w("v5", "vision", 9)]
    line = order(waiting, {"nlp": gpus(4)}, QUEUES)
    assert owners(line) == ["v1", "v2", "v3", "v4", "n1", "v5", "n2"]


def test_weights_scale_the_share() -> None:
    heavy = QueueSetup([QueueSpec("vision", VISION.quota, weight=2.0), NLP])
    usage = {"vision": gpus(6), "nlp": gpus(4)}
    assert dominant_share("vision", usage["vision"], heavy) == pytest.approx(6 / 12 / 2)
    assert owners(order([w("n", "nlp", 0), w("v", "vision", 1)], usage, heavy)) == ["v", "n"]
    assert owners(order([w("n", "nlp", 0), w("v", "vision", 1)], usage, QUEUES)) == ["n", "v"]


def test_a_waiter_starts_when_no_one_ahead_could() -> None:
    usage = {"nlp": gpus(8)}  # nlp at its borrowing limit
    line = order([w("n1", "nlp", 0), w("v1", "vision", 1, n=3), w("v2", "vision", 2)], usage, QUEUES)
    assert owners(line) == ["v1", "v2", "n1"]
    room_for = {"v1": False, "v2": True, "n1": True}  # v1's three GPUs fit on no host now

    def fits(x: Waiting) -> bool:
        return room_for[x.owner]

    assert not may_start("v1", line, usage, QUEUES, fits)
    assert may_start("v2", line, usage, QUEUES, fits)  # v1 cannot start, so it does not block v2
    assert not may_start("n1", line, usage, QUEUES, fits)  # v2 can and is ahead
    room_for["v2"] = False
    assert not may_start("n1", line, usage, QUEUES, fits)  # over its borrowing limit: waits anyway
    with pytest.raises(ValueError, match="x is not in the line"):
        may_start("x", line, usage, QUEUES, fits)
