"""Expected fragmentation and the task mix, with values worked out by hand."""

from __future__ import annotations

import pytest

from provider.scheduling import GpuState, NodeState, PlacementRequest, TaskMix, TaskType


def node(allocated: tuple[int, ...], cpu_free: int = 8000, model: str = "V100") -> NodeState:
    gpus = tuple(GpuState(index=i, model=model, allocated_milli=a) for i, a in enumerate(allocated))
    return NodeState(name="n", cpu_milli=cpu_free, memory_mb=1000, gpus=gpus)


SHARE = TaskType(gpus=1, gpu_milli=500, cpu_milli=1000)
WHOLE2 = TaskType(gpus=2, cpu_milli=4000)
CPU = TaskType(cpu_milli=1000)


@pytest.mark.parametrize(
    ("mix", "state", "expected"),
    [
        # Free: GPU0 300m, GPU1 1000m (1300m idle). A 500m share can run; GPU0's 300m is too
        # small for it: 300. A 2-GPU task cannot run (one whole GPU free): all 1300.
        # 0.5 * 300 + 0.5 * 1300 = 800.
        pytest.param(TaskMix((SHARE, WHOLE2), (1, 1)), node((700, 0)), 800.0, id="share-and-multi-gpu"),
        # A CPU-only task can use no GPU capacity: all 2000m idle counts.
        pytest.param(TaskMix((CPU,), (1.0,)), node((0, 0)), 2000.0, id="cpu-task-uses-no-gpu"),
        # Enough GPUs but too little CPU left for the 2-GPU task: all idle capacity counts.
        pytest.param(TaskMix((WHOLE2,), (1.0,)), node((0, 0), cpu_free=3000), 2000.0, id="cpu-strands-gpus"),
        pytest.param(TaskMix((WHOLE2,), (1.0,)), node((0, 0)), 0.0, id="fits-nothing-stranded"),
        # The task only accepts P100; this node has V100s.
        pytest.param(TaskMix((TaskType(gpus=1, gpu_model="P100"),), (1.0,)), node((0,)), 1000.0, id="model-mismatch"),
        pytest.param(TaskMix((SHARE,), (1.0,)), node((1000, 1000)), 0.0, id="nothing-idle"),
        pytest.param(TaskMix((SHARE,), (1.0,)), NodeState(name="cpu-only", cpu_milli=1000), 0.0, id="zero-gpu-node"),
    ],
)
def test_fragmentation(mix: TaskMix, state: NodeState, expected: float) -> None:
    assert mix.fragmentation(state) == pytest.approx(expected)


def test_popularity_is_normalised() -> None:
    assert TaskMix((SHARE, CPU), (3, 1)).popularity == (0.75, 0.25)


@pytest.mark.parametrize(
    ("coverage", "expected"),
    [
        # 6 share tasks, 3 whole-GPU tasks, 1 CPU task: 60%, 30%, 10%.
        pytest.param(0.5, {TaskType(gpus=1, gpu_milli=500): 1.0}, id="top-type-covers-half"),
        pytest.param(0.9, {TaskType(gpus=1, gpu_milli=500): 2 / 3, TaskType(gpus=1): 1 / 3}, id="two-types-cover-90"),
        pytest.param(1.0, {TaskType(gpus=1, gpu_milli=500): 0.6, TaskType(gpus=1): 0.3, TaskType(): 0.1}, id="all"),
    ],
)
def test_mix_from_requests(coverage: float, expected: dict[TaskType, float]) -> None:
    requests = ([PlacementRequest(gpus=1, gpu_milli=500)] * 6 + [PlacementRequest(gpus=1)] * 3
                + [PlacementRequest()])
    mix = TaskMix.from_requests(reversed(requests), coverage=coverage)
    assert dict(zip(mix.types, mix.popularity)) == pytest.approx(expected)


def test_mix_weighted_by_gpu_demand() -> None:
    # Two 1-GPU tasks and one 8-GPU task: by count 2:1, by GPU demand 2000:8000.
    requests = [PlacementRequest(gpus=1)] * 2 + [PlacementRequest(gpus=8)]
    mix = TaskMix.from_requests(requests, coverage=1.0, weigh_by_gpu=True)
    assert dict(zip(mix.types, mix.popularity)) == pytest.approx({TaskType(gpus=8): 0.8, TaskType(gpus=1): 0.2})


@pytest.mark.parametrize(
    ("types", "popularity", "message"),
    [
        pytest.param((SHARE,), (1.0, 2.0), "popularity values", id="length-mismatch"),
        pytest.param((SHARE,), (0.0,), "not all zero", id="all-zero"),
    ],
)
def test_invalid_mix(types: tuple[TaskType, ...], popularity: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskMix(types, popularity)


def test_empty_workload_has_no_mix() -> None:
    with pytest.raises(ValueError, match="empty"):
        TaskMix.from_requests([])
