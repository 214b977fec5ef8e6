"""Find the container an earlier try of a task left on the pool, and take over its claim.

A try whose worker was lost (killed, out of memory, its machine gone) leaves its container
training on the host, with the claim that reserves its GPUs. The next try of the same task
instance finds it by the labels every task container carries: dag_id, task_id, run_id and
map_index, but not the try number, so a container of any earlier try is found. It then
adopts that container and its claim instead of placing the task again and training twice.

Only containers of this try's own deployment (:mod:`provider.reservations.deployment`) are ever
found: another Airflow sharing the hosts may run a task of the same ``dag_id``, ``task_id`` and
``run_id``, and its container is neither adopted nor removed, nor its claim released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from provider.errors import EngineError, ReattachAmbiguous
from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.labels import DEPLOYMENT_LABEL, LOCK_LABEL, OWNER_LABEL, RESERVATION_LABEL
from provider.reservations.deployment import current_deployment
from provider.reservations.engine_clock import engine_seconds
from provider.reservations.placement import Reserved
from provider.reservations.store import ClaimStore, Reservation
from provider.scheduling.place import Placement
from provider.task_instance import TRY_NUMBER_LABEL, TaskInstanceRef

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Earlier:
    """A task container of an earlier try, as its engine lists it."""

    host: HostConfig
    container_id: str
    state: str
    try_number: int
    owner: str | None
    deployment: str
    """The deployment it belongs to (whose claims alone its claim is looked for among)."""

    def __str__(self) -> str:
        return f"container {self.container_id[:12]} of try {self.try_number} on {self.host.name} ({self.state})"


def earlier_of(host: HostConfig, entry: Mapping[str, Any], deployment: str) -> Earlier | None:
    """The task container of ``deployment`` one entry of ``host``'s container list describes;
    None for a claim, hold or lock, which carry the task's labels too but are not its
    container, and for another deployment's container (or one made before deployments were
    labelled), whatever its other labels say."""
    labels = entry.get("Labels") or {}
    if RESERVATION_LABEL in labels or LOCK_LABEL in labels or labels.get(DEPLOYMENT_LABEL) != deployment:
        return None
    try_number = labels.get(TRY_NUMBER_LABEL, "0")
    return Earlier(host, str(entry["Id"]), str(entry.get("State")), int(try_number) if try_number.isdigit() else 0,
                   labels.get(OWNER_LABEL), deployment)


async def _on(host: HostConfig, task: TaskInstanceRef, deployment: str) -> list[Earlier]:
    entries = await AsyncEngine(host).containers([*task.selector(), f"{DEPLOYMENT_LABEL}={deployment}"])
    return [e for e in (earlier_of(host, entry, deployment) for entry in entries) if e is not None]


async def find_earlier(hosts: Sequence[HostConfig], task: TaskInstanceRef,
                       deployment: str | None = None) -> list[Earlier]:
    """Every container of this task instance and of ``deployment`` (None: this process's) on
    the pool's hosts, of any try.

    A host whose engine does not answer is left out with a warning: a container there cannot be
    adopted anyway, and the task must still be able to run on the rest of the pool."""
    mine = deployment or current_deployment()
    answers = await asyncio.gather(*(_on(h, task, mine) for h in hosts), return_exceptions=True)
    found: list[Earlier] = []
    for host, answer in zip(hosts, answers):
        if isinstance(answer, EngineError):
            log.warning("Could not look for an earlier try's container on %s: %s", host.name, answer)
        elif isinstance(answer, BaseException):
            raise answer
        else:
            found.extend(answer)
    return found


def removal_reason(state: Mapping[str, Any], reattach: bool) -> str | None:
    """None when a container in engine ``state`` is adopted: ``reattach`` and it runs, or it
    exited by itself (code below 128) while no try watched. Otherwise why it is removed and
    the task trains afresh: never started, or killed by a signal (its engine restarted)."""
    code = state.get("ExitCode")
    by_itself = state.get("Status") == "exited" and isinstance(code, int) and 0 <= code < 128
    if reattach and (state.get("Running") or by_itself):
        return None
    if not reattach:
        return "reattach=False"
    if state.get("Status") == "created":
        return "never started"
    return f"exit code {code}: killed by a signal, e.g. its engine restarted without live-restore"


def started_at(state: Mapping[str, Any]) -> datetime:
    """When the engine started the container (now, when it does not say)."""
    return datetime.fromtimestamp(engine_seconds(state.get("StartedAt")) or time.time(), timezone.utc)


@dataclass(frozen=True, slots=True)
class Adopted:
    """An earlier try's container this try takes over: where it is, its engine ``state`` when
    found, and the claim that now holds its resources for this try."""

    earlier: Earlier
    state: Mapping[str, Any]
    reserved: Reserved


async def take_over(
    hosts: Sequence[HostConfig], task: TaskInstanceRef, reattach: bool, grace_s: int, say: Callable[[str], None],
    deployment: str | None = None,
) -> Adopted | None:
    """The container an earlier try of ``task`` left on the pool, adopted when ``reattach`` and
    it runs or exited by itself (docs/failures.md); any other is removed with its claim (one
    never started, or killed by a signal: its engine restarted), and None says: train afresh.
    ``say`` tells the task log which it was. Only ``deployment``'s containers (None: this
    process's) are looked at."""
    found = await find_earlier(hosts, task, deployment)
    if len(found) > 1 and reattach:
        raise ReattachAmbiguous(found)
    for earlier in found:
        doc = await AsyncEngine(earlier.host).inspect(earlier.container_id) or {}
        state = dict(doc.get("State") or {})
        why = removal_reason(state, reattach)
        if why is None:
            say(f"Reattaching to {earlier}: no new placement and no new container")
            return Adopted(earlier, state, await adopt(earlier))
        say(f"Removing {earlier} ({why}) and its claim; training afresh")
        await discard(earlier, grace_s)
    return None


async def adopt(earlier: Earlier) -> Reserved:
    """What the adopting try holds: ``earlier``'s claim when still there. A claim whose
    container stopped may have been reclaimed as stale; then its GPUs are read from the
    container, and nothing is held (the container no longer uses them)."""
    reservation = await _claim(earlier)
    return Reserved(earlier.host, Placement(earlier.host.name, reservation.gpu_ids, "reattached", {}, {}), reservation)


async def _claim(earlier: Earlier) -> Reservation:
    engine = AsyncEngine(earlier.host)
    for claim in await ClaimStore(engine, earlier.deployment).own_claims():
        if earlier.owner is not None and claim.owner == earlier.owner:
            return Reservation(earlier.host.name, claim.owner, claim.gpus, claim.container_id)
    info = await engine.inspect(earlier.container_id) or {}
    requests = (info.get("HostConfig") or {}).get("DeviceRequests") or []
    gpus = tuple(int(i) for r in requests for i in (r.get("DeviceIDs") or []))
    return Reservation(earlier.host.name, earlier.owner or "", gpus, None)


async def discard(earlier: Earlier, grace_s: int) -> None:
    """Stop and remove ``earlier``'s container and release its claim: the task trains afresh."""
    engine = AsyncEngine(earlier.host)
    reservation = await _claim(earlier)
    await engine.stop(earlier.container_id, grace_s)
    await engine.remove(earlier.container_id)
    await ClaimStore(engine, earlier.deployment).release(reservation)
