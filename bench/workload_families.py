"""Workload families: the default openb workload reshaped along one axis at a time.

The FGD study (Weng et al., USENIX ATC 2023, section 6) asks how placement fares when a
workload leans towards one kind of task. Its published pod lists are samples of the default
openb workload that raise or lower one share: of GPU-sharing tasks, of multi-GPU tasks, of
tasks constrained to GPU models, of CPU-only work. This module builds such families from the
default workload (or any pod list), at any level and for any seed, so a policy can be tried
on workloads it was not developed on.

A family level is a share, in percent:

* ``share<L>``: GPU-sharing tasks (one GPU, less than all of it) ask for L% of the GPU
  demand. The GPU tasks are drawn anew (as many as the base has) from the base's sharing
  and non-sharing GPU tasks, each draw from whichever side is below its target; CPU-only
  tasks are kept.
* ``multi<L>``: multi-GPU tasks ask for L% of the GPU demand, drawn the same way from the
  base's multi-GPU and single-GPU tasks.
* ``spec<L>``: L% of the GPU tasks, picked at random, accept only one GPU model, drawn in
  proportion to the pool's GPUs of that model among the models with a host big enough for
  the task (so no constraint makes a task impossible).
* ``cpu<L>``: CPU-only tasks, drawn from the base's, ask for L% of the CPU that the GPU
  tasks leave free on the pool (the default openb workload is at about 47%).

    python bench/workload_families.py [--pods CSV] [--nodes CSV] [--workload gen-share60,...] [--json PATH]

prints the level each family reached on the base pod list, beside the base's own level.

Workload names are ``gen-<family><level>``, e.g. ``gen-share60``, apart from the openb file
names (``gpushare40``, ``cpu100``) whose levels are defined differently. Levels in
:data:`DEVELOPED_ON` are the ones policies were developed on; the others are held out and
only reported.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from provider.scheduling import NodeState, PlacementRequest

PREFIX = "gen-"
FAMILY_LEVELS: dict[str, tuple[int, ...]] = {
    "share": (20, 60, 100),
    "multi": (20, 35, 50),
    "spec": (10, 20, 33),
    "cpu": (25, 50, 100),
}
DEVELOPED_ON = frozenset({"gen-share60", "gen-share100", "gen-multi35", "gen-multi50", "gen-cpu100"})
"""Generated workloads ``fragmentation_balanced`` was developed on (besides the openb
``default``): the upper levels of the two families where FGD was hardest to beat, and
``gen-cpu100``, held out at first, where a first version fell behind FGD. The rest are held
out."""

GENERATED = tuple(f"{PREFIX}{family}{level}" for family, levels in FAMILY_LEVELS.items() for level in levels)
_NAME = re.compile(rf"^{PREFIX}({'|'.join(FAMILY_LEVELS)})(\d+)$")


def parse(workload: str) -> tuple[str, int] | None:
    """``("share", 60)`` for ``gen-share60``; None for a name that is not a generated workload."""
    found = _NAME.match(workload)
    if not found:
        return None
    level = int(found.group(2))
    if not 0 <= level <= 100:
        raise ValueError(f"{workload}: a level is a percentage in 0..100, got {level}")
    return found.group(1), level


def generate(
    workload: str, base: Sequence[PlacementRequest], nodes: Sequence[NodeState], seed: int
) -> list[PlacementRequest]:
    """The pod list of generated ``workload`` built from ``base`` for the pool ``nodes``."""
    parsed = parse(workload)
    if parsed is None:
        raise ValueError(f"{workload!r} is not a generated workload; use {', '.join(GENERATED)}")
    family, level = parsed
    rng = random.Random(f"{workload}/{seed}")
    return _BUILDERS[family](list(base), nodes, level / 100, rng)


def _redraw(
    base: list[PlacementRequest], chosen: Callable[[PlacementRequest], bool], target: float, rng: random.Random
) -> list[PlacementRequest]:
    """CPU-only tasks kept; the GPU tasks drawn anew so that those ``chosen`` ask for
    ``target`` of the GPU demand: each draw comes from the side below its target."""
    gpu_tasks = [r for r in base if r.gpus]
    inside = [r for r in gpu_tasks if chosen(r)]
    outside = [r for r in gpu_tasks if not chosen(r)]
    if (target > 0 and not inside) or (target < 1 and not outside):
        raise ValueError("the base workload has no tasks of one side of this family")
    drawn: list[PlacementRequest] = []
    demand_in = demand = 0
    for _ in gpu_tasks:
        side = inside if target == 1 or (target > 0 and demand_in < target * demand) else outside
        task = side[rng.randrange(len(side))]
        drawn.append(task)
        demand += task.gpu_milli_total
        demand_in += task.gpu_milli_total if side is inside else 0
    return [r for r in base if not r.gpus] + drawn


def _share(base: list[PlacementRequest], nodes: Sequence[NodeState], target: float, rng: random.Random) -> list[PlacementRequest]:
    return _redraw(base, lambda r: r.is_share, target, rng)


def _multi(base: list[PlacementRequest], nodes: Sequence[NodeState], target: float, rng: random.Random) -> list[PlacementRequest]:
    return _redraw(base, lambda r: r.gpus > 1, target, rng)


def _spec(base: list[PlacementRequest], nodes: Sequence[NodeState], target: float, rng: random.Random) -> list[PlacementRequest]:
    gpu_at = [i for i, r in enumerate(base) if r.gpus]
    out = list(base)
    for i in rng.sample(gpu_at, round(target * len(gpu_at))):
        task = out[i]
        weights: dict[str, int] = {}
        for n in nodes:
            if n.gpus and len(n.gpus) >= task.gpus and n.cpu_milli >= task.cpu_milli and n.memory_mb >= task.memory_mb:
                weights[n.gpu_model] = weights.get(n.gpu_model, 0) + len(n.gpus)
        models = sorted(weights)
        if models:
            out[i] = replace(task, gpu_model=rng.choices(models, [weights[m] for m in models])[0])
    return out


def _cpu(base: list[PlacementRequest], nodes: Sequence[NodeState], target: float, rng: random.Random) -> list[PlacementRequest]:
    gpu_tasks = [r for r in base if r.gpus]
    cpu_only = [r for r in base if not r.gpus]
    if not cpu_only:
        raise ValueError("the base workload has no CPU-only tasks to draw from")
    spare = sum(n.cpu_milli for n in nodes) - sum(r.cpu_milli for r in gpu_tasks)
    if spare <= 0:
        raise ValueError(
            f"the GPU tasks alone ask for {-spare}m more CPU than the pool has; "
            "the cpu family needs a pool with CPU to spare"
        )
    drawn: list[PlacementRequest] = []
    demand = 0
    while demand < target * spare:
        task = cpu_only[rng.randrange(len(cpu_only))]
        drawn.append(task)
        demand += task.cpu_milli
    return drawn + gpu_tasks


_BUILDERS = {"share": _share, "multi": _multi, "spec": _spec, "cpu": _cpu}


def measured_pct(family: str, tasks: Sequence[PlacementRequest], nodes: Sequence[NodeState]) -> float:
    """The share (%) that defines ``family``, measured on ``tasks`` for the pool ``nodes``."""
    gpu_tasks = [t for t in tasks if t.gpus]
    gpu_demand = sum(t.gpu_milli_total for t in gpu_tasks) or 1
    if family == "share":
        return 100 * sum(t.gpu_milli_total for t in gpu_tasks if t.is_share) / gpu_demand
    if family == "multi":
        return 100 * sum(t.gpu_milli_total for t in gpu_tasks if t.gpus > 1) / gpu_demand
    if family == "spec":
        return 100 * sum(1 for t in gpu_tasks if t.gpu_model) / (len(gpu_tasks) or 1)
    spare = sum(n.cpu_milli for n in nodes) - sum(t.cpu_milli for t in gpu_tasks)
    return 100 * sum(t.cpu_milli for t in tasks if not t.gpus) / spare if spare > 0 else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    """Build each workload from the base pod list and print (and with ``--json`` write) the level
    it reached beside the base's: the families' definitions, checked on the data."""
    import argparse
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import placement_sim  # here, not at the top: placement_sim imports this module

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", help="node CSV (default: the openb node list)")
    parser.add_argument("--pods", help="base pod CSV (default: the openb default workload)")
    parser.add_argument("--workload", default=",".join(GENERATED), help="generated workloads, comma-separated")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated pod lists")
    parser.add_argument("--trace-dir", default=str(placement_sim.default_trace_dir()))
    parser.add_argument("--json", help="write the levels here")
    args = parser.parse_args(argv)
    trace_dir = Path(args.trace_dir)
    nodes = placement_sim.load_nodes(Path(args.nodes) if args.nodes else trace_dir / placement_sim.NODES_FILE)
    pods = Path(args.pods) if args.pods else placement_sim.pods_file(trace_dir, "default")
    base = [r for _, r in placement_sim.load_pods(pods)]
    levels: dict[str, dict[str, object]] = {}
    print(f"{'workload':<14} {'level %':>7} {'reached %':>9} {'base %':>7} {'tasks':>6} {'GPU tasks':>9}")
    for workload in args.workload.split(","):
        parsed = parse(workload)
        if parsed is None:
            parser.error(f"{workload!r} is not a generated workload; use {', '.join(GENERATED)}")
        family, level = parsed
        tasks = generate(workload, base, nodes, args.seed)
        reached, was = measured_pct(family, tasks, nodes), measured_pct(family, base, nodes)
        levels[workload] = {"family": family, "level": level, "reached_pct": round(reached, 2),
                            "base_pct": round(was, 2), "tasks": len(tasks), "gpu_tasks": sum(1 for t in tasks if t.gpus),
                            "developed_on": workload in DEVELOPED_ON}
        print(f"{workload:<14} {level:>7} {reached:>9.2f} {was:>7.2f} {len(tasks):>6} {levels[workload]['gpu_tasks']:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"base": str(pods), "seed": args.seed, "workloads": levels}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
