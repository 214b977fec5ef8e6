"""One task's place in the line of a pool with queues: may it start, and if not, why, in words.

:mod:`provider.scheduling.queues` has the rules (admission, the order of the line, who starts
first); this module applies them to the one task that asks, as the reservation layer and the
waiting trigger need it: a :class:`LineAnswer` that says whether the task starts now, its
position in the line, and what it waits for ("queue vision: 8 of 8 GPUs in use; nlp borrows
3; position 2 of 5"), for the task log and the placement record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from provider.scheduling.accounting import apply
from provider.scheduling.filters import eligible_gpus, reasons
from provider.scheduling.model import NodeState, PlacementRequest
from provider.scheduling.waiting import Hold, Waiter, apply_holds
from provider.scheduling.queues import (
    RESOURCES,
    Admitted,
    Amounts,
    QueueShort,
    QueueSpec,
    Waiting,
    admit,
    amount_text,
    order,
    unit_text,
)


@dataclass(frozen=True, slots=True)
class LineAnswer:
    """Whether a task starts now, and where it stands.

    ``position`` counts from 1 in a line of ``length`` waiting tasks (itself included).
    ``short`` is set when its own queue cannot admit it now; ``first`` names the first task
    ahead of it that starts before it and takes what it would need; ``queue_state`` is its
    queue in words.
    """

    start: bool
    queue: str
    position: int
    length: int
    queue_state: str
    short: QueueShort | None = None
    first: Waiting | None = None

    def __str__(self) -> str:
        said = f"{self.queue_state}; position {self.position} of {self.length}"
        if self.short is not None:
            return f"{said}; waits for its queue: {self.short}"
        if self.first is not None and not self.start:
            return f"{said}; {self.first.task or self.first.owner} of queue {self.first.queue} goes first"
        return said

    def as_record(self) -> dict[str, object]:
        """The ``queue`` part of the placement record (XCom ``placement``)."""
        return {"name": self.queue, "position": self.position, "of": self.length, "state": self.queue_state,
                "waits_for": None if self.start else str(self)}


def place_in_line(
    me: Waiting,
    waiting: Sequence[Waiting],
    usage: Mapping[str, Amounts],
    queues: Mapping[str, QueueSpec],
    take: Callable[[Waiting], bool],
) -> LineAnswer:
    """Where ``me`` stands among ``waiting`` (the others in line; ``me`` may be among them) and
    whether it starts now.

    The line (:func:`~provider.scheduling.queues.order`) is walked from its head as a scheduler
    would start it in one pass: each task that its queue admits and that ``take`` finds room for
    starts, and what it takes counts for those behind it (``take`` answers whether a task fits
    on what the tasks before it left, and if so keeps its share off the hosts). ``me`` starts if
    it is still admitted and fits when its turn comes. This is
    :func:`~provider.scheduling.queues.may_start` applied again after every start, at once: so
    several waiters can start on one reading of the pool, each knowing it goes without taking
    the room of one ahead of it.
    """
    line = order([w for w in waiting if w.owner != me.owner] + [me], usage, queues)
    state = queue_state(me.queue, usage, queues)
    position = next(i for i, w in enumerate(line, 1) if w.owner == me.owner)
    taken = dict(usage)
    first: Waiting | None = None
    for w in line:
        admitted = admit(w.queue, w.request, taken, queues)
        if w.owner == me.owner:
            if isinstance(admitted, QueueShort):
                return LineAnswer(False, me.queue, position, len(line), state, short=admitted, first=first)
            start = take(w)
            return LineAnswer(start, me.queue, position, len(line), state, first=None if start else first)
        if isinstance(admitted, Admitted) and take(w):
            taken[w.queue] = taken.get(w.queue, Amounts()) + w.request
            first = first or w
    raise AssertionError("the line lost the task it was built with")


def queue_state(queue: str, usage: Mapping[str, Amounts], queues: Mapping[str, QueueSpec]) -> str:
    """``queue``'s use of its main resource (GPUs when it has a GPU quota) against its quota, and
    which queues use more than their own quota of it (they borrow)."""
    spec = queues[queue]
    resource = next((r for r in RESOURCES if spec.governs(r)), None)
    if resource is None:
        return f"queue {queue}: no quota"
    index = RESOURCES.index(resource)
    used = usage.get(queue, Amounts()).values()[index]
    said = f"queue {queue}: {amount_text(resource, used)} of {amount_text(resource, spec.quota[resource])}{unit_text(resource)} in use"
    borrowers = []
    for name, other in sorted(queues.items()):
        over = usage.get(name, Amounts()).values()[index] - other.quota.get(resource, 0)
        if name != queue and other.governs(resource) and over > 0:
            borrowers.append(f"{name} borrows {amount_text(resource, over)}")
    return said + (f"; {', '.join(borrowers)}" if borrowers else "")


def room_taker(nodes: Sequence[NodeState], holds: Sequence[Hold] = ()) -> Callable[[Waiting, PlacementRequest], bool]:
    """A ``take`` for :func:`place_in_line` on ``nodes`` (without holds applied): whether a
    waiter's request fits on what the requests taken before it left, on the hosts as that waiter
    sees them (``holds`` of earlier waiters apply to it, its own does not), and if so, its share
    taken off the first host that fits it (on the GPUs the filter offers first). Which host does
    not matter to the answer for the waiters behind it as long as each one's room is counted
    once; the task itself is placed by its policy when it claims."""
    left = list(nodes)

    def take(waiter: Waiting, request: PlacementRequest) -> bool:
        seen = apply_holds(left, holds, Waiter(waiter.owner, waiter.since))
        for i, node in enumerate(seen):
            if not reasons(request, node):
                gpus = eligible_gpus(request, node)[: request.gpus]
                left[i] = apply(left[i], request.resources, gpus)
                return True
        return False

    return take
