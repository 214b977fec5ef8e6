"""Reservation arithmetic: a node with an allocation added, or taken away.

Production keeps a claim on each host for every task that runs or starts there (GPUs, milli-CPUs,
memory) and computes the host's allocation by folding its claims through :func:`apply`
(:func:`provider.reservations.rules.allocation`); the trace simulator applies every task it
places through the same function. So what a simulation measures is the accounting production
runs, CPU and memory included.
Nodes are immutable: each function returns a new :class:`NodeState` and leaves its input
as it was, which is what lets a caller keep old snapshots and cache results per snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from provider.scheduling.model import MILLI_PER_GPU, FreeState, GpuState, NodeState, Resources

UNRESERVED_CPU_MILLI = 1000
"""The CPU a task that reserves none is counted as using until a measurement shows it: one
core, what one training process feeding its GPUs keeps busy."""
MEASURE_WINDOW_S = 2.0
"""A task placed less than this before a host's measurement does not show in it yet: one
sampling interval of the node agent (1 s by default) and the start of its container."""


def _check_indices(node: NodeState, taken: Resources, gpu_indices: tuple[int, ...]) -> None:
    if len(gpu_indices) != taken.gpus:
        raise ValueError(
            f"{node.name}: request needs {taken.gpus} GPU(s), got indices {gpu_indices}"
        )
    if len(set(gpu_indices)) != len(gpu_indices):
        raise ValueError(f"{node.name}: GPU indices repeat: {gpu_indices}")
    known = {g.index for g in node.gpus}
    missing = [i for i in gpu_indices if i not in known]
    if missing:
        raise ValueError(f"{node.name}: no GPU with index {missing}")


def _shift(
    node: NodeState, taken: Resources, gpu_indices: tuple[int, ...], sign: int
) -> NodeState:
    _check_indices(node, taken, gpu_indices)
    milli = taken.gpu_milli * sign
    chosen = set(gpu_indices)
    gpus: list[GpuState] = []
    for gpu in node.gpus:
        if gpu.index in chosen:
            allocated = gpu.allocated_milli + milli
            if not 0 <= allocated <= MILLI_PER_GPU:
                raise ValueError(
                    f"{node.name}: GPU {gpu.index} would hold {allocated}m "
                    f"(allowed 0..{MILLI_PER_GPU}m)"
                )
            gpu = replace(gpu, allocated_milli=allocated)
        gpus.append(gpu)
    cpu = node.cpu_allocated_milli + sign * taken.cpu_milli
    memory = node.memory_allocated_mb + sign * taken.memory_mb
    if cpu < 0 or memory < 0:
        raise ValueError(f"{node.name}: releasing more than was reserved (cpu {cpu}m, memory {memory}MB)")
    return replace(node, gpus=tuple(gpus), cpu_allocated_milli=cpu, memory_allocated_mb=memory)


def apply(node: NodeState, taken: Resources, gpu_indices: tuple[int, ...]) -> NodeState:
    """``node`` with ``taken`` reserved on it, on the GPUs ``gpu_indices``.

    ``taken`` is a resource vector (a request is one). Raises ``ValueError`` when the indices
    do not match it or a GPU would be over-reserved: a caller's mistake, since whether it fits
    is decided before, by :mod:`provider.scheduling.capacity`. CPU and memory are not capped
    here because the filter already decided and an operator may knowingly overcommit them.
    """
    return _shift(node, taken, gpu_indices, +1)


def release(node: NodeState, taken: Resources, gpu_indices: tuple[int, ...]) -> NodeState:
    """The inverse of :func:`apply`: ``node`` with that reservation taken away."""
    return _shift(node, taken, gpu_indices, -1)


def free_state_after(node: NodeState, taken: Resources, gpu_indices: tuple[int, ...]) -> FreeState:
    """``free_state(apply(node, taken, gpu_indices))`` for GPUs that a filter found free
    enough, without building the node: a placement policy asks it of every GPU choice of every
    feasible node, the inner loop of a trace replay."""
    milli = taken.gpu_milli
    frees = [max(0, MILLI_PER_GPU - g.allocated_milli - (milli if g.index in gpu_indices else 0)) for g in node.gpus]
    memory = max(0, node.memory_mb - node.memory_allocated_mb - taken.memory_mb)
    if node.memory_available_mb is not None:
        memory = min(memory, node.memory_available_mb)
    cpu = max(0, node.cpu_milli - node.cpu_allocated_milli - taken.cpu_milli)
    return node.gpu_model, cpu, memory, tuple(sorted(frees))


def unseen_cpu_milli(taken: Resources) -> int:
    """The CPU load that a task placed since a host's last measurement adds before it shows:
    its reserved milli-CPUs (a quota caps it there), or :data:`UNRESERVED_CPU_MILLI` when it
    reserves none. Counting it keeps the herd off a host that only *looks* idle (Mitzenmacher,
    "How useful is old information?"): without it, every job that arrives within one sampling
    interval scores the same stale idle reading and lands on the same host."""
    return taken.cpu_milli or UNRESERVED_CPU_MILLI


def with_unseen(node: NodeState, placed: Iterable[Resources]) -> NodeState:
    """``node`` with the tasks ``placed`` on it since its measurement counted as load it does
    not show yet (:func:`unseen_cpu_milli`)."""
    unseen = sum(unseen_cpu_milli(t) for t in placed)
    return replace(node, cpu_unmeasured_milli=node.cpu_unmeasured_milli + unseen) if unseen else node
