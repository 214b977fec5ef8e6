"""What one read of a pool found: per host, the agent's measurements, the claims and holds.

Plain values, filled by :func:`provider.reservations.pool.read_pool_view` and read by
placement (:mod:`provider.reservations.room`), the waiting trigger and the cluster page.
"""

from __future__ import annotations

from dataclasses import dataclass

from provider.reservations.rules import Claim, HoldRecord, PlaceInLine
from provider.scheduling.model import NodeState
from provider.scheduling.queues import Amounts, usage_by_queue


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as read now.

    ``node`` is what placement sees: the agent's capacity with the counted claims folded in
    and the holds that apply to the reader; unreachable when the agent or the engine did not
    answer. ``measured`` is the agent's reading alone, which the cluster page still shows when
    only the engine failed (``engine_problem`` says why). ``stale`` are claims whose task is
    gone: removed by a tidying read, only reported by a look.
    """

    node: NodeState
    measured: NodeState
    claims: tuple[Claim, ...] = ()
    stale: tuple[Claim, ...] = ()
    holds: tuple[HoldRecord, ...] = ()
    line: tuple[PlaceInLine, ...] = ()
    """The places in line of waiting tasks kept on this host (pools with queues)."""
    runtimes: tuple[str, ...] = ()
    engine_problem: str | None = None
    image_bytes: int | None = None
    """The size of the task's image on this host; None when the host does not have it (or
    nobody asked)."""
    deployment: str | None = None
    """The deployment that read it: its claims count against its queues (None: every claim does)."""
    engine_now: float | None = None
    """The engine's time at the read, which ages and leases are measured on; None when unknown."""

    @property
    def own_claims(self) -> tuple[Claim, ...]:
        """The counted claims of the reading deployment (every one when it is not known)."""
        return tuple(c for c in self.claims if self.deployment is None or c.deployment == self.deployment)

    @property
    def holders(self) -> tuple[str, ...]:
        """The tasks whose claims take this host's resources, oldest first, for messages."""
        return tuple(str(c.task) if c.task else f"owner {c.owner}" for c in self.claims)


@dataclass(frozen=True, slots=True, repr=False)
class PoolView:
    """Every host of the pool, in the pool's order."""

    hosts: tuple[HostView, ...]

    def __repr__(self) -> str:
        # Short on purpose: on Python 3.11 ``asyncio.run`` formats its coroutine's result into a
        # message it then drops, which for the full text of 1000 hosts cost about 70 ms a read.
        down = sum(1 for h in self.hosts if h.node.unreachable is not None)
        return f"PoolView({len(self.hosts)} hosts, {down} unreachable)"

    @property
    def nodes(self) -> list[NodeState]:
        return [h.node for h in self.hosts]

    @property
    def holds(self) -> list[HoldRecord]:
        return [r for h in self.hosts for r in h.holds]

    @property
    def line(self) -> list[PlaceInLine]:
        """Every waiting task's place in line found on the hosts that answered."""
        return [p for h in self.hosts for p in h.line]

    def queue_usage(self) -> dict[str, Amounts]:
        """What each queue's claims take on the hosts that answered (a host that does not answer
        counts nothing until it does: docs/queues.md, "Limits"); only the reading deployment's
        claims count against its queues (another deployment's queues of the same name are not its own)."""
        return usage_by_queue((c.queue, Amounts.of(c.resources)) for h in self.hosts for c in h.own_claims
                              if c.queue is not None and c.malformed is None)

    def left_s(self, place: PlaceInLine) -> float | None:
        """How long ``place`` lasts from the read, on its engine's clock; None when unknown."""
        now = next((h.engine_now for h in self.hosts if h.node.name == place.host), None)
        return None if now is None else place.expires - now

    def holders(self) -> dict[str, tuple[str, ...]]:
        """Per host with claims, who holds it (for no-fit and deadline messages)."""
        return {h.node.name: h.holders for h in self.hosts if h.claims}
