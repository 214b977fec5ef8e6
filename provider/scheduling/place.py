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
For a policy whose score depends on the snapshot alone (``cacheable``), the memo keeps each
request shape's verdicts on the whole node list it saw last, so a request of that shape
only visits the nodes replaced since (found by identity, at C speed), not every node.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import is_not

from provider.errors import NoFit
from provider.scheduling.filters import gpu_sets, reasons
from provider.scheduling.model import NodeState, Placement, PlacementRequest
from provider.scheduling.policies import Choice, PlacementContext, Policy

_RequestKey = Hashable


@dataclass(frozen=True, slots=True)
class _Verdict:
    """A node snapshot's reasons against a request shape, and its GPU candidates for a policy
    that draws (a drawing policy's score is new at every placement)."""

    reasons: tuple[str, ...]
    sets: tuple[tuple[int, ...], ...] = ()


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


@dataclass(slots=True)
class _ShapeView:
    """One request shape's verdicts on the node list it was placed against last."""

    nodes: list[NodeState] = field(default_factory=list)
    choices: dict[str, Choice] = field(default_factory=dict)
    rejections: dict[str, tuple[str, ...]] = field(default_factory=dict)


class PlacementMemo:
    """Verdicts remembered per node snapshot and request shape, for one policy and context.

    Keyed by node name and checked by identity (``is``) against the snapshot passed next
    time, so replacing a node with its updated snapshot forgets that node's verdicts only.
    Request shapes are numbered once, so the per-node lookup hashes a small integer.
    """

    __slots__ = ("policy", "context", "_nodes", "_shapes", "_views")

    def __init__(self, policy: Policy, context: PlacementContext) -> None:
        self.policy = policy
        self.context = context
        self._nodes: dict[str, tuple[NodeState, dict[int, _Verdict]]] = {}
        self._shapes: dict[_RequestKey, int] = {}
        self._views: dict[int, _ShapeView] = {}

    def shape(self, request: PlacementRequest) -> int:
        """The number of this request's shape (see :func:`request_key`)."""
        return self._shapes.setdefault(request_key(request), len(self._shapes))


Draw = Callable[[tuple[tuple[int, ...], ...], PlacementContext], Choice]


def _score(request: PlacementRequest, node: NodeState, policy: Policy, context: PlacementContext) -> Choice:
    return _adjusted(request, node, policy(request, node, context), context)


UNMEASURED_SCORE = -1e9
"""Score of a node whose capacity is unknown (no agent): below every measured node, so it is
chosen only when no measured node fits."""


def _adjusted(request: PlacementRequest, node: NodeState, choice: Choice, context: PlacementContext) -> Choice:
    """Steer CPU-only tasks off GPU nodes by the context's factor, charge the image pull a node
    would need (the locality term), and rank unmeasured nodes last."""
    if node.unmeasured is not None:
        return Choice(UNMEASURED_SCORE, choice.gpu_indices)
    score = choice.score
    if request.gpus == 0 and node.gpus:
        score *= context.cpu_task_gpu_node_factor
    if node.pull_bytes:
        score -= context.pull_penalty_per_gb * node.pull_bytes / 1e9
    return choice if score == choice.score else Choice(score, choice.gpu_indices)


def _judge_all(
    request: PlacementRequest,
    nodes: Sequence[NodeState],
    memo: PlacementMemo,
    choices: dict[str, Choice],
    rejections: dict[str, tuple[str, ...]],
) -> None:
    """The memoised filter-and-score loop, the hot path of a trace replay."""
    policy, context, shape = memo.policy, memo.context, memo.shape(request)
    if policy.cacheable:
        _judge_changed(request, nodes, memo, shape, choices, rejections)
        return
    draw: Draw | None = getattr(policy, "draw", None)
    remembered = memo._nodes
    for node in nodes:
        entry = remembered.get(node.name)
        if entry is None or entry[0] is not node:
            entry = remembered[node.name] = (node, {})
        known = entry[1]
        verdict = known.get(shape)
        if verdict is None:
            found = reasons(request, node)
            sets = gpu_sets(request, node) if not found and draw is not None else ()
            verdict = known[shape] = _Verdict(found, sets)
        if verdict.reasons:
            rejections[node.name] = verdict.reasons
        elif draw is not None:
            choices[node.name] = _adjusted(request, node, draw(verdict.sets, context), context)
        else:
            choices[node.name] = _score(request, node, policy, context)


def _judge_changed(
    request: PlacementRequest,
    nodes: Sequence[NodeState],
    memo: PlacementMemo,
    shape: int,
    choices: dict[str, Choice],
    rejections: dict[str, tuple[str, ...]],
) -> None:
    """:func:`_judge_all` for a cacheable policy: judge only the nodes replaced since this
    shape was last placed, then hand out every node's verdict."""
    view = memo._views.setdefault(shape, _ShapeView())
    if len(view.nodes) == len(nodes):
        changed = list(compress(range(len(nodes)), map(is_not, nodes, view.nodes)))
    else:
        view.choices.clear()
        view.rejections.clear()
        view.nodes, changed = [], list(range(len(nodes)))
    for i in changed if view.nodes else ():  # all forgotten first: a name may move to another place
        view.choices.pop(view.nodes[i].name, None)
        view.rejections.pop(view.nodes[i].name, None)
    for i in changed:
        node = nodes[i]
        found = reasons(request, node)
        if found:
            view.rejections[node.name] = found
        else:
            view.choices[node.name] = _score(request, node, memo.policy, memo.context)
    view.nodes = list(nodes)
    if len(view.choices) + len(view.rejections) != len(nodes):  # repeated names: never trust this view
        del memo._views[shape]
    choices.update(view.choices)
    rejections.update(view.rejections)


def place(
    request: PlacementRequest,
    nodes: Sequence[NodeState],
    policy: Policy,
    context: PlacementContext | None = None,
    memo: PlacementMemo | None = None,
) -> Placement:
    """Choose the node and GPUs for ``request`` among ``nodes`` by ``policy``.

    The highest score wins; ties go to the node whose name sorts first (a policy breaks
    ties between GPUs of one node by index), so the same inputs always give the same answer. Raises :class:`NoFit` listing
    every node's reasons when no node is feasible, ``ValueError`` on duplicate node names or
    a memo made for another policy or context.
    """
    if context is None:
        context = memo.context if memo is not None else PlacementContext()
    if memo is not None and (memo.policy is not policy or memo.context is not context):
        raise ValueError("this PlacementMemo was made for another policy or context")
    choices: dict[str, Choice] = {}
    rejections: dict[str, tuple[str, ...]] = {}
    if memo is None:
        for node in nodes:
            found = reasons(request, node)
            if found:
                rejections[node.name] = found
            else:
                choices[node.name] = _score(request, node, policy, context)
    else:
        _judge_all(request, nodes, memo, choices, rejections)
    if len(choices) + len(rejections) != len(nodes):
        raise ValueError(f"duplicate node names among {sorted(n.name for n in nodes)}")
    if not choices:
        raise NoFit(request, rejections)
    top = max(c.score for c in choices.values())
    name = min(n for n, c in choices.items() if c.score == top)
    best = choices[name]
    return Placement(
        node=name,
        gpu_indices=best.gpu_indices,
        policy=policy.name,
        scores={n: c.score for n, c in choices.items()},
        rejections=rejections,
    )
