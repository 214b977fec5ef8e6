"""``bench/preemption_sim.py``: one case worked by hand through every victim order, the checkpoint
arithmetic, and a smoke run on CSVs built here (no external data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.preemption_sim import ORDERS, last_checkpoint, main, replay
from bench.queue_sim import Task
from provider.scheduling import GpuState, NodeState, PlacementRequest
from tests.unit.test_queue_sim import _small_trace

ONE_GPU = PlacementRequest(gpus=1)
HOUR = 3600.0


def _case() -> tuple[list[Task], list[NodeState]]:
    """One host of 4 GPUs, so each of the four teams' quota is one GPU. nlp fills it, borrowing
    three GPUs: its tasks start at 0, 500, 1000 and 3000 s and would run 10,000 s. A one-GPU
    vision task arrives at 4000 s, within vision's quota: it reclaims. With a checkpoint every
    1800 s, preempting at 4000 s loses 400 s of the first nlp task (checkpointed at 3600 s),
    1700 s of the second (2300 s), 1200 s of the third (2800 s) and 1000 s of the youngest (no
    checkpoint yet)."""
    tasks = [Task(k, "nlp", at, 10_000.0, ONE_GPU) for k, at in enumerate((0.0, 500.0, 1000.0, 3000.0))]
    tasks.append(Task(4, "vision", 4000.0, 100.0, ONE_GPU))
    return tasks, [NodeState("h", cpu_milli=64000, memory_mb=262144, gpus=tuple(GpuState(i) for i in range(4)))]


@pytest.mark.parametrize(
    ("order", "reclaim_wait", "preemptions", "uncheckpointed", "lost_s"),
    [
        # Without preemption vision waits for the first nlp task to end, at 10,000 s.
        pytest.param("none", 6000.0, 0, 0, 0.0, id="none"),
        # Kueue's order takes the most recently admitted, before its first checkpoint: 1000 s lost.
        pytest.param("kueue", 0.0, 1, 1, 1000.0, id="kueue"),
        # Ours takes the one whose checkpoint is freshest: 400 s lost.
        pytest.param("ours", 0.0, 1, 0, 400.0, id="ours"),
    ],
)
def test_a_case_worked_by_hand(order: str, reclaim_wait: float, preemptions: int, uncheckpointed: int,
                               lost_s: float) -> None:
    tasks, pool = _case()
    run = replay(tasks, pool, order, "least_loaded", 1, interval=1800.0)
    assert run["reclaim_waits"] == [reclaim_wait]
    assert run["preemptions"] == preemptions and run["before_first_checkpoint"] == uncheckpointed
    assert run["lost_gpu_hours"] == pytest.approx(lost_s / HOUR)
    assert run["never_started"] == 0  # the victim waited again and resumed with what it lost to do again


@pytest.mark.parametrize(("started", "now", "expected"), [(0.0, 1799.0, None), (0.0, 1800.0, 1800.0),
                                                          (100.0, 4000.0, 3700.0)])
def test_the_last_checkpoint_of_a_run(started: float, now: float, expected: float | None) -> None:
    assert last_checkpoint(started, now, 1800.0) == expected


def test_smoke_replay_of_a_small_trace(tmp_path: Path) -> None:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    _small_trace(nodes, pods)
    out = tmp_path / "preemption.json"
    argv = ["--nodes", str(nodes), "--pods", str(pods), "--pool-share", "1", "--seeds", "1", "--workers", "1",
            "--checkpoint-interval", "300", "--json", str(out)]
    assert main(argv) == 0
    written = json.loads(out.read_text())
    assert written["checkpoint_interval_s"] == 300 and set(written["preemption"]) == {"kueue", "ours"}
    assert written["none"]["preemptions"] == 0
    for order, r in written["preemption"].items():
        assert r["never_started"] == 0 and r["lost_gpu_hours"] >= 0 and r["reclaim_p95_s"] >= 0, order
        assert set(r) >= {"lost_gpu_hours", "preemptions", "reclaim_p95_s"}, order
    assert set(written["seeds"]) == set(ORDERS)


def test_a_checkpoint_interval_that_is_not_a_time_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--checkpoint-interval", "0", "--smoke"])
    assert "--checkpoint-interval must be a number of seconds > 0" in capsys.readouterr().err
