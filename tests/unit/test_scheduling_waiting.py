"""The waiting order: holds keep younger and non-waiting requests off a due waiter's host."""

from __future__ import annotations

import pytest

from provider.scheduling.no_fit import NoFit
from provider.scheduling import GpuState, Held, Insufficient, NodeState, Resource, PlacementRequest, place, get_policy
from provider.scheduling.policies import PlacementContext
from provider.scheduling.waiting import Hold, Waiter, apply_holds, hold_host, is_due, never_fits


def node(name: str, allocated: tuple[int, ...], unreachable: str | None = None) -> NodeState:
    gpus = tuple(GpuState(index=i, model="A100", memory_total_mb=80000, allocated_milli=a)
                 for i, a in enumerate(allocated))
    return NodeState(name=name, cpu_milli=8000, memory_mb=64000, gpus=gpus, unreachable=unreachable)


HOLD = Hold(host="a", owner="old", since=100.0, task="train.big run1")


@pytest.mark.parametrize(
    ("waiter", "held"),
    [
        pytest.param(None, True, id="not-waiting-is-held-off"),
        pytest.param(Waiter("young", 150.0), True, id="younger-waiter-is-held-off"),
        pytest.param(Waiter("older", 50.0), False, id="older-waiter-passes"),
        pytest.param(Waiter("old", 100.0), False, id="own-hold-never-applies"),
    ],
)
def test_apply_holds(waiter: Waiter | None, held: bool) -> None:
    nodes = apply_holds([node("a", (0, 0)), node("b", (0, 0))], [HOLD], waiter)
    assert (nodes[0].held is not None) is held
    assert nodes[1].held is None


def test_the_oldest_of_several_holds_is_named() -> None:
    holds = [Hold("a", "second", 120.0, "t.second r"), HOLD]
    (a,) = apply_holds([node("a", (0,))], holds, None)
    assert a.held == "held for train.big run1, waiting first"


def test_held_host_is_rejected_with_the_reason_and_others_still_serve() -> None:
    nodes = apply_holds([node("a", (0, 0)), node("b", (0, 1000))], [HOLD], Waiter("young", 150.0))
    p = place(PlacementRequest(gpus=1), nodes, get_policy("best_fit"), PlacementContext())
    assert p.node == "b"
    assert p.rejections["a"] == (Held("held for train.big run1, waiting first"),)
    assert str(p.rejections["a"][0]) == "held: held for train.big run1, waiting first"
    with pytest.raises(NoFit, match="held for train.big"):
        place(PlacementRequest(gpus=2), nodes, get_policy("best_fit"), PlacementContext())


@pytest.mark.parametrize(
    ("since", "now", "after", "due"),
    [(0.0, 599.0, 600.0, False), (0.0, 600.0, 600.0, True), (0.0, 10**9, None, False)],
)
def test_is_due(since: float, now: float, after: float | None, due: bool) -> None:
    assert is_due(Waiter("w", since), now, after) is due


def test_hold_host_prefers_the_host_closest_to_fitting() -> None:
    nodes = [node("a", (1000, 1000, 1000, 0)), node("b", (1000, 0, 0, 1000)), node("c", (0, 0))]
    # c can never take 4 GPUs; b has two free now, a one.
    assert hold_host(PlacementRequest(gpus=4), nodes) == "b"


def test_hold_host_none_when_nothing_could_fit() -> None:
    assert hold_host(PlacementRequest(gpus=3), [node("a", (0, 0))]) is None


def test_never_fits_names_every_host() -> None:
    why = never_fits(PlacementRequest(gpus=4), [node("a", (0, 0)), node("b", (1000,))])
    assert why == {"a": (Insufficient(Resource.GPUS, 4, 2, 2),), "b": (Insufficient(Resource.GPUS, 4, 1, 1),)}
    assert {k: [str(r) for r in v] for k, v in why.items()} == {"a": ["gpu free 2 of 2 < 4"], "b": ["gpu free 1 of 1 < 4"]}


@pytest.mark.parametrize(
    "nodes",
    [
        pytest.param([node("a", (1000, 1000))], id="fits-once-drained"),
        pytest.param([node("a", (0,)), node("b", (), unreachable="agent down")], id="unreachable-might-fit"),
    ],
)
def test_never_fits_is_none_while_waiting_can_help(nodes: list[NodeState]) -> None:
    assert never_fits(PlacementRequest(gpus=2), nodes) is None
