"""Feasibility: every reason is reported, typed and in its words, and the GPU candidates are the right ones."""

from __future__ import annotations

import re

import pytest

from provider.errors import SpecError
from provider.scheduling import (
    MILLI_PER_GPU,
    GpuState,
    GpusUnknown,
    GpuSuspended,
    GpuUnusable,
    Held,
    Insufficient,
    InsufficientGpuMemory,
    LabelMismatch,
    ModelMismatch,
    NodeState,
    NoGpus,
    PlacementRequest,
    Resource,
    Resources,
    Unreachable,
    gpu_sets,
    is_share,
    reasons,
)


def gpu_node(name: str = "n", allocated: tuple[int, ...] = (0, 0), model: str = "V100", **kw: object) -> NodeState:
    gpus = tuple(
        GpuState(index=i, model=model, memory_total_mb=16000, allocated_milli=a)
        for i, a in enumerate(allocated)
    )
    fields = {"cpu_milli": 8000, "memory_mb": 32000, **kw}
    return NodeState(name=name, gpus=gpus, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_", "node", "expected"),
    [
        pytest.param(PlacementRequest(gpus=2, cpu_milli=4000, memory_mb=8000), gpu_node(), (), id="fits"),
        pytest.param(
            PlacementRequest(gpus=2, cpu_milli=4000, memory_mb=8000, gpu_model="P100",
                             labels={"zone": "a"}),
            gpu_node(allocated=(1000, 0), cpu_allocated_milli=6000, memory_allocated_mb=30000,
                     labels={"zone": "b"}),
            (
                "label zone=b != a",
                "gpu model V100 != P100",
                "gpu free 1 of 2 < 2",
                "cpu free 2000m < 4000m",
                "memory free 2000MB < 8000MB",
            ),
            id="every-reason-listed",
        ),
        pytest.param(
            PlacementRequest(gpus=1, labels={"zone": "a"}), gpu_node(), ("label zone=(unset) != a",),
            id="missing-label",
        ),
        pytest.param(
            PlacementRequest(gpus=1, gpu_milli=500),
            gpu_node(allocated=(600, 700)),
            ("gpu free 400m < 500m on one GPU (of 2 GPUs)",),
            id="share-needs-one-gpu-not-the-sum",
        ),
        pytest.param(PlacementRequest(gpus=1, gpu_milli=400), gpu_node(allocated=(600, 1000)), (), id="share-fits"),
        pytest.param(
            PlacementRequest(gpus=1), NodeState(name="empty"),
            ("has no GPUs",),
            id="zero-capacity-node",
        ),
        pytest.param(
            PlacementRequest(cpu_milli=1), NodeState(name="empty"), ("cpu free 0m < 1m",),
            id="zero-capacity-cpu",
        ),
        pytest.param(
            PlacementRequest(gpus=4, cpu_milli=99999), gpu_node(unreachable="timeout 2 s"),
            ("unreachable: timeout 2 s",), id="unreachable-says-only-that",
        ),
        pytest.param(PlacementRequest(gpus=1, gpu_model="P100|V100"), gpu_node(), (), id="model-alternatives"),
        pytest.param(
            PlacementRequest(memory_mb=1000), gpu_node(memory_available_mb=500),
            ("memory free 500MB < 1000MB",), id="measured-memory-limits",
        ),
    ],
)
def test_reasons(request_: PlacementRequest, node: NodeState, expected: tuple[str, ...]) -> None:
    assert tuple(str(r) for r in reasons(request_, node)) == expected


