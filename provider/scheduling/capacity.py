"""The one capacity check: what a host lacks for a resource vector, as typed reasons.

Two callers ask it, and must agree, as Kubernetes' ``Fits()`` is the accounting its scorer
uses: placement's filter (:func:`provider.scheduling.filters.reasons`: may this host take
the request, on any of its GPUs?) and the fold of a host's claims
(:func:`provider.reservations.rules.allocation`: does this claim, on the GPUs it names, fit on
top of the older ones?). They differ only in what they know, which the arguments say:

* ``gpu_ids`` None asks for any GPUs that could carry the vector: whole GPUs must be entirely
  unreserved, a share needs enough on one single GPU, and GPU memory asked for must be free
  by measurement. A claim names its GPUs instead, and each of those must have its part
  unreserved (a claim records no GPU memory).
* ``measured`` lets the memory the host reports available limit its free memory, as
  placement must; a claim is checked against capacity less reservations only, since a
  measurement lags the very tasks the claims are for.
* A host whose capacity is unknown (``unmeasured``: no agent) has its CPU and memory taken on
  trust either way.

Every shortage is reported, not only the first (the Kubernetes ``noderesources`` habit), so a
DAG author learns everything to change at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from provider.scheduling.model import MILLI_PER_GPU, GpuState, NodeState, Resources
from provider.scheduling.reasons import (
    Insufficient,
    InsufficientGpuMemory,
    InsufficientOnGpu,
    NoSuchGpu,
    Reason,
    Resource,
)


def gpu_usable(need: Resources, gpu: GpuState) -> bool:
    """Whether one GPU can carry its part of ``need``: ``gpu_milli`` unreserved (all of it for
    a whole GPU) and, when asked, that much memory free by measurement."""
    if need.gpu_memory_mb and gpu.memory_free_mb < need.gpu_memory_mb:
        return False
    return gpu.free_milli >= need.gpu_milli


def eligible_gpus(need: Resources, node: NodeState) -> tuple[int, ...]:
    """Indices of the node's GPUs that could each carry one part of ``need``."""
    return tuple(g.index for g in node.gpus if gpu_usable(need, g))


def gpu_shortfalls(need: Resources, node: NodeState, gpu_ids: Sequence[int] | None = None) -> list[Reason]:
    """Why the node's GPUs cannot carry ``need`` (see the module text for ``gpu_ids``).

    Without ``gpu_ids`` one reason at most: the GPUs asked for are short, or else too few of
    the fitting ones have the GPU memory asked for.
    """
    if gpu_ids is not None:
        return _named_gpu_shortfalls(need, node, gpu_ids)
    if not need.gpus:
        return []
    count = len(node.gpus)
    if need.is_share:
        best = max((g.free_milli for g in node.gpus), default=0)
        if best < need.gpu_milli:
            return [Insufficient(Resource.GPU_MILLI, need.gpu_milli, best, MILLI_PER_GPU * count)]
    else:
        whole = sum(1 for g in node.gpus if g.free_milli == MILLI_PER_GPU)
        if whole < need.gpus:
            return [Insufficient(Resource.GPUS, need.gpus, whole, count)]
    if need.gpu_memory_mb:
        usable = len(eligible_gpus(need, node))
        if usable < need.gpus:
            return [InsufficientGpuMemory(Resource.GPU_MEMORY, need.gpus, usable, count, need.gpu_memory_mb)]
    return []


def _named_gpu_shortfalls(need: Resources, node: NodeState, gpu_ids: Sequence[int]) -> list[Reason]:
    """Each named GPU that is missing or has too little unreserved for its part (a GPU named
    twice must hold both parts)."""
    by_index = {g.index: g for g in node.gpus}
    found: list[Reason] = []
    for index, times in sorted(Counter(gpu_ids).items()):
        gpu, asked = by_index.get(index), need.gpu_milli * times
        if gpu is None:
            found.append(NoSuchGpu(index))
        elif gpu.free_milli < asked:
            found.append(InsufficientOnGpu(Resource.GPU_MILLI, asked, gpu.free_milli, MILLI_PER_GPU, index))
    return found


def host_shortfalls(need: Resources, node: NodeState, *, measured: bool = True) -> list[Reason]:
    """Where the host's CPUs and memory are short of ``need`` (see the module text for
    ``measured``); nothing on an unmeasured host."""
    if node.unmeasured is not None:
        return []
    found: list[Reason] = []
    if node.cpu_free_milli < need.cpu_milli:
        found.append(Insufficient(Resource.CPU, need.cpu_milli, node.cpu_free_milli, node.cpu_milli))
    memory = node.memory_free_mb if measured else max(0, node.memory_mb - node.memory_allocated_mb)
    if memory < need.memory_mb:
        found.append(Insufficient(Resource.MEMORY, need.memory_mb, memory, node.memory_mb))
    return found


def shortfalls(
    need: Resources, node: NodeState, gpu_ids: Sequence[int] | None = None, *, measured: bool = True
) -> tuple[Reason, ...]:
    """Everything ``node`` lacks for ``need``, GPUs first; empty when it fits.

    A claim's fold asks ``shortfalls(claim, host, claim_gpu_ids, measured=False)``; the filter
    asks the GPU and host parts itself, since a host whose GPUs cannot be used at all says that
    instead of counting them.
    """
    return (*gpu_shortfalls(need, node, gpu_ids), *host_shortfalls(need, node, measured=measured))
