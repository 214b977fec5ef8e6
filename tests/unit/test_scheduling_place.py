"""place(): the choice, its tie-breaks, its audit trail, and the policy registry."""

from __future__ import annotations

import random

import pytest

from provider.scheduling.no_fit import NoFit
from provider.scheduling import (
    POLICIES,
    BestFit,
    Fragmentation,
    GpuState,
    LeastLoaded,
    NodeState,
    Insufficient,
    PlacementContext,
    PlacementRequest,
    Policy,
    TaskMix,
    Resource,
    TaskType,
    Unreachable,
    apply,
    get_policy,
    place,
)


def node(name: str, allocated: tuple[int, ...] = (0, 0), cpu: int = 16000, **kw: object) -> NodeState:
    gpus = tuple(GpuState(index=i, model="V100", allocated_milli=a) for i, a in enumerate(allocated))
    return NodeState(name=name, cpu_milli=cpu, memory_mb=64000, gpus=gpus, **kw)  # type: ignore[arg-type]


WHOLE_GPU_MIX = TaskMix((TaskType(gpus=1),), (1.0,))


@pytest.mark.parametrize(
    ("policy", "request_", "nodes", "expected"),
    [
        # Identical empty nodes score alike: the name that sorts first wins, whatever the order.
        pytest.param(BestFit(), PlacementRequest(gpus=1), [node("b"), node("a"), node("c")], ("a", (0,)), id="tie-by-name"),
        # Best fit: "half" ends with 1 GPU + 1 share left, "full" with 2: pack onto "half".
        pytest.param(BestFit(), PlacementRequest(gpus=1), [node("full"), node("half", (0, 500))], ("half", (0,)), id="best-fit-packs"),
        # A 300m share on "s": GPU 0 has 200m free (too little), GPU 1 400m, GPU 2 1000m:
        # best fit takes the tightest GPU that fits, GPU 1.
        pytest.param(BestFit(), PlacementRequest(gpus=1, gpu_milli=300), [node("s", (800, 600, 0))], ("s", (1,)), id="share-tightest-gpu"),
        # Two whole GPUs: only "four" has two free; it gets the two lowest free indices.
        pytest.param(BestFit(), PlacementRequest(gpus=2), [node("one", (0, 1000)), node("four", (1000, 0, 500, 0))], ("four", (1, 3)), id="multi-gpu"),
        # Whole-GPU mix: a 500m share on an empty GPU strands 500m for every task of the mix
        # (growth 500), on the half-used GPU of "h" it fills it (growth -500): FGD picks "h".
        pytest.param(Fragmentation(), PlacementRequest(gpus=1, gpu_milli=500), [node("e"), node("h", (500, 0))], ("h", (0,)), id="fragmentation-fills-slices"),
        # Least loaded: same reservations, "busy" GPUs are 90% utilised by measurement.
        pytest.param(
            LeastLoaded(), PlacementRequest(gpus=1),
            [NodeState(name="busy", cpu_milli=8000, memory_mb=8000, gpus=(GpuState(index=0, utilization_pct=90.0),)),
             NodeState(name="idle", cpu_milli=8000, memory_mb=8000, gpus=(GpuState(index=0),))],
            ("idle", (0,)), id="least-loaded-measured",
        ),
        # Least loaded picks the GPUs with the lowest measured utilisation on the node.
        pytest.param(
            LeastLoaded(), PlacementRequest(gpus=1),
            [NodeState(name="n", cpu_milli=8000, memory_mb=8000, gpus=(
                GpuState(index=0, utilization_pct=70.0), GpuState(index=1, utilization_pct=10.0)))],
            ("n", (1,)), id="least-loaded-gpu",
        ),
        # CPU-only work prefers the host without GPUs even though best fit would pack the GPU host.
        pytest.param(BestFit(), PlacementRequest(cpu_milli=1000), [node("gpu", cpu=2000), NodeState(name="cpu", cpu_milli=64000, memory_mb=1000)], ("cpu", ()), id="cpu-only-off-gpu-nodes"),
        # ... but still lands on a GPU host when nothing else fits.
        pytest.param(BestFit(), PlacementRequest(cpu_milli=4000), [node("gpu"), NodeState(name="cpu", cpu_milli=2000, memory_mb=1000)], ("gpu", ()), id="cpu-only-falls-back"),
        # An unreachable node is never chosen, even if it looks perfect.
        pytest.param(BestFit(), PlacementRequest(gpus=1), [node("a", unreachable="timeout"), node("b", (0, 500))], ("b", (0,)), id="unreachable-skipped"),
    ],
)
def test_choice(policy: Policy, request_: PlacementRequest, nodes: list[NodeState], expected: tuple[str, tuple[int, ...]]) -> None:
    chosen = place(request_, nodes, policy, PlacementContext(task_mix=WHOLE_GPU_MIX))
    assert (chosen.node, chosen.gpu_indices) == expected
    assert set(chosen.scores) | set(chosen.rejections) == {n.name for n in nodes}
    assert all(0.0 <= s <= 100.0 for s in chosen.scores.values())


