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
    ``short`` is set when its own queue cannot admit it now; ``first`` names the task ahead
    of it that is admitted and fits, so goes first; ``queue_state`` is its queue in words.
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
        if self.first is not None:
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
    fits: Callable[[Waiting], bool],
) -> LineAnswer:
    """Where ``me`` stands among ``waiting`` (the others in line; ``me`` may be among them) and
    whether it starts now: it is admitted, it ``fits`` a host, and no task ahead of it in the
    line is admitted and fits too (:func:`provider.scheduling.queues.may_start`)."""
    line = order([w for w in waiting if w.owner != me.owner] + [me], usage, queues)
    state = queue_state(me.queue, usage, queues)
    position = next(i for i, w in enumerate(line, 1) if w.owner == me.owner)
    for w in line:
        admitted = admit(w.queue, w.request, usage, queues)
        if w.owner == me.owner:
            short = admitted if isinstance(admitted, QueueShort) else None
            return LineAnswer(short is None and fits(w), me.queue, position, len(line), state, short)
        if isinstance(admitted, Admitted) and fits(w):
            return LineAnswer(False, me.queue, position, len(line), state, first=w)
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
