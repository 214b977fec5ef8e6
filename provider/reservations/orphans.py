"""Stop the task containers that no try of their task will ever come back to: the orphans.

A container keeps training when the worker running its try is lost; the next try adopts it
(:mod:`provider.reservations.adopt`). When no try is coming, because its task instance ended
(failed with no retry left, succeeded, was marked, skipped, removed, or cleared while no worker
watched it) or no longer exists, nobody else would stop it: it would train to its end, holding
its GPUs and its claim. A :func:`sweep` lists every host's task containers, asks for the state
of each one's task instance through a look-up its caller gives (the api-server reads the
metadata database, :mod:`provider.ui.orphan_app`), and reaps the orphans: stop, remove,
release the claim.

Whether a container is an orphan is decided by :func:`orphan_reason` alone, from its task
instance's state; everything else here is the engines' I/O. A sweep only ever lists, and so
only ever stops, its own deployment's task containers (:mod:`provider.reservations.deployment`):
another Airflow sharing the hosts, even with the same ``dag_id``, is not asked about.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from provider.errors import EngineError
from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.limits import BACKGROUND_ENGINE_TIMEOUT_S
from provider.labels import DEPLOYMENT_LABEL
from provider.reservations.adopt import Earlier, discard, earlier_of
from provider.reservations.deployment import current_deployment
from provider.task_instance import MANAGED_LABEL, TaskInstanceRef

log = logging.getLogger(__name__)

STOP_GRACE_S = 10
"""Seconds an orphan has between SIGTERM and SIGKILL: nobody collects its result any more."""

MISSING = "its task instance no longer exists (its DAG run was deleted)"
ENDED: Mapping[str, str] = {
    "success": "its task instance succeeded or was marked success",
    "failed": "its task instance failed or was marked failed, with no retry to come",
    "skipped": "its task instance was marked skipped",
    "upstream_failed": "its task instance was marked upstream_failed",
    "removed": "its task was removed from the DAG",
    "restarting": "its task instance was cleared while no worker watched it; the next try starts a fresh container",
}
"""The task-instance states after which no try comes back to a container, and what each
means to the user reading why the container was stopped. Every other state (running, queued,
scheduled, up_for_retry, up_for_reschedule, deferred, none, and any state a later Airflow
adds) keeps the container: a try of the task is running or coming and may adopt it."""

@dataclass(frozen=True, slots=True)
class Known:
    """What this deployment's metadata database says of the task instances asked for: the state
    of each that exists (None: no state yet), and which of their DAGs it knows at all."""

    states: Mapping[TaskInstanceRef, str | None]
    dags: Set[str]


StateLookup = Callable[[Sequence[TaskInstanceRef]], Known]
"""Called in a worker thread: it may block on a database."""


def orphan_reason(dag_known: bool, exists: bool, state: str | None) -> str | None:
    """Why the container of a task instance that ``exists`` (or not) in ``state`` is an orphan,
    in words for the user; None while a try of the task is running or may still come. A task of
    a DAG this deployment does not know is never judged: another Airflow may share the host."""
    if not dag_known:
        return None
    if not exists:
        return MISSING
    return ENDED.get(state) if state is not None else None


@dataclass(frozen=True, slots=True)
class Reaped:
    """An orphan the sweep stopped and removed, with its claim; ``error`` when the engine
    refused, and the next sweep tries again."""

    task: TaskInstanceRef
    try_number: int
    host: str
    container_id: str
    reason: str
    at: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.task.dag_id, "task_id": self.task.task_id, "run_id": self.task.run_id,
            "map_index": self.task.map_index, "try_number": self.try_number, "host": self.host,
            "container_id": self.container_id, "reason": self.reason, "at": self.at, "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one sweep read and did: the hosts it read, the task containers on them, the
    orphans it reaped, and each host it skipped with why."""

    at: float
    hosts: tuple[str, ...]
    task_containers: int
    reaped: tuple[Reaped, ...]
    skipped: tuple[str, ...]


async def sweep(
    hosts: Sequence[HostConfig],
    lookup: StateLookup,
    *,
    engine_timeout: float = BACKGROUND_ENGINE_TIMEOUT_S,
    grace_s: int = STOP_GRACE_S,
    deployment: str | None = None,
) -> Sweep:
    """Reap every orphan of ``deployment`` (None: this process's) on ``hosts``. A host whose
    engine does not answer is skipped with a warning: its orphans wait for a sweep that
    reaches it, and the other hosts are swept."""
    started = time.time()
    mine = deployment or current_deployment()
    unique = list({h.docker_url: h for h in hosts}.values())  # two connections to one engine: read it once
    answers = await asyncio.gather(*(_task_containers(h, engine_timeout, mine) for h in unique),
                                   return_exceptions=True)
    found: list[tuple[TaskInstanceRef, Earlier]] = []
    read: list[str] = []
    skipped: list[str] = []
    for host, answer in zip(unique, answers):
        if isinstance(answer, EngineError):
            log.warning("Orphan sweep: skipped host %s until the next sweep: %s", host.name, answer)
            skipped.append(f"{host.name}: {answer}")
        elif isinstance(answer, BaseException):
            raise answer
        else:
            read.append(host.name)
            found.extend(answer)
    known = await asyncio.to_thread(lookup, sorted({key for key, _ in found})) if found else Known({}, set())
    reaps = []
    for key, container in found:
        why = orphan_reason(key.dag_id in known.dags, key in known.states, known.states.get(key))
        if why is not None:
            reaps.append(_reap(key, container, why, grace_s))
    reaped = await asyncio.gather(*reaps)
    return Sweep(started, tuple(read), len(found), tuple(reaped), tuple(skipped))


async def _task_containers(host: HostConfig, timeout: float, deployment: str) -> list[tuple[TaskInstanceRef, Earlier]]:
    """Every task container of ``deployment`` on ``host`` (claims, holds and the lock left out) with its task."""
    found = []
    selector = [f"{MANAGED_LABEL}=true", f"{DEPLOYMENT_LABEL}={deployment}"]
    for entry in await AsyncEngine(host, timeout).containers(selector):
        container, key = earlier_of(host, entry, deployment), TaskInstanceRef.from_labels(entry.get("Labels") or {})
        if container is not None and key is not None:
            found.append((key, container))
    return found


async def _reap(key: TaskInstanceRef, container: Earlier, reason: str, grace_s: int) -> Reaped:
    """Stop and remove ``container`` and release its claim, and say so in the log."""
    cid, host = container.container_id, container.host.name
    what = f"container {cid[:12]} of {key.describe()}, try {container.try_number}, on host {host}"
    try:
        await discard(container, grace_s)
    except EngineError as exc:
        log.warning("Orphan sweep: could not stop and remove %s (%s): %s. The next sweep tries again; "
                    "to stop it now, run `docker rm -f %s` on that host", what, reason, exc, cid)
        return Reaped(key, container.try_number, host, cid, reason, time.time(), str(exc))
    log.warning("Orphan sweep: stopped and removed %s and released its claim, because %s", what, reason)
    return Reaped(key, container.try_number, host, cid, reason, time.time())
