"""Pure rules of GPU reservations ("claims"): names, labels, accounting, staleness.

The I/O lives in :mod:`provider.hooks.reservations`; everything here is a function of plain
values (container summaries as the Docker API lists them, a clock reading passed in), so the
decisions are unit-tested without an engine. See ``docs/reservations.md`` for the design.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from provider.reservations.labels import LABEL_PREFIX
from provider.scheduling.model import MILLI_PER_GPU, NodeState
from provider.scheduling.waiting import Hold

CLAIM_LABEL = f"{LABEL_PREFIX}.claim"
LOCK_LABEL = f"{LABEL_PREFIX}.claim-lock"
GPU_LABEL = f"{LABEL_PREFIX}.claim.gpu"
MILLI_LABEL = f"{LABEL_PREFIX}.claim.milli"
CREATED_LABEL = f"{LABEL_PREFIX}.claim.created"
OWNER_LABEL = f"{LABEL_PREFIX}.claim.owner"
"""Carried by the claims *and* by the task container, which ties a claim to its task."""

HOLD_LABEL = f"{LABEL_PREFIX}.hold"
HOLD_OWNER_LABEL = f"{LABEL_PREFIX}.hold.owner"
HOLD_SINCE_LABEL = f"{LABEL_PREFIX}.hold.since"
HOLD_EXPIRES_LABEL = f"{LABEL_PREFIX}.hold.expires"

NAME_PREFIX = "gpu-docker-claim-gpu"
HOLD_PREFIX = "gpu-docker-hold-"
LOCK_PREFIX = "gpu-docker-claim-lock-gpu"


@dataclass(frozen=True, slots=True)
class Claim:
    """One reservation of (a share of) one GPU, as read back from a host."""

    container_id: str
    gpu: int
    milli: int
    owner: str
    created: float

    @property
    def whole(self) -> bool:
        return self.milli >= MILLI_PER_GPU


def claim_name(gpu: int, milli: int, owner: str) -> str:
    """The container name of a claim.

    A whole GPU has exactly one possible name, so the engine's unique-name rule makes two
    whole claims of one GPU impossible; a share's name includes its owner, so several shares
    coexist and a lock (:func:`lock_name`) orders their check-and-create.
    """
    if milli >= MILLI_PER_GPU:
        return f"{NAME_PREFIX}{gpu}"
    return f"{NAME_PREFIX}{gpu}-share-{owner}"


def lock_name(gpu: int) -> str:
    return f"{LOCK_PREFIX}{gpu}"


def claim_labels(gpu: int, milli: int, owner: str, created: float, identity: Mapping[str, str]) -> dict[str, str]:
    """Labels of a claim container: the task's identity plus what the claim reserves."""
    return {
        **identity,
        CLAIM_LABEL: "true",
        GPU_LABEL: str(gpu),
        MILLI_LABEL: str(milli),
        OWNER_LABEL: owner,
        CREATED_LABEL: f"{created:.3f}",
    }


def parse_claim(summary: Mapping[str, Any]) -> Claim | None:
    """A claim from one entry of the engine's container list; None for anything else.

    A container whose claim labels are malformed is not a claim this provider made, and
    counting it could block a GPU forever, so it is ignored rather than guessed at.
    """
    labels = summary.get("Labels") or {}
    if labels.get(CLAIM_LABEL) != "true":
        return None
    try:
        return Claim(
            container_id=str(summary["Id"]),
            gpu=int(labels[GPU_LABEL]),
            milli=int(labels[MILLI_LABEL]),
            owner=str(labels[OWNER_LABEL]),
            created=float(labels[CREATED_LABEL]),
        )
    except (KeyError, ValueError):
        return None


def allocated_milli(claims: Iterable[Claim]) -> dict[int, int]:
    """Reserved milli-GPUs per GPU index."""
    total: dict[int, int] = {}
    for c in claims:
        total[c.gpu] = total.get(c.gpu, 0) + c.milli
    return total


