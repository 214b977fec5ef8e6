"""``bench/queue_sim.py``: one case worked by hand through every strategy and one through the
placement policies compared, a smoke run on CSVs built here (no external data), and the replay's
fair-share line against production's order() and may_start() on random inputs."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import plot_queue_shares, queue_sim
from bench.placement_sim import NODES_FILE
from bench.queue_sim import COMPARED_POLICIES, SAMPLES, STRATEGIES, TEAMS, FairLine, Task, figures, jain, main, replay
from provider.scheduling import GpuState, NodeState, PlacementRequest
from provider.scheduling.queues import RESOURCES, Admitted, Amounts, QueueSpec, Waiting, admit, may_start, order

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


def _two_hosts() -> tuple[list[Task], list[NodeState]]:
    """Two hosts of 2 GPUs each. One-GPU tasks arrive at 0 and 1 s (100 s long), then a task of
    2 GPUs at 2 s."""
    tasks = [Task(0, "vision", 0.0, 100.0, ONE_GPU), Task(1, "nlp", 1.0, 100.0, ONE_GPU),
             Task(2, "speech", 2.0, 10.0, PlacementRequest(gpus=2))]
    return tasks, [NodeState(h, cpu_milli=64000, memory_mb=262144, gpus=(GpuState(0), GpuState(1))) for h in "ab"]


@pytest.mark.parametrize(
    ("policy", "waits"),
    [
        # The second task goes to the emptier host, so neither has 2 GPUs free until one ends.
        pytest.param("least_loaded", [0, 0, 98], id="least_loaded"),
        # Both one-GPU tasks leave the same fragmentation anywhere: the tie goes to host a,
        # and b stays whole for the 2-GPU task.
        pytest.param("fragmentation", [0, 0, 0], id="fragmentation"),
        pytest.param("fragmentation_balanced", [0, 0, 0], id="fragmentation_balanced"),
    ],
)
def test_placement_policies_on_a_case_worked_by_hand(policy: str, waits: list[float]) -> None:
    tasks, pool = _two_hosts()
    run = replay(tasks, pool, "fcfs", policy, seed=1)
    assert [run["waits"][t.index] for t in tasks] == pytest.approx(waits)
    everyone = figures(tasks, run)["all"]
    assert everyone["mean_wait_s"] == pytest.approx(sum(waits) / 3)
    assert everyone["by_gpus"] == {"1": {"tasks": 2, "mean_wait_s": 0.0},
                                   "2": {"tasks": 1, "mean_wait_s": pytest.approx(waits[2])}}


def test_jain() -> None:
    assert jain([1.0, 1.0, 1.0, 1.0]) == 1.0 and jain([1.0, 0.0, 0.0, 0.0]) == 0.25


def test_the_meter_notes_the_allocation_between_events() -> None:
    """The window runs to the last arrival (2 s): one GPU of vision until nlp's arrives at 1 s,
    then one each; the 2-GPU task arriving at 2 s is past the last instant noted."""
    tasks, pool = _two_hosts()
    samples = replay(tasks, pool, "fcfs", "least_loaded", seed=1)["meter"].samples
    assert len(samples) == SAMPLES and samples[0].at == 0 and samples[-1].at == pytest.approx(2 - 2 / SAMPLES)
    for sample in samples:
        allocated = (1000, 0, 0, 0) if sample.at < 1 else (1000, 1000, 0, 0)
        assert sample.allocated == allocated and sample.fair == allocated, sample  # demand below the pool: all of it


def _small_trace(nodes: Path, pods: Path) -> None:
    """Ten nodes of 2 to 8 GPUs and 300 tasks of 1 to 4 GPUs over about a day, in openb's columns."""
    rng = random.Random(5)
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


def test_smoke_replay_of_a_small_trace(tmp_path: Path) -> None:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    _small_trace(nodes, pods)
    out = tmp_path / "queues.json"
    argv = ["--nodes", str(nodes), "--pods", str(pods), "--pool-share", "1", "--seeds", "1", "--workers", "1",
            "--compare-policies", "--json", str(out)]
    assert main(argv) == 0
    written = json.loads(out.read_text())
    assert list(written["policies"]) == ["least_loaded", *COMPARED_POLICIES]
    # First come, first served with the default policy is the same replay in both tables.
    assert written["policies"]["least_loaded"] == written["strategies"]["fcfs"]
    for policy, r in written["policies"].items():
        assert 0 < r["utilisation"] <= 1 and r["never_started"] == 0, policy
        assert sum(size["tasks"] for size in r["all"]["by_gpus"].values()) == 300, policy
        assert 0 <= r["all"]["mean_wait_s"] and 0 <= r["all"]["p95_wait_s"], policy
    doc = written["strategies"]
    assert list(doc) == list(STRATEGIES)
    for strategy, r in doc.items():
        assert 0 < r["utilisation"] <= 1 and 0 < r["jain"] <= 1 and r["never_started"] == 0, strategy
        assert set(r["teams"]) == set(TEAMS), strategy
        for team in r["teams"].values():
            assert team["gpu_hours"] > 0 and 0 <= team["mean_wait_s"] and 0 <= team["p95_wait_s"], strategy


