"""An upper bound on the GPU allocation any placement could reach on a task sequence.

Tasks arrive and never leave, so what any policy has allocated once demand ``D`` has arrived
is the GPU demand of some subset of the tasks arrived so far, packed onto the pool. The most
any subset can pack is bounded by a linear program that knows the whole prefix (an offline
relaxation, so it bounds online and offline policies alike):

* hosts are grouped by type (GPU model, GPU count, CPU, memory) and tasks by shape; ``x[s, t]``
  is how many tasks of shape ``s`` go on hosts of type ``t`` (only types with a host big
  enough and of an accepted model);
* at most the arrived count of each shape is placed;
* per host type, the tasks' CPU, memory and milli-GPUs fit the type's total;
* per host type, for each dual feasible function ``u_k`` (Fekete and Schepers), the sum of
  ``u_k`` of each task's per-GPU share, one per GPU it uses, is at most the type's GPU count.
  A function of this kind maps the items of any set that fits one bin to values that sum to
  at most one, so these rows keep the LP from splitting a share across GPUs: two 600m shares
  cannot go on one GPU, and an 810m share leaves a 190m slice that only a share of 190m or
  less can fill. The same functions bound CPU and memory per host (a task needing over half
  a host's cores rules out another such task there).

The LP drops the integrality of per-host packing and the arrival order, so the bound is
optimistic; its distance to a policy is an upper bound on what any policy could still gain.
Solved with HiGHS through ``scipy.optimize.linprog``, well under a second per prefix.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_array

from provider.scheduling import NodeState, PlacementRequest
from provider.scheduling.filters import model_matches
from provider.scheduling.model import MILLI_PER_GPU

DFF_ORDERS = tuple(range(1, 11))
"""The ``k`` of the dual feasible functions used on GPU slices, CPU and memory."""


def dff(k: int, share: float) -> float:
    """Fekete and Schepers' ``u_k``: ``share`` if ``(k+1)·share`` is whole, else
    ``floor((k+1)·share)/k``. Any items that fit one bin map to at most 1 in total."""
    scaled = (k + 1) * share
    whole = round(scaled)
    if abs(scaled - whole) < 1e-9:
        return share
    return math.floor(scaled) / k


HostType = tuple[str, int, int, int]  # GPU model, GPU count, milli-CPUs, memory MB
Shape = tuple[int, int, int, int, str | None]  # GPUs, milli per GPU, milli-CPUs, memory MB, model


def host_types(nodes: Sequence[NodeState]) -> Counter[HostType]:
    return Counter((n.gpu_model, len(n.gpus), n.cpu_milli, n.memory_mb) for n in nodes if n.gpus)


def shape_of(r: PlacementRequest) -> Shape:
    return r.gpus, r.gpu_milli, r.cpu_milli, r.memory_mb, r.gpu_model


def upper_bound(types: Counter[HostType], arrived: Counter[Shape]) -> float:
    """The most milli-GPUs any packing of the ``arrived`` tasks onto hosts of ``types`` holds."""
    shapes = [s for s in arrived if s[0] > 0]  # a CPU-only task adds no GPU allocation
    kinds = list(types)
    pairs = [
        (i, j) for i, s in enumerate(shapes) for j, (model, gpus, cpu, memory) in enumerate(kinds)
        if s[0] <= gpus and s[2] <= cpu and s[3] <= memory and model_matches(s[4], model)
    ]
    if not pairs:
        return 0.0
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    bounds: list[float] = []

    def row(entries: list[tuple[int, float]], limit: float) -> None:
        r = len(bounds)
        for col, value in entries:
            if value:
                rows.append(r)
                cols.append(col)
                vals.append(value)
        bounds.append(limit)

    by_shape: dict[int, list[int]] = {}
    by_type: dict[int, list[int]] = {}
    for col, (i, j) in enumerate(pairs):
        by_shape.setdefault(i, []).append(col)
        by_type.setdefault(j, []).append(col)
    for i, cols_i in by_shape.items():
        row([(c, 1.0) for c in cols_i], arrived[shapes[i]])
    for j, cols_j in by_type.items():
        model, gpus, cpu, memory = kinds[j]
        count = types[kinds[j]]
        tasks = [(c, shapes[pairs[c][0]]) for c in cols_j]
        row([(c, s[0] * s[1]) for c, s in tasks], count * gpus * MILLI_PER_GPU)
        row([(c, s[2]) for c, s in tasks], count * cpu)
        row([(c, s[3]) for c, s in tasks], count * memory)
        for k in DFF_ORDERS:
            row([(c, s[0] * dff(k, s[1] / MILLI_PER_GPU)) for c, s in tasks], count * gpus)
            row([(c, dff(k, s[2] / cpu)) for c, s in tasks], count)
            row([(c, dff(k, s[3] / memory)) for c, s in tasks], count)
    gain = np.array([-shapes[i][0] * shapes[i][1] for i, _ in pairs], dtype=float)
    matrix = coo_array((vals, (rows, cols)), shape=(len(bounds), len(pairs))).tocsr()
    solved = linprog(gain, A_ub=matrix, b_ub=np.array(bounds), bounds=(0, None), method="highs")
    if solved.status != 0:
        raise RuntimeError(f"the bound's LP did not solve: {solved.message}")
    return float(-solved.fun)


def bound_curve(
    nodes: Sequence[NodeState], sequence: Sequence[PlacementRequest], checkpoints: Sequence[int]
) -> dict[int, float]:
    """The bound, in percent of GPU capacity, at each arrived-demand checkpoint (percent).

    The allocation ratio at X% is a mean over the arrivals whose arrived demand rounds to X%
    (or, where a large task jumps over X%, to X±1%); the bound at the last of them bounds that
    mean, since the bound only grows with the prefix. Checkpoints never reached are left out.
    """
    types = host_types(nodes)
    capacity = sum(len(n.gpus) for n in nodes) * MILLI_PER_GPU
    last: dict[int, int] = {}
    arrived = 0
    for i, r in enumerate(sequence):
        arrived += r.gpu_milli_total
        last[round(100 * arrived / capacity)] = i
    out = {}
    for pct in checkpoints:
        near = [last[p] for p in (pct,) if p in last] or [last[p] for p in (pct - 1, pct + 1) if p in last]
        if near:
            prefix = Counter(shape_of(r) for r in sequence[: max(near) + 1])
            out[pct] = 100 * upper_bound(types, prefix) / capacity
    return out
