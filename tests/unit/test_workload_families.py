"""bench/workload_families.py: each family reaches its level, keeps what it should, is seeded."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import workload_families as wf  # noqa: E402
from provider.scheduling import GpuState, NodeState, PlacementRequest  # noqa: E402

NODES = [
    NodeState(name="big", cpu_milli=96000, memory_mb=393216, gpus=tuple(GpuState(index=i, model="G2") for i in range(8))),
    NodeState(name="small", cpu_milli=16000, memory_mb=65536, gpus=tuple(GpuState(index=i, model="P100") for i in range(2))),
    NodeState(name="cpu", cpu_milli=64000, memory_mb=65536),
]


def base_workload() -> list[PlacementRequest]:
    rng = random.Random(5)
    tasks = []
    for _ in range(400):
        kind = rng.choice(["cpu", "share", "share", "whole", "whole", "multi"])
        cpu = rng.choice([1000, 4000, 8000])
        if kind == "cpu":
            tasks.append(PlacementRequest(cpu_milli=cpu))
        elif kind == "share":
            tasks.append(PlacementRequest(gpus=1, gpu_milli=rng.choice([160, 500, 810]), cpu_milli=cpu))
        elif kind == "whole":
            tasks.append(PlacementRequest(gpus=1, cpu_milli=cpu))
        else:
            tasks.append(PlacementRequest(gpus=rng.choice([2, 4, 8]), cpu_milli=cpu))
    return tasks


def demand(tasks: list[PlacementRequest], which: object = None) -> int:
    return sum(t.gpu_milli_total for t in tasks if which is None or which(t))  # type: ignore[operator]


def is_share(t: PlacementRequest) -> bool:
    return t.gpus == 1 and t.gpu_milli < 1000


@pytest.mark.parametrize("level", [0, 20, 60, 100])
def test_share_family_reaches_its_level(level: int) -> None:
    base = base_workload()
    out = wf.generate(f"gen-share{level}", base, NODES, seed=1)
    gpu_tasks = [t for t in out if t.gpus]
    assert len(gpu_tasks) == sum(1 for t in base if t.gpus)  # as many GPU tasks as the base
    assert [t for t in out if not t.gpus] == [t for t in base if not t.gpus]  # CPU-only kept
    share = demand(gpu_tasks, is_share) / demand(gpu_tasks)
    assert abs(share - level / 100) < 0.02  # each draw comes from the side below its target


@pytest.mark.parametrize("level", [20, 50])
def test_multi_family_reaches_its_level(level: int) -> None:
    out = wf.generate(f"gen-multi{level}", base_workload(), NODES, seed=1)
    gpu_tasks = [t for t in out if t.gpus]
    multi = demand(gpu_tasks, lambda t: t.gpus > 1) / demand(gpu_tasks)
    # One 8-GPU draw moves the share by up to 8000m in the few hundred thousand of this base.
    assert abs(multi - level / 100) < 0.05


def test_spec_family_constrains_that_share_to_models_that_can_host_the_task() -> None:
    base = base_workload()
    out = wf.generate("gen-spec33", base, NODES, seed=1)
    gpu_tasks = [t for t in out if t.gpus]
    constrained = [t for t in gpu_tasks if t.gpu_model]
    assert len(constrained) == round(0.33 * len(gpu_tasks))
    assert {t.gpu_model for t in constrained} == {"G2", "P100"}
    # A task that only the 8-GPU host can take is never sent to the 2-GPU model.
    assert all(t.gpu_model == "G2" for t in constrained if t.gpus > 2 or t.cpu_milli > 16000)
    # Apart from the constraint, the tasks are the base's, in order.
    assert [(t.gpus, t.gpu_milli, t.cpu_milli) for t in out] == [(t.gpus, t.gpu_milli, t.cpu_milli) for t in base]


@pytest.mark.parametrize("level", [25, 100])
def test_cpu_family_asks_that_share_of_the_spare_cpu(level: int) -> None:
    base, pool = base_workload(), NODES * 20  # the GPU tasks ask for about half its CPU
    out = wf.generate(f"gen-cpu{level}", base, pool, seed=1)
    assert [t for t in out if t.gpus] == [t for t in base if t.gpus]
    spare = sum(n.cpu_milli for n in pool) - sum(t.cpu_milli for t in base if t.gpus)
    asked = sum(t.cpu_milli for t in out if not t.gpus)
    assert level / 100 * spare <= asked < level / 100 * spare + 8000  # stops within one task


def test_seeded() -> None:
    base = base_workload()
    once = wf.generate("gen-share60", base, NODES, seed=1)
    assert wf.generate("gen-share60", base, NODES, seed=1) == once
    assert wf.generate("gen-share60", base, NODES, seed=2) != once


def test_names() -> None:
    assert wf.parse("gen-multi35") == ("multi", 35)
    assert wf.parse("multigpu50") is None and wf.parse("cpu100") is None  # the openb files
    assert set(wf.GENERATED) >= wf.DEVELOPED_ON
    with pytest.raises(ValueError, match="a level is a percentage in 0..100, got 140"):
        wf.parse("gen-share140")
    with pytest.raises(ValueError, match="'share60' is not a generated workload; use gen-share20"):
        wf.generate("share60", base_workload(), NODES, seed=1)


def test_a_base_without_one_side_is_refused() -> None:
    whole_only = [PlacementRequest(gpus=1, cpu_milli=1000)] * 10
    with pytest.raises(ValueError, match="no tasks of one side of this family"):
        wf.generate("gen-share40", whole_only, NODES, seed=1)
    with pytest.raises(ValueError, match="no CPU-only tasks to draw from"):
        wf.generate("gen-cpu50", whole_only, NODES, seed=1)
    with pytest.raises(ValueError, match="the GPU tasks alone ask for 1293000m more CPU than the pool has"):
        wf.generate("gen-cpu50", base_workload(), NODES, seed=1)


def test_the_cli_reports_each_family_at_its_level(trace: tuple[Path, Path], tmp_path: Path) -> None:
    """``python bench/workload_families.py``, on a small trace: the level each family reached
    (the README's definitions: shares of GPU demand, of GPU tasks, of spare CPU) and the base's."""
    nodes, pods = trace
    # The trace's GPU tasks ask for more CPU than its 12 hosts have; the cpu family needs some to spare.
    roomy = tmp_path / "roomy.csv"
    with nodes.open(newline="") as f, roomy.open("w", newline="") as g:
        rows = list(csv.DictReader(f))
        w = csv.DictWriter(g, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**row, "cpu_milli": str(int(row["cpu_milli"]) * 16)} for row in rows)
    out = tmp_path / "levels.json"
    names = "gen-share60,gen-multi35,gen-spec33,gen-cpu50"
    assert wf.main(["--nodes", str(roomy), "--pods", str(pods), "--workload", names, "--json", str(out)]) == 0
    levels = json.loads(out.read_text())["workloads"]
    assert list(levels) == names.split(",")
    for name, row in levels.items():
        assert (row["family"], row["level"]) == wf.parse(name)
        assert abs(row["reached_pct"] - row["level"]) < 10 and 0 <= row["base_pct"] <= 100, (name, row)
        assert row["tasks"] >= row["gpu_tasks"] > 0 and row["developed_on"] == (name in wf.DEVELOPED_ON)
