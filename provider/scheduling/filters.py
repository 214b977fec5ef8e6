"""Feasibility: can a node take a request at all, and on which GPUs?

A filter that stops at the first problem sends an operator on a chase: fix the CPU request,
resubmit, learn about memory, resubmit again. So, as in the Kubernetes scheduler's
``noderesources`` plugins, :func:`reasons` reports *every* reason a node cannot take a request
at once, each a typed :class:`~provider.scheduling.reasons.Reason` (a shortage is an
:class:`~provider.scheduling.reasons.Insufficient` with what was requested, what is free and
the capacity); an empty tuple means the node fits. Shortages come from the one capacity check,
:mod:`provider.scheduling.capacity`, which the fold of a host's claims uses as well.

GPU sharing follows the milli-GPU accounting of :mod:`provider.scheduling.model`: a whole GPU
is usable only when nothing is reserved on it, a share needs enough unreserved milli-GPUs on
one single GPU. A request may also ask for measured free GPU memory, because a training job
that lands on a GPU whose memory another process already holds dies with an out-of-memory
error however little compute is reserved there.
"""

from __future__ import annotations

from provider.scheduling.capacity import eligible_gpus, gpu_shortfalls, gpu_usable, host_shortfalls
from provider.scheduling.model import NodeState, PlacementRequest, Resources
from provider.scheduling.reasons import (
    GpusUnknown,
    GpuSuspended,
    GpuUnusable,
    Held,
    LabelMismatch,
    ModelMismatch,
    NoGpus,
    Reason,
    Unreachable,
)

__all__ = ["MODEL_SEPARATOR", "eligible_gpus", "gpu_sets", "gpu_usable", "model_matches", "reasons"]

MODEL_SEPARATOR = "|"
"""Separates alternatives in ``PlacementRequest.gpu_model``: ``"V100M16|V100M32"`` takes either."""


def model_matches(wanted: str | None, node_model: str) -> bool:
    """Whether a node's GPU model satisfies a request (``None`` or ``""`` accepts any model)."""
    if not wanted:
        return True
    return node_model in wanted.split(MODEL_SEPARATOR)


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


def _gpu_condition(node: NodeState) -> Reason | None:
    """Why the node's GPUs cannot be used at all, if so. A host without GPUs, one whose engine
    cannot hand them out and one whose GPUs are all taken read differently: only the last
    (a shortage, counted by the capacity check) and a suspension are worth waiting for."""
    if node.unmeasured is not None:
        return GpusUnknown(node.unmeasured)
    if not node.gpus:
        return NoGpus()
    if node.gpu_unusable is not None:
        return GpuUnusable(node.gpu_unusable)
    if node.gpu_suspended is not None:
        return GpuSuspended(node.gpu_suspended)
    return None


def reasons(request: PlacementRequest, node: NodeState) -> tuple[Reason, ...]:
    """Every reason why ``node`` cannot take ``request``; empty when it can.

    An unreachable node reports only that, since nothing else about it is known. A node whose
    capacity is unknown (no agent) takes CPU and memory on trust.
    """
    if node.unreachable is not None:
        return (Unreachable(node.unreachable),)
    found: list[Reason] = [Held(node.held)] if node.held is not None else []
    if request.labels:  # the filter runs for every node and request: skip what is not asked
        for key, want in sorted(request.labels.items()):
            have = node.labels.get(key)
            if have != want:
                found.append(LabelMismatch(key, have, want))
    if request.gpus:
        if request.gpu_model and not model_matches(request.gpu_model, node.gpu_model):
            found.append(ModelMismatch(node.gpu_model, request.gpu_model))
        condition = _gpu_condition(node)
        if condition is not None:
            found.append(condition)
        else:
            found.extend(gpu_shortfalls(request, node))
    found.extend(host_shortfalls(request, node))
    return tuple(found)
