"""Placement for a trace replay: :func:`provider.scheduling.place`, remembering verdicts.

:func:`replay` places a trace's arrivals one by one through a :class:`PlacementMemo` and folds
each placement into its node through :func:`provider.scheduling.apply`, as production folds a
claim. It places tens of thousands of requests against a pool where each placement changes
one node, so judging every node afresh each time is mostly repeated work. :class:`PlacementMemo`
remembers verdicts per node *snapshot* and request shape, and since a placement changes one
node, only that node is judged again next time. Snapshots are immutable, so a remembered
verdict cannot go stale. For a policy whose score depends on the snapshot alone
(``cacheable``), the memo keeps each request shape's verdicts on the whole node list it saw
last, so a request of that shape only visits the nodes replaced since (found by identity, at
C speed), not every node.

It decides with production's own steps (the filter :func:`~provider.scheduling.filters.reasons`,
:func:`~provider.scheduling.place.scored` or a policy's ``draw`` then
:func:`~provider.scheduling.place.adjusted`, and :func:`~provider.scheduling.place.choose`),
so a replay measures what the operator runs; only the remembering is the replay's own.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import is_not

from provider.scheduling.no_fit import NoFit
from provider.scheduling.accounting import apply
from provider.scheduling.filters import gpu_sets, reasons
from provider.scheduling.model import NodeState, PlacementRequest
from provider.scheduling.place import Placement
from provider.scheduling.place import adjusted, choose, scored
from provider.scheduling.policies import Choice, PlacementContext, Policy
from provider.scheduling.reasons import Reason

_RequestKey = Hashable

Draw = Callable[[tuple[tuple[int, ...], ...], PlacementContext], Choice]


@dataclass(frozen=True, slots=True)
class _Verdict:
    """A node snapshot's reasons against a request shape, and its GPU candidates for a policy
    that draws (a drawing policy's score is new at every placement)."""

    reasons: tuple[Reason, ...]
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
    rejections: dict[str, tuple[Reason, ...]] = field(default_factory=dict)


class PlacementMemo:
    """Verdicts remembered per node snapshot and request shape, for one policy and context.

    Keyed by node name and checked by identity (``is``) against the snapshot passed next
    time, so replacing a node with its updated snapshot forgets that node's verdicts only.
    Request shapes are numbered once, so the per-node lookup hashes a small integer. Equal
    reasons are kept once (:meth:`_rejected`): a replay holds hundreds of thousands of them,
    a few tens of thousands distinct, and as objects the garbage collector tracks, every copy
    would lengthen its full collections.
    """

    __slots__ = ("policy", "context", "_nodes", "_shapes", "_views", "_reasons")

    def __init__(self, policy: Policy, context: PlacementContext) -> None:
        self.policy = policy
        self.context = context
        self._nodes: dict[str, tuple[NodeState, dict[int, _Verdict]]] = {}
        self._shapes: dict[_RequestKey, int] = {}
        self._views: dict[int, _ShapeView] = {}
        self._reasons: dict[tuple[Reason, ...], tuple[Reason, ...]] = {}

    def shape(self, request: PlacementRequest) -> int:
        """The number of this request's shape (see :func:`request_key`)."""
        return self._shapes.setdefault(request_key(request), len(self._shapes))

    def _rejected(self, request: PlacementRequest, node: NodeState) -> tuple[Reason, ...]:
        """The filter's reasons, the copy kept already when equal ones were seen before."""
        found = reasons(request, node)
        return self._reasons.setdefault(found, found) if found else found

    def place(self, request: PlacementRequest, nodes: Sequence[NodeState]) -> Placement:
        """What ``provider.scheduling.place(request, nodes, self.policy, self.context)`` gives."""
        choices: dict[str, Choice] = {}
        rejections: dict[str, tuple[Reason, ...]] = {}
        if self.policy.cacheable:
            self._judge_changed(request, nodes, choices, rejections)
        else:
            self._judge_all(request, nodes, choices, rejections)
        return choose(request, nodes, self.policy, choices, rejections)

    def _judge_all(
        self,
        request: PlacementRequest,
        nodes: Sequence[NodeState],
        choices: dict[str, Choice],
        rejections: dict[str, tuple[Reason, ...]],
    ) -> None:
        """Judge every node, from the verdicts remembered for its snapshot where there are some."""
        policy, context, shape = self.policy, self.context, self.shape(request)
        draw: Draw | None = getattr(policy, "draw", None)
        remembered = self._nodes
        for node in nodes:
            entry = remembered.get(node.name)
            if entry is None or entry[0] is not node:
                entry = remembered[node.name] = (node, {})
            known = entry[1]
            verdict = known.get(shape)
            if verdict is None:
                found = self._rejected(request, node)
                sets = gpu_sets(request, node) if not found and draw is not None else ()
                verdict = known[shape] = _Verdict(found, sets)
            if verdict.reasons:
                rejections[node.name] = verdict.reasons
            elif draw is not None:
                choices[node.name] = adjusted(request, node, draw(verdict.sets, context), context)
            else:
                choices[node.name] = scored(request, node, policy, context)

    def _judge_changed(
        self,
        request: PlacementRequest,
        nodes: Sequence[NodeState],
        choices: dict[str, Choice],
        rejections: dict[str, tuple[Reason, ...]],
    ) -> None:
        """For a cacheable policy: judge only the nodes replaced since this shape was last
        placed, then hand out every node's verdict."""
        shape = self.shape(request)
        view = self._views.setdefault(shape, _ShapeView())
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
            found = self._rejected(request, node)
            if found:
                view.rejections[node.name] = found
            else:
                view.choices[node.name] = scored(request, node, self.policy, self.context)
        view.nodes = list(nodes)
        if len(view.choices) + len(view.rejections) != len(nodes):  # repeated names: never trust this view
            del self._views[shape]
        choices.update(view.choices)
        rejections.update(view.rejections)


def replay(
    nodes: list[NodeState], sequence: Sequence[PlacementRequest], policy: Policy, context: PlacementContext
) -> Iterator[tuple[PlacementRequest, bool]]:
    """Place each request of ``sequence`` in turn, updating ``nodes`` in place; yields each
    request and whether it was placed. Tasks never leave."""
    index = {n.name: i for i, n in enumerate(nodes)}
    memo = PlacementMemo(policy, context)
    for request in sequence:
        try:
            chosen = memo.place(request, nodes)
        except NoFit:
            yield request, False
            continue
        i = index[chosen.node]
        nodes[i] = apply(nodes[i], request, chosen.gpu_indices)
        yield request, True
