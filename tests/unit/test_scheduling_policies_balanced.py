"""fragmentation_balanced and the measure it adds (TaskMix.stranded), on hand-built hosts.

Every expected value is worked out in the comment above it. Mixes use one type unless said
otherwise, so its popularity is 1.
"""

from __future__ import annotations

import math
import re

import pytest

from provider.scheduling.no_fit import NoFit
from provider.scheduling import (
    Fragmentation,
    FragmentationBalanced,
    GpuState,
    NodeState,
    PlacementContext,
    PlacementRequest,
    TaskMix,
    TaskType,
    get_policy,
    place,
)


def host(name: str, allocated: tuple[int, ...], cpu: int, memory: int = 64000) -> NodeState:
    gpus = tuple(GpuState(index=i, model="V100", allocated_milli=a) for i, a in enumerate(allocated))
    return NodeState(name=name, cpu_milli=cpu, memory_mb=memory, gpus=gpus)


def mix(*types: TaskType) -> TaskMix:
    return TaskMix(types, (1.0,) * len(types))


ONE_GPU_4C = TaskType(gpus=1, cpu_milli=4000)
TWO_GPU_4C = TaskType(gpus=2, cpu_milli=4000)
HALF_GPU_2C = TaskType(gpus=1, gpu_milli=500, cpu_milli=2000)


