"""Is there room for a request on the pool? The one decision, and its one wording.

The operator (place now, or wait), the sensor (poke) and the trigger (poll) all ask
:func:`room` and say what it answers in the same words (:class:`~provider.scheduling.no_fit.NoFit`'s
message, the advice and the deadline text here): the request fits (and where), it must wait
(every host's reasons, and who holds each busy host), or it never fits (no host could take it
even empty, so waiting is pointless).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from provider.scheduling.no_fit import NoFit
from provider.reservations.view import PoolView
from provider.scheduling.model import PlacementRequest
from provider.scheduling.place import Placement
from provider.scheduling.place import place
from provider.scheduling.policies import PlacementContext, Policy
from provider.scheduling.reasons import Unreachable
from provider.scheduling.waiting import never_fits


class Verdict(enum.Enum):
    FITS = "fits"
    WAIT = "wait"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class Room:
    """The answer: a placement when it fits, otherwise the no-fit naming every host."""

    verdict: Verdict
    placement: Placement | None = None
    no_fit: NoFit | None = None


def room(request: PlacementRequest, view: PoolView, policy: Policy, context: PlacementContext) -> Room:
    """Whether ``request`` fits on ``view`` now, must wait, or never fits."""
    try:
        return Room(Verdict.FITS, placement=place(request, view.nodes, policy, context))
    except NoFit as exc:
        holders = view.holders()
        never = never_fits(request, view.nodes)
        if never is not None:
            return Room(Verdict.NEVER, no_fit=NoFit(request, never, holders, never=True))
        return Room(Verdict.WAIT, no_fit=NoFit(request, exc.rejections, holders))


def advice(no_fit: NoFit) -> str:
    """What a task that does not wait can do about a no-fit: fix the hosts when none could be
    read, otherwise wait for room."""
    if no_fit.rejections and all(isinstance(r, Unreachable) for why in no_fit.rejections.values() for r in why):
        return "No host of the pool could be read: start or fix the agents and Docker engines named here."
    return ("Pass wait_for_resources=True (with deferrable=True the wait holds no worker slot) to wait until it "
            "fits, or retry when the tasks named here have finished.")


def timeout_message(no_fit: NoFit, wait_timeout_s: float | None) -> str:
    """A wait ended at its deadline without room."""
    waited = f", after wait_timeout={wait_timeout_s:g} s" if wait_timeout_s is not None else ""
    return (f"Still no room at the deadline{waited}: {no_fit}. Raise wait_timeout, or make room on the pool "
            "(the tasks named here hold it).")