def test_no_fit_names_every_node_and_reason() -> None:
    nodes = [node("a", (1000, 0), cpu=1000), node("b", unreachable="timeout 2 s")]
    with pytest.raises(NoFit) as caught:
        place(PlacementRequest(gpus=2, cpu_milli=2000), nodes, BestFit())
    assert caught.value.rejections == {
        "a": (Insufficient(Resource.GPUS, 2, 1, 2), Insufficient(Resource.CPU, 2000, 1000, 1000)),
        "b": (Unreachable("timeout 2 s"),),
    }
    assert str(caught.value) == (
        "No host fits gpus=2 cpu_milli=2000: a: gpu free 1 of 2 < 2; cpu free 1000m < 2000m"
        " | b: unreachable: timeout 2 s"
    )


def test_empty_pool() -> None:
    with pytest.raises(NoFit, match="the pool is empty"):
        place(PlacementRequest(gpus=1), [], BestFit())


def test_inputs_not_mutated() -> None:
    nodes = [node("a", (500, 0)), node("b")]
    before = list(nodes)
    request = PlacementRequest(gpus=1, gpu_milli=500)
    chosen = place(request, nodes, Fragmentation(), PlacementContext(task_mix=WHOLE_GPU_MIX))
    assert nodes == before and all(x is y for x, y in zip(nodes, before))
    after = apply(nodes[0], request, chosen.gpu_indices)
    assert after.gpus[0].allocated_milli == 1000 and nodes[0].gpus[0].allocated_milli == 500


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        place(PlacementRequest(), [node("a"), node("a")], BestFit())


def test_random_is_reproducible_from_the_rng() -> None:
    nodes = [node(f"n{i}") for i in range(20)]
    picks = [
        [place(PlacementRequest(gpus=1), nodes, get_policy("random"), PlacementContext(rng=random.Random(s))).node
         for s in range(5)]
        for _ in range(2)
    ]
    assert picks[0] == picks[1] and len(set(picks[0])) > 1


def test_random_without_rng_says_so() -> None:
    with pytest.raises(ValueError, match="rng"):
        place(PlacementRequest(gpus=1), [node("a")], get_policy("random"))


def test_unknown_policy_lists_valid_names() -> None:
    with pytest.raises(ValueError) as caught:
        get_policy("fastest")
    assert "fastest" in str(caught.value)
    assert all(name in str(caught.value) for name in POLICIES)


def test_unknown_weight_lists_valid_weights() -> None:
    with pytest.raises(TypeError, match="cpu, gpu, max_cpu_milli, max_gpu_milli"):
        get_policy("best_fit", cpuu=1.0)


def test_weights_are_passed_through() -> None:
    # "tight" is short of CPU but has 4 free GPUs, "roomy" the reverse: the weights decide.
    nodes = [node("tight", (0, 0, 0, 0), cpu=4000), node("roomy", (1000, 0), cpu=64000)]
    gpu_only = place(PlacementRequest(gpus=1), nodes, get_policy("best_fit", cpu=0.0, gpu=1.0))
    cpu_only = place(PlacementRequest(gpus=1), nodes, get_policy("best_fit", cpu=1.0, gpu=0.0))
    assert (gpu_only.node, cpu_only.node) == ("roomy", "tight")


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_the_locality_term_prefers_the_host_with_the_image_under_every_policy(policy_name: str) -> None:
    """Equal hosts but for where the image is: every policy goes where nothing must be pulled."""
    nodes = [node("a", pull_bytes=4 * 10**9), node("b", pull_bytes=0), node("c", pull_bytes=4 * 10**9)]
    context = PlacementContext(rng=random.Random(1), task_mix=WHOLE_GPU_MIX)
    assert place(PlacementRequest(gpus=1), nodes, get_policy(policy_name), context).node == "b"


@pytest.mark.parametrize(
    ("pull_gb", "penalty", "expected"),
    [
        pytest.param(4.0, 10.0, "loaded-with-image", id="a-4gb-pull-outweighs-a-busier-host"),
        pytest.param(0.2, 10.0, "idle-without-image", id="a-small-pull-does-not"),
        pytest.param(4.0, 0.0, "idle-without-image", id="penalty-0-ignores-images"),
    ],
)
def test_the_locality_term_is_in_proportion_to_the_bytes(pull_gb: float, penalty: float, expected: str) -> None:
    idle = node("idle-without-image", pull_bytes=int(pull_gb * 10**9))
    busy = node("loaded-with-image", cpu_utilization_pct=30.0, pull_bytes=0)
    context = PlacementContext(pull_penalty_per_gb=penalty)
    assert place(PlacementRequest(gpus=1), [idle, busy], LeastLoaded(), context).node == expected


def test_a_full_host_with_the_image_is_passed_over() -> None:
    full = node("has-image", allocated=(1000, 1000), pull_bytes=0)
    chosen = place(PlacementRequest(gpus=1), [full, node("pulls", pull_bytes=10**10)], LeastLoaded())
    assert chosen.node == "pulls" and "has-image" in chosen.rejections