@pytest.mark.parametrize(
    ("task_mix", "state", "expected"),
    [
        # S sums the shortfall at two rates: cores per GPU of the mix's GPU work, and of all
        # its work. Without CPU-only types the two are equal, so S is twice one shortfall.
        # 4 cores per GPU (4 per 1000m). 4 free GPUs, 8 cores feed 2000m: (4000 - 2000) * 2.
        pytest.param(mix(ONE_GPU_4C), host("n", (0, 0, 0, 0), cpu=8000), 4000.0, id="cpu-feeds-half"),
        # 16 cores feed all 4: nothing stranded.
        pytest.param(mix(ONE_GPU_4C), host("n", (0, 0, 0, 0), cpu=16000), 0.0, id="cpu-feeds-all"),
        # 3 cores feed 750m of 2000m, whether or not one whole task of the type still fits.
        pytest.param(mix(ONE_GPU_4C), host("n", (0, 0), cpu=3000), 2500.0, id="cpu-short"),
        # A 2-GPU, 4-core type brings 2 cores per GPU: 64 cores feed far more than 1500m.
        pytest.param(mix(TWO_GPU_4C), host("n", (0, 500), cpu=64000), 0.0, id="cpu-plenty"),
        # 4 free GPUs at 2 cores each need 8; 4 cores feed 2000m: (4000 - 2000) * 2.
        pytest.param(mix(TWO_GPU_4C), host("n", (0, 0, 0, 0), cpu=4000), 4000.0, id="multi-gpu"),
        # Shares: 500m with 2 cores is 4 cores per GPU. 1300m free (1000m + 300m), 2 cores
        # feed 500m of it: (1300 - 500) * 2.
        pytest.param(mix(HALF_GPU_2C), host("n", (0, 700), cpu=2000), 1600.0, id="shared-gpu"),
        # Memory limits like CPU: 8 GB per GPU, 8 GB feed 1 of 2 free GPUs: 1000 * 2.
        pytest.param(mix(TaskType(gpus=1, memory_mb=8000)), host("n", (0, 0), cpu=0, memory=8000), 2000.0, id="memory"),
        # A mix that asks for no CPU or memory strands nothing.
        pytest.param(mix(TaskType(gpus=1)), host("n", (0, 0), cpu=0), 0.0, id="zero-need"),
        # No GPUs, or none free: nothing to feed.
        pytest.param(mix(ONE_GPU_4C), NodeState(name="n", cpu_milli=8000), 0.0, id="zero-gpu-node"),
        pytest.param(mix(ONE_GPU_4C), host("n", (1000, 1000), cpu=0), 0.0, id="all-allocated"),
        # Two types, 1/2 each: 4 cores and none per GPU average 2. 4 cores feed 2 of 4 GPUs.
        pytest.param(mix(ONE_GPU_4C, TaskType(gpus=1)), host("n", (0, 0, 0, 0), cpu=4000), 4000.0, id="weighted-by-popularity"),
        # With a CPU-only type of 32 cores (1/2), the GPU work still brings 4 cores per GPU
        # (2000 of 500m), all the work 36 ((2000 + 16000) / 500). 8 cores: 4000 - 2000 at
        # the first rate, 4000 - 8000 / 36 at the second.
        pytest.param(mix(ONE_GPU_4C, TaskType(cpu_milli=32000)), host("n", (0, 0, 0, 0), cpu=8000), 2000.0 + 4000.0 - 8000 / 36, id="cpu-only-work-second-rate"),
        # 64 cores feed the GPU work (16 needed) but not all of it (144): only the second counts.
        pytest.param(mix(ONE_GPU_4C, TaskType(cpu_milli=32000)), host("n", (0, 0, 0, 0), cpu=64000), 4000.0 - 64000 / 36, id="short-of-all-work-only"),
    ],
)
def test_stranded(task_mix: TaskMix, state: NodeState, expected: float) -> None:
    assert task_mix.stranded(state) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("task_mix", "request_", "nodes", "fgd", "balanced"),
    [
        # A CPU-heavy 1-GPU task (8 cores) on a 4-core-per-GPU mix. FGD: the type still fits
        # on both afterwards, growth 0 on both, a tie that node order gives to "a".
        # "a" (4 GPUs, 12 cores): stranded (4000 - 3000) * 2 = 2000 before, (3000 - 1000) * 2
        # = 4000 after: +2000. "b" (4 GPUs, 32 cores): 0 before and after. Balanced: "b".
        pytest.param(
            mix(ONE_GPU_4C), PlacementRequest(gpus=1, cpu_milli=8000),
            [host("a", (0, 0, 0, 0), cpu=12000), host("b", (0, 0, 0, 0), cpu=32000)],
            ("a", (0,)), ("b", (0,)), id="cpu-heavy-goes-where-cores-are-plentiful",
        ),
        # A CPU-light 2-GPU task (2 cores) on a 2-GPU, 4-core mix (2 cores per GPU). FGD:
        # growth 0 on both, "a". "a" (4 GPUs, 8 cores): stranded 0 before, 0 after (2 GPUs,
        # 6 cores). "b" (8 GPUs, 10 cores): (8000 - 5000) * 2 = 6000 before, (6000 - 4000) * 2
        # = 4000 after: -2000. Balanced fills the host that is short of cores: "b".
        pytest.param(
            mix(TWO_GPU_4C), PlacementRequest(gpus=2, cpu_milli=2000),
            [host("a", (0,) * 4, cpu=8000), host("b", (0,) * 8, cpu=10000)],
            ("a", (0, 1)), ("b", (0, 1)), id="multi-gpu-cpu-light-goes-where-cores-are-short",
        ),
        # A 500m share with 4 cores on a 500m, 2-core mix (4 cores per GPU). FGD: growth 0
        # everywhere, GPU 0 of "a". "a" (2 GPUs, 6 cores): stranded (2000 - 1500) * 2 = 1000
        # before, (1500 - 500) * 2 = 2000 after: +1000. "b" (2 GPUs, 16 cores): 0 before and after.
        # Balanced: "b", GPU 0.
        pytest.param(
            mix(HALF_GPU_2C), PlacementRequest(gpus=1, gpu_milli=500, cpu_milli=4000),
            [host("a", (0, 0), cpu=6000), host("b", (0, 0), cpu=16000)],
            ("a", (0,)), ("b", (0,)), id="shared-gpu",
        ),
        # A CPU-only task (8 cores) on a mix where CPU-only work (32 cores, 1/2) brings 32
        # cores per 500m of GPU work: all the work needs 36 per GPU. FGD: no GPU type stops
        # fitting anywhere, growth 0, "a". "a" (4 free GPUs, 64 cores): feeds the GPU work
        # before and after, falls further short of all the work (4000 - 64000 / 36 before,
        # 4000 - 56000 / 36 after: +222). "b" (GPUs all taken): nothing to feed. Balanced: "b".
        pytest.param(
            mix(ONE_GPU_4C, TaskType(cpu_milli=32000)), PlacementRequest(cpu_milli=8000),
            [host("a", (0, 0, 0, 0), cpu=64000), host("b", (1000, 1000), cpu=64000)],
            ("a", ()), ("b", ()), id="cpu-only-task-goes-where-no-gpu-needs-the-cores",
        ),
        # Within one host the share still goes where FGD puts it: on the half-used GPU 1,
        # which it fills (growth -500), not on the empty GPU 0 (growth +500).
        pytest.param(
            mix(TaskType(gpus=1)), PlacementRequest(gpus=1, gpu_milli=500),
            [host("a", (0, 500), cpu=16000)],
            ("a", (1,)), ("a", (1,)), id="share-fills-the-slice",
        ),
        # Identical hosts: equal scores on both measures, the name that sorts first wins.
        pytest.param(
            mix(ONE_GPU_4C), PlacementRequest(gpus=1, cpu_milli=4000),
            [host("b", (0, 0), cpu=8000), host("a", (0, 0), cpu=8000)],
            ("a", (0,)), ("a", (0,)), id="tie-by-name",
        ),
        # FGD decides when it is not a tie. A 2-GPU task without cores, 2-GPU 4-core mix (2
        # cores per GPU). On "a" (3 GPUs, 4 cores) it leaves 1 GPU, too few for the type, so
        # FGD counts it whole (growth +1000, score 26), although stranding falls from
        # (3000 - 2000) * 2 = 2000 to 0 (the best balance term, 0.87 of a step). On "b" (4
        # GPUs, 64 cores) the type still fits: growth 0, score 50, stranded 0 before and after.
        # 26.87 < 50.49: "b", whose name sorts second.
        pytest.param(
            mix(TWO_GPU_4C), PlacementRequest(gpus=2),
            [host("a", (0, 0, 0), cpu=4000), host("b", (0, 0, 0, 0), cpu=64000)],
            ("b", (0, 1)), ("b", (0, 1)), id="never-overrides-fgd",
        ),
    ],
)
def test_choice(
    task_mix: TaskMix,
    request_: PlacementRequest,
    nodes: list[NodeState],
    fgd: tuple[str, tuple[int, ...]],
    balanced: tuple[str, tuple[int, ...]],
) -> None:
    context = PlacementContext(task_mix=task_mix)
    for policy, expected in ((Fragmentation(), fgd), (FragmentationBalanced(), balanced)):
        chosen = place(request_, nodes, policy, context)
        assert (chosen.node, chosen.gpu_indices) == expected, policy.name


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(host("n", (0, 0, 0, 0), cpu=12000), id="cpu-short"),
        pytest.param(host("n", (0, 0, 0, 0), cpu=64000), id="cpu-plenty"),
        pytest.param(host("n", (0, 500, 1000, 200), cpu=9000), id="partly-used"),
    ],
)
def test_score_stays_within_fgds_rounding_step(state: NodeState) -> None:
    # The balance term uses less than one step: rounding down gives FGD's own score back.
    context = PlacementContext(task_mix=mix(ONE_GPU_4C, HALF_GPU_2C))
    for request in (PlacementRequest(gpus=1, cpu_milli=8000), PlacementRequest(gpus=1, gpu_milli=500)):
        balanced = FragmentationBalanced()(request, state, context).score
        assert math.floor(balanced) == Fragmentation()(request, state, context).score


