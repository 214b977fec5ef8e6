"""Feasibility: can a node take a request at all, and on which GPUs?

A filter that stops at the first problem sends an operator on a chase: fix the CPU request,
resubmit, learn about memory, resubmit again. So, as in the Kubernetes scheduler's
``noderesources`` plugins, :func:`reasons` reports *every* insufficient resource of a node at
once, each as ``"<resource> free <have> < <need>"``; an empty tuple means the node fits.

GPU sharing follows the milli-GPU accounting of :mod:`provider.scheduling.model`: a whole GPU
is usable only when nothing is reserved on it, a share needs enough unreserved milli-GPUs on
one single GPU. A request may also ask for measured free GPU memory, because a training job
that lands on a GPU whose memory another process already holds dies with an out-of-memory
error however little compute is reserved there.
"""

from __future__ import annotations

from provider.scheduling.model import MILLI_PER_GPU, GpuState, NodeState, PlacementRequest, Resources

MODEL_SEPARATOR = "|"
"""Separates alternatives in ``PlacementRequest.gpu_model``: ``"V100M16|V100M32"`` takes either."""


def model_matches(wanted: str | None, node_model: str) -> bool:
    """Whether a node's GPU model satisfies a request (``None`` or ``""`` accepts any model)."""
    if not wanted:
        return True
    return node_model in wanted.split(MODEL_SEPARATOR)


def gpu_usable(need: Resources, gpu: GpuState) -> bool:
    """Whether one GPU can carry its part of ``need``: ``gpu_milli`` unreserved (all of it for
    a whole GPU) and, when asked, that much memory free by measurement."""
    if need.gpu_memory_mb and gpu.memory_free_mb < need.gpu_memory_mb:
        return False
    return gpu.free_milli >= need.gpu_milli


def eligible_gpus(need: Resources, node: NodeState) -> tuple[int, ...]:
    """Indices of the node's GPUs that could each carry one part of ``need``."""
    return tuple(g.index for g in node.gpus if gpu_usable(need, g))


def gpu_sets(request: Resources, node: NodeState) -> tuple[tuple[int, ...], ...]:
    """The GPU index sets on ``node`` that can host the request, in index order.

    A share may go on any eligible GPU, so each is its own candidate and a policy picks the
    one that suits it. Whole GPUs are interchangeable for capacity (every eligible one is
    entirely free), so listing all combinations would only multiply work: the single
    candidate is the lowest eligible indices, and a policy that ranks GPUs by measurement
    (see :class:`~provider.scheduling.policies.LeastLoaded`) orders :func:`eligible_gpus`
    itself. A CPU-only request has one candidate, the empty set.
    """
    if request.gpus == 0:
        return ((),)
    eligible = eligible_gpus(request, node)
    if request.is_share:
        return tuple((i,) for i in eligible)
    if len(eligible) < request.gpus:
        return ()
    return (eligible[: request.gpus],)


def _gpu_reasons(request: PlacementRequest, node: NodeState) -> list[str]:
    """Why the node's GPUs cannot carry the request. A host without GPUs, one whose engine
    cannot hand them out and one whose GPUs are all taken read differently: only the last
    is worth waiting for."""
    if request.gpus == 0:
        return []
    if node.unmeasured is not None:
        return [f"GPUs unknown: {node.unmeasured}"]
    if not node.gpus:
        return ["has no GPUs"]
    if node.gpu_unusable is not None:
        return [node.gpu_unusable]
    if node.gpu_suspended is not None:
        return [node.gpu_suspended]
    if request.is_share:
        best = max((g.free_milli for g in node.gpus), default=0)
        if best < request.gpu_milli:
            return [f"gpu free {best}m < {request.gpu_milli}m on one GPU (of {len(node.gpus)} GPUs)"]
    else:
        whole = sum(1 for g in node.gpus if g.free_milli == MILLI_PER_GPU)
        if whole < request.gpus:
            return [f"gpu free {whole} of {len(node.gpus)} < {request.gpus}"]
    if request.gpu_memory_mb:
        usable = len(eligible_gpus(request, node))
        if usable < request.gpus:
            return [
                f"gpu memory free >= {request.gpu_memory_mb}MB on {usable} GPUs < {request.gpus}"
            ]
    return []


def reasons(request: PlacementRequest, node: NodeState) -> tuple[str, ...]:
    """Every reason why ``node`` cannot take ``request``; empty when it can.

    An unreachable node reports only that, since nothing else about it is known.
    """
    if node.unreachable is not None:
        return (f"unreachable: {node.unreachable}",)
    found: list[str] = [f"held: {node.held}"] if node.held is not None else []
    for key, want in sorted(request.labels.items()):
        have = node.labels.get(key)
        if have != want:
            found.append(f"label {key}={have if have is not None else '(unset)'} != {want}")
    if request.gpus and not model_matches(request.gpu_model, node.gpu_model):
        found.append(f"gpu model {node.gpu_model or '(none)'} != {request.gpu_model}")
    found.extend(_gpu_reasons(request, node))
    if node.unmeasured is not None:
        return tuple(found)  # capacity unknown: CPU and memory cannot be checked
    if node.cpu_free_milli < request.cpu_milli:
        found.append(f"cpu free {node.cpu_free_milli}m < {request.cpu_milli}m")
    if node.memory_free_mb < request.memory_mb:
        found.append(f"memory free {node.memory_free_mb}MB < {request.memory_mb}MB")
    return tuple(found)
