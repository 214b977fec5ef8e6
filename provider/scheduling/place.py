"""Placement: filter every node, score the feasible ones, choose one.

:func:`place` is the whole decision and a pure function of its arguments: the same request,
nodes, policy and context give the same :class:`Placement` (a random policy draws only from
``context.rng``). Inputs are never mutated. The result records every feasible node's score
and every infeasible node's reasons, so the choice can be audited after the fact; when no
node fits, :class:`NoFit` names each node and everything it lacks.

A caller that places many requests against a slowly changing pool (the trace simulator, a
reservation loop) can pass a :class:`PlacementMemo`: verdicts are remembered per node
*snapshot* and request shape, and since a placement changes one node, only that node is
judged again next time. Snapshots are immutable, so a remembered verdict cannot go stale.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from provider.scheduling.filters import reasons
from provider.scheduling.model import NodeState, NoFit, Placement, PlacementRequest
from provider.scheduling.policies import Choice, PlacementContext, Policy

_RequestKey = Hashable


@dataclass(frozen=True, slots=True)
class _Verdict:
    reasons: tuple[str, ...]
    choice: Choice | None


def request_key(request: PlacementRequest) -> _RequestKey:
    """A hashable key equal for requests that every filter and policy treat alike."""
    return (
        request.gpus,
        request.gpu_milli,
        request.gpu_memory_mb,
        request.cpu_milli,
        request.memory_mb,
        request.gpu_model,
        tuple(sorted(request.labels.items())),
    )


class PlacementMemo:
    """Verdicts remembered per node snapshot and request shape, for one policy and context.

    Keyed by node name and checked by identity (``is``) against the snapshot passed next
    time, so replacing a node with its updated snapshot forgets that node's verdicts only.
    """

    __slots__ = ("policy", "context", "_nodes")

    def __init__(self, policy: Policy, context: PlacementContext) -> None:
        self.policy = policy
        self.context = context
        self._nodes: dict[str, tuple[NodeState, dict[_RequestKey, _Verdict]]] = {}

    def verdicts(self, node: NodeState) -> dict[_RequestKey, _Verdict]:
        """The remembered verdicts for exactly this snapshot of the node."""
        entry = self._nodes.get(node.name)
        if entry is None or entry[0] is not node:
            entry = (node, {})
            self._nodes[node.name] = entry
        return entry[1]


def _score(
    request: PlacementRequest, node: NodeState, policy: Policy, context: PlacementContext
) -> Choice:
    choice = policy(request, node, context)
    if request.gpus == 0 and node.gpus and context.cpu_task_gpu_node_factor != 1.0:
        return Choice(choice.score * context.cpu_task_gpu_node_factor, choice.gpu_indices)
    return choice


def place(
    request: PlacementRequest,
    nodes: Sequence[NodeState],
    policy: Policy,
    context: PlacementContext | None = None,
    memo: PlacementMemo | None = None,
) -> Placement:
    """Choose the node and GPUs for ``request`` among ``nodes`` by ``policy``.

    The highest score wins; ties go to the node whose name sorts first (then the lower GPU
    indices), so the same inputs always give the same answer. Raises :class:`NoFit` listing
    every node's reasons when no node is feasible, ``ValueError`` on duplicate node names or
    a memo made for another policy or context.
    """
    if context is None:
        context = memo.context if memo is not None else PlacementContext()
    if memo is not None and (memo.policy is not policy or memo.context is not context):
        raise ValueError("this PlacementMemo was made for another policy or context")
    key = request_key(request)
    choices: dict[str, Choice] = {}
    rejections: dict[str, tuple[str, ...]] = {}
    for node in nodes:
        if node.name in choices or node.name in rejections:
            raise ValueError(f"duplicate node name {node.name!r}")
        if memo is None:
            found = reasons(request, node)
            choice = None
        else:
            known = memo.verdicts(node)
            verdict = known.get(key)
            if verdict is None:
                found = reasons(request, node)
                keep = None if found or not policy.cacheable else _score(request, node, policy, context)
                verdict = known[key] = _Verdict(found, keep)
            found, choice = verdict.reasons, verdict.choice
        if found:
            rejections[node.name] = found
        else:
            choices[node.name] = choice or _score(request, node, policy, context)
    if not choices:
        raise NoFit(request, rejections)
    name, best = min(choices.items(), key=lambda kv: (-kv[1].score, kv[0], kv[1].gpu_indices))
    return Placement(
        node=name,
        gpu_indices=best.gpu_indices,
        policy=policy.name,
        scores={n: c.score for n, c in choices.items()},
        rejections=rejections,
    )