def _random_queues(rng: random.Random) -> dict[str, QueueSpec]:
    """Two to five queues with quotas on random resources (some none), limits and weights."""
    queues: dict[str, QueueSpec] = {}
    for q in range(rng.randint(2, 5)):
        name = f"q{q}"
        quota = {r: rng.randint(0, 8000) for r in RESOURCES if rng.random() < 0.6}
        borrowing = {r: rng.randint(0, 4000) for r in quota if rng.random() < 0.3} or None
        queues[name] = QueueSpec(name, quota, borrowing_limit=borrowing, weight=rng.choice([0.5, 1.0, 1.0, 2.0]))
    return queues


def _random_waiter(rng: random.Random, owner: str, queues: dict[str, QueueSpec]) -> Waiting:
    """Few distinct priorities and times, so ties on each part of order()'s key are common."""
    return Waiting(owner, rng.choice(list(queues)), rng.choice([0, 0, 1, 2]), float(rng.randint(0, 5)),
                   Amounts(rng.choice([0, 500, 1000, 2000, 4000]), rng.randint(0, 3) * 1000, rng.randint(0, 2) * 4096))


@pytest.mark.parametrize("seed", range(40))
def test_the_fair_line_is_production_order_and_may_start(seed: int) -> None:
    """FairLine, kept as waiters come and go, gives order()'s line at every moment, and the first
    waiter of it that is admitted and fits is the one may_start() lets start."""
    rng = random.Random(seed)
    queues = _random_queues(rng)
    line, waiting = FairLine(queues), dict[str, Waiting]()
    for step in range(60):
        if waiting and rng.random() < 0.35:
            owner = rng.choice(list(waiting))
            line.remove(owner)
            del waiting[owner]
        else:
            waiter = _random_waiter(rng, f"t{rng.randint(0, 10**6)}-{step}", queues)
            line.add(waiter)
            waiting[waiter.owner] = waiter
        usage = {q: Amounts(*(rng.randint(0, 6000) for _ in RESOURCES)) for q in queues if rng.random() < 0.8}
        expected = order(list(waiting.values()), usage, queues)
        assert list(line.order(usage)) == expected
        fitting = {w.owner for w in expected if rng.random() < 0.5}

        def fits(w: Waiting) -> bool:
            return w.owner in fitting

        first = next((w.owner for w in line.order(usage)
                      if fits(w) and isinstance(admit(w.queue, w.request, usage, queues), Admitted)), None)
        assert first == next((w.owner for w in expected if may_start(w.owner, expected, usage, queues, fits)), None)


def test_the_fair_line_is_read_as_it_was_when_asked() -> None:
    queues = {q: QueueSpec(q, {"gpu_milli": 1000}) for q in ("a", "b")}
    line = FairLine(queues)
    for k, q in enumerate("aabb"):
        line.add(Waiting(str(k), q, 0, float(k), Amounts(1000)))
    usage = {"a": Amounts(), "b": Amounts()}
    read = line.order(usage)
    assert next(read).owner == "0"
    line.remove("2")
    usage["b"] = Amounts(5000)
    assert [w.owner for w in read] == ["2", "1", "3"]
    assert [w.owner for w in line.order(usage)] == ["0", "1", "3"]
    with pytest.raises(ValueError, match="waiting already"):
        line.add(Waiting("1", "a", 0, 9.0, Amounts(1000)))


class _OrderAfresh:
    """FairLine's interface answered by production's order() from scratch at every read."""

    def __init__(self, queues: dict[str, QueueSpec]) -> None:
        self.queues, self.waiting = queues, dict[str, Waiting]()

    def add(self, waiter: Waiting) -> None:
        self.waiting[waiter.owner] = waiter

    def remove(self, owner: str) -> None:
        del self.waiting[owner]

    def order(self, usage: dict[str, Amounts]) -> Iterator[Waiting]:
        return iter(order(list(self.waiting.values()), dict(usage), self.queues))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_fair_share_replay_decides_as_order_from_scratch(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crowded replay of ``ours`` gives every task the same wait whether the line comes from
    FairLine or from order() recomputed at every departure."""
    rng = random.Random(seed)
    pool = [NodeState(f"h{i}", cpu_milli=32000, memory_mb=131072, gpus=tuple(GpuState(g) for g in range(n)))
            for i, n in enumerate((2, 4, 4, 8))]
    tasks: list[Task] = []
    at = 0.0
    for k in range(400):
        at += rng.expovariate(1 / 20)
        request = PlacementRequest(gpus=rng.choice([1, 1, 1, 2, 4, 8]), cpu_milli=rng.choice([1000, 4000, 8000]))
        tasks.append(Task(k, rng.choices(list(TEAMS), list(TEAMS.values()))[0], at, rng.expovariate(1 / 400), request))
    fast = replay(tasks, pool, "ours", "least_loaded", seed)
    monkeypatch.setattr(queue_sim, "FairLine", _OrderAfresh)
    assert replay(tasks, pool, "ours", "least_loaded", seed)["waits"] == fast["waits"]


def test_the_plot_of_each_teams_share(tmp_path: Path) -> None:
    _small_trace(tmp_path / NODES_FILE, tmp_path / "openb_pod_list_default.csv")
    out = tmp_path / "shares.png"
    assert plot_queue_shares.main(["--trace-dir", str(tmp_path), "--pool-share", "1", "--workers", "1",
                                   "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
