"""bench/placement_bound.py: exact on small cases worked out by hand, and never below a real replay."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import placement_bound as pb  # noqa: E402
import placement_sim  # noqa: E402
from provider.scheduling import GpuState, NodeState, PlacementContext, PlacementRequest, TaskMix, get_policy  # noqa: E402


def host(name: str, gpus: int, cpu: int = 64000, model: str = "V100") -> NodeState:
    return NodeState(name=name, cpu_milli=cpu, memory_mb=262144, gpus=tuple(GpuState(index=i, model=model) for i in range(gpus)))


def bound(nodes: list[NodeState], tasks: list[PlacementRequest]) -> float:
    return pb.upper_bound(pb.host_types(nodes), Counter(pb.shape_of(t) for t in tasks))


def test_dual_feasible_functions_keep_any_fitting_set_within_one_bin() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        items: list[float] = []
        while True:  # random items that fit one bin together
            item = rng.choice([rng.randint(1, 1000), rng.choice([160, 190, 250, 333, 500, 810])]) / 1000
            if sum(items) + item > 1:
                break
            items.append(item)
        for k in pb.DFF_ORDERS:
            assert sum(pb.dff(k, x) for x in items) <= 1 + 1e-9, (k, items)


@pytest.mark.parametrize(
    ("nodes", "tasks", "expected"),
    [
        # Two 600m shares and one GPU: only one fits (u_1 counts each as a whole GPU), 600m,
        # where the milli-GPU sum alone would allow 1000m.
        pytest.param([host("a", 1)], [PlacementRequest(gpus=1, gpu_milli=600)] * 2, 600.0, id="shares-do-not-split"),
        # 810m and 160m share one GPU: 970m.
        pytest.param([host("a", 1)], [PlacementRequest(gpus=1, gpu_milli=810), PlacementRequest(gpus=1, gpu_milli=160)], 970.0, id="complementary-shares"),
        # Two 500m tasks asking for 3 of the host's 4 cores each: cores allow one (u_1 of 3/4 is 1).
        pytest.param([host("a", 1, cpu=4000)], [PlacementRequest(gpus=1, gpu_milli=500, cpu_milli=3000)] * 2, 500.0, id="cpu-per-host"),
        # A task for another GPU model, or larger than any host, adds nothing.
        pytest.param([host("a", 2)], [PlacementRequest(gpus=1, gpu_model="T4"), PlacementRequest(gpus=4)], 0.0, id="cannot-run"),
        # CPU-only tasks add no GPU allocation and never take room from GPU tasks in the LP.
        pytest.param([host("a", 2, cpu=8000)], [PlacementRequest(cpu_milli=8000), PlacementRequest(gpus=2, cpu_milli=8000)], 2000.0, id="cpu-only-dropped"),
        # More demand than GPUs: capacity.
        pytest.param([host("a", 8), host("b", 2)], [PlacementRequest(gpus=1)] * 12, 10000.0, id="capacity"),
    ],
)
def test_bound_on_small_cases(nodes: list[NodeState], tasks: list[PlacementRequest], expected: float) -> None:
    assert bound(nodes, tasks) == pytest.approx(expected)


def test_never_below_what_a_replay_allocates() -> None:
    rng = random.Random(4)
    nodes = [host(f"n{i:02d}", rng.choice([1, 2, 4, 8]), cpu=rng.choice([16000, 64000]), model=rng.choice(["T4", "V100"]))
             for i in range(20)]
    pods = []
    for _ in range(400):
        gpus = rng.choice([0, 1, 1, 1, 2, 4, 8])
        milli = rng.choice([160, 250, 500, 810, 1000]) if gpus == 1 else 1000
        pods.append(PlacementRequest(gpus=gpus, gpu_milli=milli if gpus else 1000, cpu_milli=rng.choice([1000, 4000, 12000]),
                                     gpu_model=rng.choice([None, None, "T4"]) if gpus else None))
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    for policy_name in ("best_fit", "fragmentation", "fragmentation_balanced"):
        sequence = placement_sim.arrivals(pods, capacity, 1.3, random.Random(7))
        context = PlacementContext(task_mix=TaskMix.from_requests(pods))
        used = 0
        for step, (request, placed) in enumerate(placement_sim.replay(list(nodes), sequence, get_policy(policy_name), context)):
            used += request.gpu_milli_total if placed else 0
            if step % 25 == 0:
                assert used <= bound(nodes, sequence[: step + 1]) + 1e-6, (policy_name, step)


def test_curve_is_given_at_the_checkpoints_reached() -> None:
    nodes = [host("a", 2)]
    sequence = [PlacementRequest(gpus=1)] * 3  # arrived 50%, 100%, 150%
    assert pb.bound_curve(nodes, sequence, (50, 100, 130)) == {50: 50.0, 100: 100.0}