def test_infeasible_names_every_host() -> None:
    # 2 GPUs asked, each host has one free: no fit, both hosts named.
    nodes = [host("a", (0, 1000), cpu=16000), host("b", (1000, 0), cpu=16000)]
    with pytest.raises(NoFit, match=re.escape("a: gpu free 1 of 2 < 2 | b: gpu free 1 of 2 < 2")):
        place(PlacementRequest(gpus=2), nodes, FragmentationBalanced(), PlacementContext(task_mix=mix(ONE_GPU_4C)))


def test_cpu_only_task_prefers_the_host_without_gpus() -> None:
    # No GPU capacity anywhere changes, nothing is stranded (64 cores for 2 GPUs): equal scores, then the GPU host's
    # score is halved by the context's CPU-task factor, so "gpu" (which sorts first) loses.
    nodes = [host("gpu", (0, 0), cpu=64000), NodeState(name="plain", cpu_milli=64000, memory_mb=64000)]
    chosen = place(PlacementRequest(cpu_milli=1000), nodes, FragmentationBalanced(), PlacementContext(task_mix=mix(ONE_GPU_4C)))
    assert (chosen.node, chosen.gpu_indices) == ("plain", ())


def test_selectable_by_name_with_the_operators_request_form() -> None:
    # GPU count, milli-GPU share and GPU memory, as the operator passes them.
    policy = get_policy("fragmentation_balanced", fragmentation=Fragmentation(resolution=2.0))
    gpus = (GpuState(index=0, model="V100", memory_total_mb=16000, memory_used_mb=12000),
            GpuState(index=1, model="V100", memory_total_mb=16000))
    nodes = [NodeState(name="n", cpu_milli=8000, memory_mb=64000, gpus=gpus)]
    request = PlacementRequest(gpus=1, gpu_milli=300, gpu_memory_mb=8000, cpu_milli=1000)
    chosen = place(request, nodes, policy, PlacementContext(task_mix=mix(HALF_GPU_2C)))
    assert (chosen.node, chosen.gpu_indices, chosen.policy) == ("n", (1,), "fragmentation_balanced")
