"""``bench/queue_sim.py``: one case worked by hand through every strategy, then a smoke run on
CSVs built here (no external data)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from bench.queue_sim import STRATEGIES, TEAMS, Task, jain, main, replay
from provider.scheduling import GpuState, NodeState, PlacementRequest

ONE_GPU = PlacementRequest(gpus=1)


def _case() -> tuple[list[Task], list[NodeState]]:
    """One host of 4 GPUs, so each team's quota is one GPU. Six one-GPU tasks of vision arrive
    at 0 (100, 200, 300, 400, 100 and 100 s long), then one of nlp at 1 s."""
    durations = (100.0, 200.0, 300.0, 400.0, 100.0, 100.0)
    tasks = [Task(k, "vision", 0.0, d, ONE_GPU) for k, d in enumerate(durations)]
    tasks.append(Task(6, "nlp", 1.0, 100.0, ONE_GPU))
    return tasks, [NodeState("h", cpu_milli=64000, memory_mb=262144, gpus=tuple(GpuState(i) for i in range(4)))]


@pytest.mark.parametrize(
    ("strategy", "waits"),
    [
        # Vision's first four fill the host; at 100 s one GPU frees and the line is kept in
        # arrival order: vision 4 takes it, and nlp starts only at 200 s, beside vision 5.
        pytest.param("fcfs", [0, 0, 0, 0, 100, 200, 199], id="fcfs"),
        # Unlimited borrowing in arrival order admits exactly what first come first served does.
        pytest.param("kueue", [0, 0, 0, 0, 100, 200, 199], id="kueue"),
        # One GPU each: vision runs one task at a time; nlp starts on arrival.
        pytest.param("strict", [0, 100, 300, 600, 1000, 1100, 0], id="strict"),
        # Vision holds three GPUs when the first frees, nlp none: nlp is furthest below its
        # share and goes first; vision 4 and 5 start at 200 s, when two GPUs free.
        pytest.param("ours", [0, 0, 0, 0, 200, 200, 99], id="ours"),
    ],
)
def test_a_case_worked_by_hand(strategy: str, waits: list[float]) -> None:
    tasks, pool = _case()
    run = replay(tasks, pool, strategy, "least_loaded", seed=1)
    assert [run["waits"][t.index] for t in tasks] == pytest.approx(waits)
    assert run["never"] == 0


def test_jain() -> None:
    assert jain([1.0, 1.0, 1.0, 1.0]) == 1.0 and jain([1.0, 0.0, 0.0, 0.0]) == 0.25


def test_smoke_replay_of_a_small_trace(tmp_path: Path) -> None:
    rng = random.Random(5)
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    with nodes.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sn", "cpu_milli", "memory_mib", "gpu", "model"])
        for i in range(10):
            w.writerow([f"node-{i:02d}", 64000, 262144, rng.choice([2, 4, 8]), "V100"])
    with pods.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "creation_time", "deletion_time"])
        for i in range(300):
            gpus = rng.choice([1, 1, 1, 2, 4])
            created = rng.uniform(0, 100000)
            w.writerow([f"pod-{i:04d}", 4000, 8192, gpus, 1000, round(created), round(created + rng.expovariate(1 / 600))])
    out = tmp_path / "queues.json"
    argv = ["--nodes", str(nodes), "--pods", str(pods), "--pool-share", "1", "--seeds", "1", "--workers", "1",
            "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())["strategies"]
    assert list(doc) == list(STRATEGIES)
    for strategy, r in doc.items():
        assert 0 < r["utilisation"] <= 1 and 0 < r["jain"] <= 1 and r["never_started"] == 0, strategy
        assert set(r["teams"]) == set(TEAMS), strategy
        for team in r["teams"].values():
            assert team["gpu_hours"] > 0 and 0 <= team["mean_wait_s"] and 0 <= team["p95_wait_s"], strategy