@pytest.mark.parametrize(
    ("request_", "node", "expected"),
    [
        pytest.param(
            PlacementRequest(gpus=2, cpu_milli=4000, memory_mb=8000, gpu_model="P100", labels={"zone": "a"}),
            gpu_node(allocated=(1000, 0), cpu_allocated_milli=6000, memory_allocated_mb=30000, labels={"zone": "b"},
                     held="held for t r, waiting first"),
            (
                Held("held for t r, waiting first"),
                LabelMismatch("zone", "b", "a"),
                ModelMismatch("V100", "P100"),
                Insufficient(Resource.GPUS, requested=2, free=1, capacity=2),
                Insufficient(Resource.CPU, requested=4000, free=2000, capacity=8000),
                Insufficient(Resource.MEMORY, requested=8000, free=2000, capacity=32000),
            ),
            id="every-shortage-with-requested-free-and-capacity",
        ),
        pytest.param(
            PlacementRequest(gpus=1, gpu_milli=500), gpu_node(allocated=(600, 700)),
            (Insufficient(Resource.GPU_MILLI, requested=500, free=400, capacity=2 * MILLI_PER_GPU),),
            id="a-share-counts-the-best-single-gpu",
        ),
        pytest.param(PlacementRequest(gpus=1, cpu_milli=1), gpu_node(unreachable="timeout"),
                     (Unreachable("timeout"),), id="unreachable"),
        pytest.param(PlacementRequest(gpus=1, cpu_milli=10**6), gpu_node(unmeasured="no agent"),
                     (GpusUnknown("no agent"),), id="unmeasured-takes-cpu-on-trust"),
        pytest.param(PlacementRequest(gpus=1), NodeState(name="cpu"), (NoGpus(),), id="no-gpus"),
        pytest.param(PlacementRequest(gpus=1), gpu_node(gpu_unusable="no NVIDIA runtime"),
                     (GpuUnusable("no NVIDIA runtime"),), id="unusable"),
        pytest.param(PlacementRequest(gpus=1), gpu_node(gpu_suspended="failed lately"),
                     (GpuSuspended("failed lately"),), id="suspended"),
    ],
)
def test_reasons_are_values(request_: PlacementRequest, node: NodeState, expected: tuple[object, ...]) -> None:
    """A caller acts on a reason's type and fields; no one parses its words."""
    assert reasons(request_, node) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"gpus": -1}, "gpus must be >= 0, got -1", id="negative-gpus"),
        pytest.param({"gpus": 1, "gpu_milli": 0}, "gpu_milli must be in 1..1000, got 0", id="no-milli"),
        pytest.param({"gpus": 1, "gpu_milli": 1001}, "gpu_milli must be in 1..1000, got 1001", id="more-than-a-gpu"),
        pytest.param({"gpus": 2, "gpu_milli": 500}, "a GPU share (gpu_milli=500) needs gpus=1, got gpus=2",
                     id="share-of-two"),
        pytest.param({"cpu_milli": -5}, "cpu_milli must be >= 0, got -5", id="negative-cpu"),
    ],
)
def test_impossible_vectors_are_spec_errors(kwargs: dict[str, int], message: str) -> None:
    for kind in (Resources, PlacementRequest):
        with pytest.raises(SpecError, match=re.escape(message)):
            kind(**kwargs)


@pytest.mark.parametrize(
    ("vector", "share", "total", "described"),
    [
        pytest.param(Resources(), False, 0, "gpus=0", id="cpu-only"),
        pytest.param(Resources(gpus=1, gpu_milli=250, cpu_milli=2000), True, 250, "gpus=1 gpu_milli=250 cpu_milli=2000",
                     id="share"),
        pytest.param(Resources(gpus=1), False, 1000, "gpus=1", id="one-whole-gpu"),
        pytest.param(PlacementRequest(gpus=3, gpu_memory_mb=8000), False, 3000, "gpus=3 gpu_memory_mb=8000",
                     id="whole-gpus"),
    ],
)
def test_the_one_share_rule(vector: Resources, share: bool, total: int, described: str) -> None:
    assert (vector.is_share, is_share(vector.gpus, vector.gpu_milli)) == (share, share)
    assert vector.gpu_milli_total == total and vector.describe() == described


def test_gpu_memory_is_checked_by_measurement() -> None:
    # GPU 0 has 15000 MB in use by a process nobody reserved: only GPU 1 has 8000 MB free.
    node = NodeState(name="n", cpu_milli=1000, memory_mb=1000, gpus=(
        GpuState(index=0, memory_total_mb=16000, memory_used_mb=15000),
        GpuState(index=1, memory_total_mb=16000),
    ))
    assert gpu_sets(PlacementRequest(gpus=1, gpu_memory_mb=8000), node) == ((1,),)
    (short,) = reasons(PlacementRequest(gpus=2, gpu_memory_mb=8000), node)
    assert short == InsufficientGpuMemory(Resource.GPU_MEMORY, requested=2, free=1, capacity=2, per_gpu_mb=8000)
    assert isinstance(short, Insufficient)
    assert str(short) == "gpu memory free >= 8000MB on 1 GPUs < 2"


@pytest.mark.parametrize(
    ("request_", "allocated", "expected"),
    [
        pytest.param(PlacementRequest(), (0, 0), ((),), id="cpu-only-needs-no-gpu"),
        pytest.param(PlacementRequest(gpus=2), (0, 500, 0, 0), ((0, 2),), id="whole-gpus-lowest-free-indices"),
        pytest.param(PlacementRequest(gpus=3), (0, 500, 0), (), id="too-few-whole-gpus"),
        pytest.param(PlacementRequest(gpus=1, gpu_milli=300), (800, 700, 0), ((1,), (2,)), id="each-fitting-gpu-for-a-share"),
    ],
)
def test_gpu_sets(request_: PlacementRequest, allocated: tuple[int, ...], expected: tuple[tuple[int, ...], ...]) -> None:
    assert gpu_sets(request_, gpu_node(allocated=allocated)) == expected