def with_claims(node: NodeState, claims: Iterable[Claim]) -> NodeState:
    """``node`` with each GPU's ``allocated_milli`` set from the host's claims.

    Claims of indices the agent does not report (a GPU removed from the host) are ignored:
    they reserve nothing placement could choose. Totals are capped at a whole GPU.
    """
    total = allocated_milli(claims)
    if not total or node.unreachable is not None:
        return node
    gpus = tuple(replace(g, allocated_milli=min(MILLI_PER_GPU, total.get(g.index, 0))) for g in node.gpus)
    return replace(node, gpus=gpus)


def claims_and_live_owners(owned: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], set[str]]:
    """Split an engine's list of containers carrying ``OWNER_LABEL`` (one API call) into the
    claim entries and the owners whose task container is running."""
    claims, live = [], set()
    for c in owned:
        labels = c.get("Labels") or {}
        if labels.get(CLAIM_LABEL) == "true":
            claims.append(c)
        elif c.get("State") == "running":
            live.add(str(labels.get(OWNER_LABEL)))
    return claims, live


def stale_claims(claims: Sequence[Claim], live_owners: set[str], now: float, grace_s: float) -> list[Claim]:
    """Claims whose task no longer runs: no running container carries their owner, and
    they are older than ``grace_s`` (the window between claiming and starting the task)."""
    return [c for c in claims if c.owner not in live_owners and now - c.created > grace_s]


def conflict(claims_on_gpu: Sequence[Claim], gpu: int, milli: int, owner: str) -> str | None:
    """Why ``owner`` may not hold ``milli`` of ``gpu`` next to the other claims; None if it may.

    Called after the claim exists, with every claim on that GPU including its own: a whole
    GPU and any share exclude each other, and shares together fit in one GPU. When two
    claimants both see each other, both back off; neither is ever granted twice.
    """
    others = [c for c in claims_on_gpu if c.owner != owner and c.gpu == gpu]
    if not others:
        return None
    if milli >= MILLI_PER_GPU or any(c.whole for c in others):
        return f"GPU {gpu} is already reserved by another task"
    used = sum(c.milli for c in others)
    if used + milli > MILLI_PER_GPU:
        return f"GPU {gpu} has {MILLI_PER_GPU - used}m unreserved < {milli}m"
    return None


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """A hold (:mod:`provider.scheduling.waiting`) as kept on a host: a never-started container."""

    container_id: str
    expires: float
    hold: Hold


def hold_name(owner: str) -> str:
    """One hold per waiter and host: a second create by the same waiter is refused (409)."""
    return f"{HOLD_PREFIX}{owner}"


def hold_labels(owner: str, since: float, expires: float, identity: Mapping[str, str]) -> dict[str, str]:
    """Labels of a hold: the waiting task's identity, its place in line and when the hold lapses.

    ``expires`` is the end of the task's wait (its timeout): a hold whose task was killed
    without cleaning up lapses then at the latest.
    """
    return {
        **identity,
        HOLD_LABEL: "true",
        HOLD_OWNER_LABEL: owner,
        HOLD_SINCE_LABEL: f"{since:.3f}",
        HOLD_EXPIRES_LABEL: f"{expires:.3f}",
    }


def parse_hold(host: str, summary: Mapping[str, Any]) -> HoldRecord | None:
    """A hold from one entry of a host's container list; None for anything else."""
    labels = summary.get("Labels") or {}
    if labels.get(HOLD_LABEL) != "true":
        return None
    try:
        task = f"{labels.get(f'{LABEL_PREFIX}.dag_id', '?')}.{labels.get(f'{LABEL_PREFIX}.task_id', '?')} " \
               f"{labels.get(f'{LABEL_PREFIX}.run_id', '?')}"
        return HoldRecord(
            container_id=str(summary["Id"]),
            expires=float(labels[HOLD_EXPIRES_LABEL]),
            hold=Hold(host=host, owner=str(labels[HOLD_OWNER_LABEL]), since=float(labels[HOLD_SINCE_LABEL]), task=task),
        )
    except (KeyError, ValueError):
        return None
