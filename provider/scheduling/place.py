"""Placement: filter every node, score the feasible ones, choose one.

:func:`place` is the whole decision and a pure function of its arguments: the same request,
nodes, policy and context give the same :class:`Placement` (a random policy draws only from
``context.rng``). Inputs are never mutated. The result records every feasible node's score
and every infeasible node's reasons, so the choice can be audited after the fact; when no
node fits, :class:`NoFit` names each node and everything it lacks.

Its steps are public for a caller that judges nodes its own way but must decide as
production does: the trace replay remembers verdicts per node snapshot
(``bench/replay_memo.py``) and still filters with :func:`~provider.scheduling.filters.reasons`,
scores with :func:`scored` (or draws and then :func:`adjusted`) and decides with
:func:`choose`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from provider.scheduling.no_fit import NoFit
from provider.scheduling.filters import reasons
from provider.scheduling.model import NodeState, PlacementRequest
from provider.scheduling.policies import Choice, PlacementContext, Policy
from provider.scheduling.reasons import Reason

UNMEASURED_SCORE = -1e9
"""Score of a node whose capacity is unknown (no agent): below every measured node, so it is
chosen only when no measured node fits."""


@dataclass(frozen=True, slots=True)
class Placement:
    """The decision: which node, which GPU indices, and why.

    ``scores`` holds every feasible node's score (higher is better) and ``rejections`` every
    infeasible node's reasons (typed; ``str()`` words each), so the choice can be audited from
    the task's XCom.
    """

    node: str
    gpu_indices: tuple[int, ...]
    policy: str
    scores: Mapping[str, float]
    rejections: Mapping[str, tuple[Reason, ...]]



def adjusted(request: PlacementRequest, node: NodeState, choice: Choice, context: PlacementContext) -> Choice:
    """A policy's choice with what every policy shares: steer CPU-only tasks off GPU nodes by the
    context's factor, charge the image pull a node would need (the locality term), and rank
    unmeasured nodes last."""
    if node.unmeasured is not None:
        return Choice(UNMEASURED_SCORE, choice.gpu_indices)
    score = choice.score
    if request.gpus == 0 and node.gpus:
        score *= context.cpu_task_gpu_node_factor
    if node.pull_bytes:
        score -= context.pull_penalty_per_gb * node.pull_bytes / 1e9
    return choice if score == choice.score else Choice(score, choice.gpu_indices)


def scored(request: PlacementRequest, node: NodeState, policy: Policy, context: PlacementContext) -> Choice:
    """The final score and GPUs of a node that passed the filter."""
    return adjusted(request, node, policy(request, node, context), context)


def choose(
    request: PlacementRequest,
    nodes: Sequence[NodeState],
    policy: Policy,
    choices: Mapping[str, Choice],
    rejections: Mapping[str, tuple[Reason, ...]],
) -> Placement:
    """The decision among judged nodes: the highest score wins, ties go to the node whose name
    sorts first. Raises :class:`NoFit` when none is feasible, ``ValueError`` when the verdicts
    do not name each of ``nodes`` once (duplicate node names)."""
    if len(choices) + len(rejections) != len(nodes):
        raise ValueError(f"duplicate node names among {sorted(n.name for n in nodes)}")
    if not choices:
        raise NoFit(request, rejections)
    scores = {n: c.score for n, c in choices.items()}
    top = max(scores.values())
    name = min(n for n, s in scores.items() if s == top)
    return Placement(
        node=name,
        gpu_indices=choices[name].gpu_indices,
        policy=policy.name,
        scores=scores,
        rejections=rejections,
    )


def place(
    request: PlacementRequest,
    nodes: Sequence[NodeState],
    policy: Policy,
    context: PlacementContext | None = None,
) -> Placement:
    """Choose the node and GPUs for ``request`` among ``nodes`` by ``policy``.

    The highest score wins; ties go to the node whose name sorts first (a policy breaks ties
    between GPUs of one node by index), so the same inputs always give the same answer. Raises
    :class:`NoFit` listing every node's reasons when no node is feasible, ``ValueError`` on
    duplicate node names.
    """
    if context is None:
        context = PlacementContext()
    choices: dict[str, Choice] = {}
    rejections: dict[str, tuple[Reason, ...]] = {}
    for node in nodes:
        found = reasons(request, node)
        if found:
            rejections[node.name] = found
        else:
            choices[node.name] = scored(request, node, policy, context)
    return choose(request, nodes, policy, choices, rejections)
