"""apply() and release(): reservation arithmetic on immutable snapshots."""

from __future__ import annotations

import random

import pytest

from provider.scheduling import GpuState, NodeState, PlacementRequest, apply, release
from provider.scheduling.accounting import free_state_after
from provider.scheduling.filters import gpu_sets
from provider.scheduling.model import free_state

NODE = NodeState(name="n", cpu_milli=8000, memory_mb=16000,
                 gpus=(GpuState(index=0), GpuState(index=1, allocated_milli=600)))


@pytest.mark.parametrize(
    ("request_", "gpus", "expected_milli"),
    [
        pytest.param(PlacementRequest(gpus=1, gpu_milli=400, cpu_milli=1000), (1,), (0, 1000), id="share-fills-gpu"),
        pytest.param(PlacementRequest(gpus=1, cpu_milli=1000), (0,), (1000, 600), id="whole-gpu"),
        pytest.param(PlacementRequest(cpu_milli=1000, memory_mb=100), (), (0, 600), id="cpu-only"),
    ],
)
def test_apply_then_release_round_trips(request_: PlacementRequest, gpus: tuple[int, ...], expected_milli: tuple[int, ...]) -> None:
    after = apply(NODE, request_, gpus)
    assert tuple(g.allocated_milli for g in after.gpus) == expected_milli
    assert after.cpu_allocated_milli == request_.cpu_milli
    assert after.memory_allocated_mb == request_.memory_mb
    assert release(after, request_, gpus) == NODE
    assert NODE.gpus[1].allocated_milli == 600  # the input is untouched


@pytest.mark.parametrize(
    ("request_", "gpus", "message"),
    [
        pytest.param(PlacementRequest(gpus=1, gpu_milli=500), (1,), "would hold 1100m", id="over-reserved"),
        pytest.param(PlacementRequest(gpus=2), (0,), "needs 2 GPU", id="too-few-indices"),
        pytest.param(PlacementRequest(gpus=2), (0, 0), "repeat", id="repeated-index"),
        pytest.param(PlacementRequest(gpus=1), (7,), "no GPU with index", id="unknown-index"),
    ],
)
def test_apply_rejects_bad_allocations(request_: PlacementRequest, gpus: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply(NODE, request_, gpus)


def test_release_more_than_reserved() -> None:
    with pytest.raises(ValueError, match="releasing more"):
        release(NODE, PlacementRequest(cpu_milli=1), ())


def test_the_free_state_after_a_choice_is_that_of_the_node_apply_builds() -> None:
    """Policies read the free state after each GPU choice without building the node; it must be
    the very state ``apply`` leaves, overcommitted CPU and measured memory included."""
    rng = random.Random(7)
    checked = 0
    for _ in range(2000):
        gpus = tuple(GpuState(index=i, model="A100", allocated_milli=rng.choice((0, 250, 500, 900, 1000)))
                     for i in range(rng.randint(0, 8)))
        node = NodeState(name="n", cpu_milli=rng.choice((0, 4000, 96000)), memory_mb=rng.choice((0, 8000, 262144)),
                         gpus=gpus, cpu_allocated_milli=rng.randint(0, 5000), memory_allocated_mb=rng.randint(0, 9000),
                         memory_available_mb=rng.choice((None, 0, 5000, 300000)))
        count = rng.randint(0, 3)
        request = PlacementRequest(gpus=count, gpu_milli=rng.choice((100, 500, 1000)) if count == 1 else 1000,
                                   cpu_milli=rng.randint(0, 6000), memory_mb=rng.randint(0, 9000))
        for choice in gpu_sets(request, node):
            assert free_state_after(node, request, choice) == free_state(apply(node, request, choice))
            checked += 1
    assert checked > 1000  # the draws reach many feasible choices, not only the empty one
