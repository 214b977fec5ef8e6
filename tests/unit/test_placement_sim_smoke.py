"""A small replay through bench/placement_sim.py, on CSVs built here (no external data), and
the plot of bench/plot_placement.py."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import placement_sim  # noqa: E402
import plot_placement  # noqa: E402

POLICIES = "random,best_fit,fragmentation,least_loaded,fragmentation_balanced"


def test_replay_writes_every_policy(trace: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods = trace
    out = tmp_path / "result.json"
    argv = ["--nodes", str(nodes), "--pods", str(pods), "--policy", POLICIES, "--seeds", "1-2",
            "--workers", "1", "--trace-dir", str(tmp_path), "--json", str(out)]
    assert placement_sim.main(argv) == 0
    results = json.loads(out.read_text())
    assert [r["policy"] for r in results] == POLICIES.split(",")
    for r in results:
        assert r["workload"] == "pods" and r["seeds"] == [1, 2] and len(r["per_seed"]) == 2
        for key in ("alloc_at_100", "alloc_at_130"):
            assert 0 < r[key]["mean"] <= 100
        for run in r["per_seed"]:
            allocations = [a for _, a in run["curve"]]
            assert allocations == sorted(allocations)  # tasks never leave
    table = capsys.readouterr().out
    assert all(name in table for name in POLICIES.split(","))

    # Same seed, same result: the replay is deterministic (timings aside).
    again = tmp_path / "again.json"
    assert placement_sim.main([*argv[:-1], str(again)]) == 0
    assert _without_timings(json.loads(again.read_text())) == _without_timings(results)


def _without_timings(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_inflation_reaches_the_target(trace: tuple[Path, Path]) -> None:
    nodes, pods = trace
    capacity = sum(len(n.gpus) for n in placement_sim.load_nodes(nodes)) * 1000
    requests = [r for _, r in placement_sim.load_pods(pods)]
    for inflation in (0.5, 1.3):
        sequence = placement_sim.arrivals(requests, capacity, inflation, random.Random(0))
        demand = sum(r.gpu_milli_total for r in sequence)
        assert demand <= inflation * capacity
        assert demand > inflation * capacity - 8000  # stopped within one task of the target


def test_generated_workloads_against_fgd_and_the_bound(
    trace: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes, pods = trace
    out = tmp_path / "families.json"
    argv = ["--nodes", str(nodes), "--pods", str(pods), "--workload", "gen-share60,gen-multi35",
            "--policy", "fragmentation,fragmentation_balanced,bound", "--seeds", "1-3", "--workers", "1",
            "--trace-dir", str(tmp_path), "--json", str(out)]
    assert placement_sim.main(argv) == 0
    results = {(r["workload"], r["policy"]): r for r in json.loads(out.read_text())}
    assert {w for w, _ in results} == {"gen-share60", "gen-multi35"}
    for workload in ("gen-share60", "gen-multi35"):
        top = {s["seed"]: s["alloc_at"] for s in results[(workload, "bound")]["per_seed"]}
        for policy in ("fragmentation", "fragmentation_balanced"):
            for s in results[(workload, policy)]["per_seed"]:
                for pct, got in s["alloc_at"].items():  # None where a large task jumped past pct±1
                    assert got is None or got <= top[s["seed"]][pct] + 1e-6
    printed = capsys.readouterr().out
    # The comparison with FGD: one row per workload, its split, and the share of the gap closed.
    rows = [line.split() for line in printed.splitlines() if line.startswith("gen-") and "fragmentation_balanced" in line
            and "%" in line]
    assert [(r[0], r[1]) for r in rows] == [("gen-share60", "dev"), ("gen-multi35", "dev")]


def test_the_figures_the_readme_quotes_and_their_plot(trace: tuple[Path, Path], tmp_path: Path) -> None:
    """The placement tables' figures (mean ± sd at 130% per workload and policy; the families'
    seed-by-seed difference, the bound and the gap closed, from each seed's allocation at 130%)
    on a generated family (bench/workload_families.py) with the bound (bench/placement_bound.py),
    then bench/plot_placement.py drawing them."""
    nodes, pods = trace
    out = tmp_path / "smoke.json"
    argv = ["--nodes", str(nodes), "--pods", str(pods), "--workload", "gen-share60",
            "--policy", "fragmentation,fragmentation_balanced,bound", "--seeds", "1-2", "--workers", "1",
            "--trace-dir", str(tmp_path), "--json", str(out)]
    assert placement_sim.main(argv) == 0
    results = json.loads(out.read_text())
    assert [(r["workload"], r["policy"]) for r in results] == [
        ("gen-share60", p) for p in ("fragmentation", "fragmentation_balanced", "bound")]
    for r in results:
        for key in ("alloc_at_100", "alloc_at_130"):
            assert 0 < r[key]["mean"] <= 100 and r[key]["sd"] >= 0, (r["policy"], key)
        assert [s["seed"] for s in r["per_seed"]] == [1, 2]
        at_130 = [s["alloc_at"]["130"] for s in r["per_seed"]]  # None where a large task jumped past 130±1
        assert all(a is None or 0 < a <= 100 for a in at_130) and any(at_130), r["policy"]

    png = tmp_path / "plot.png"
    assert plot_placement.main([str(out), "--out", str(png), "--trace-dir", str(tmp_path)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
