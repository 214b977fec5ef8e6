"""The order in which waiting requests get GPUs: first come, first served, with bounded overtaking.

A request that does not fit may wait (the sensor, or ``GpuDockerOperator(wait_for_resources=True)``).
Whoever finds room first takes it, so small requests overtake a large one that needs a whole
host's GPUs at once. Left alone, a steady stream of small jobs keeps some GPU busy at every
instant and the large job starves. The rule that bounds this:

* A waiting request records ``since``, when it first found no room.
* Once it has waited ``hold_after_s``, it is **due**: it chooses one host that could take it
  when empty (:func:`hold_host`) and puts a *hold* on it.
* A held host takes no request that started waiting later than the hold's owner, nor any
  request that does not wait at all. Running jobs finish, nothing new starts there, and the
  held host drains until the oldest due request fits; it then starts and lifts its hold.
  Other hosts keep serving everyone.

So a request is overtaken only for ``hold_after_s`` plus the time the running jobs on one
host take to finish; among due requests the oldest goes first. A request that no host could
take even empty (:func:`never_fits`) is refused at once instead of waiting forever.

Everything here is a function of plain values; the hooks keep holds on the hosts and read
the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from provider.scheduling.filters import eligible_gpus, reasons
from provider.scheduling.model import NodeState, PlacementRequest
from provider.scheduling.reasons import Reason


@dataclass(frozen=True, slots=True)
class Waiter:
    """A waiting request's place in line: its owner token and when it started waiting."""

    owner: str
    since: float


@dataclass(frozen=True, slots=True)
class Hold:
    """A host held back for a due waiter, as read from that host."""

    host: str
    owner: str
    since: float
    task: str
    """Who holds it, for messages: ``dag_id.task_id run_id``."""


def is_due(waiter: Waiter, now: float, hold_after_s: float | None) -> bool:
    """Whether ``waiter`` has waited long enough to hold a host (never when ``hold_after_s`` is None)."""
    return hold_after_s is not None and now - waiter.since >= hold_after_s


def apply_holds(nodes: Sequence[NodeState], holds: Iterable[Hold], waiter: Waiter | None) -> list[NodeState]:
    """``nodes`` with ``held`` set where a hold of an earlier waiter than ``waiter`` lies.

    ``waiter`` None is a request that does not wait; every foreign hold applies to it. A
    waiter's own hold never applies to itself.
    """
    blocking: dict[str, Hold] = {}
    for h in holds:
        if waiter is not None and (h.owner == waiter.owner or h.since >= waiter.since):
            continue
        first = blocking.get(h.host)
        if first is None or (h.since, h.owner) < (first.since, first.owner):
            blocking[h.host] = h
    if not blocking:
        return list(nodes)
    return [
        replace(n, held=f"held for {blocking[n.name].task}, waiting first") if n.name in blocking else n
        for n in nodes
    ]


def emptied(node: NodeState) -> NodeState:
    """``node`` with nothing running or reserved, nor suspended: what it offers once it has drained."""
    gpus = tuple(replace(g, allocated_milli=0, memory_used_mb=0, utilization_pct=0.0) for g in node.gpus)
    return replace(
        node, gpus=gpus, cpu_allocated_milli=0, memory_allocated_mb=0, memory_available_mb=None,
        cpu_utilization_pct=0.0, cpu_unmeasured_milli=0, held=None, gpu_suspended=None,
    )


def never_fits(request: PlacementRequest, nodes: Sequence[NodeState]) -> Mapping[str, tuple[Reason, ...]] | None:
    """Why no host could take ``request`` even with nothing else on it; None if one could.

    Only a verdict on the whole pool is final: while any host is unreachable it might be the
    one that fits, so the answer is None.
    """
    if any(n.unreachable is not None for n in nodes):
        return None
    why = {n.name: reasons(request, emptied(n)) for n in nodes}
    if not nodes or any(not r for r in why.values()):
        return None
    return why


def hold_host(request: PlacementRequest, nodes: Sequence[NodeState]) -> str | None:
    """The host a due waiter should hold: one that fits the request once drained, and of
    those the one with the most usable GPUs now (the least to wait for); ties by name."""
    candidates = [n for n in nodes if n.unreachable is None and not reasons(request, emptied(n))]
    if not candidates:
        return None
    best = min(candidates, key=lambda n: (-len(eligible_gpus(request, n)), n.name))
    return best.name
