"""GpuAvailableTrigger: wait in the triggerer, not in a worker slot, until a request fits.

Every ``poll_interval`` seconds it reads the pool (:func:`provider.reservations.pool.read_pool_view`,
asyncio all the way: agents and engines over non-blocking sockets) and asks
:func:`provider.reservations.room.room`, the decision the operator and the sensor make too.
It fires once, with one of:

* ``{"status": "fits", "host", "gpu_ids", "waiter"}``: the request fits now. Nothing is
  reserved yet: the task reserves when it resumes, and waits again if it lost the race.
* ``{"status": "timeout", "message"}``: the deadline passed; the message names every host,
  what it lacks and which tasks hold it, and the ``wait_timeout`` that ran out.
* ``{"status": "never", "message"}``: no host could take the request even empty.
* ``{"status": "error", "message"}``: the pool's connections could not be looked up (one was
  removed or broken while the task waited); the message names the connection and the fix.

A waiting task (``waiter`` set) also keeps its place in line: once due it holds a host
(:mod:`provider.scheduling.waiting`); the hold is lifted when the task is killed or marked
failed (:meth:`GpuAvailableTrigger.on_kill`), by the task once it holds its GPUs or stops
waiting, and at the latest when it lapses.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from airflow.triggers.base import BaseTrigger, TriggerEvent

from provider.errors import EngineError, HostConfigError, NoRoom
from provider.clients.hosts import DEFAULT_HOST_CONN_ID, HostConfig, aresolve_pool
from provider.reservations.pool import read_pool_view
from provider.reservations.queueing import QueueTicket, keep_place, lease_s, line_answer, never_admitted
from provider.reservations.view import PoolView
from provider.reservations.room import Verdict, room, timeout_message
from provider.reservations.store import hold_if_due, lift_holds
from provider.scheduling import PlacementContext, PlacementRequest, get_policy
from provider.scheduling.no_fit import NoFit
from provider.scheduling.queues import Amounts, Waiting
from provider.scheduling.waiting import Waiter
from provider.task_instance import TaskInstanceRef
from provider.limits import AGENT_TIMEOUT_S

CLASSPATH = "provider.triggers.gpu_available.GpuAvailableTrigger"


class GpuAvailableTrigger(BaseTrigger):
    """Fires when ``request`` fits on the pool, or at ``deadline`` (Unix time).

    Its kwargs are stored in the metadata database and read by the triggerer, so they name the
    pool by connection ids only: no agent token and no TLS file path is in them. The triggerer
    looks the connections up itself (:meth:`pool_hosts`), through Airflow, which masks the token in
    every log; a task that waits in its worker slot hands over the hosts it resolved already.

    :param pool: a ``gpu_docker_pool`` connection id, a host connection id, a list of host
        connection ids, or None for the default host: what the task was given.
    :param request: a :class:`PlacementRequest` as a dict.
    :param policy: placement policy name; the event names the host it would choose.
    :param waiter: ``{"owner", "since"}`` of a waiting task, or None (a sensor only watches).
    :param hold_after_s: seconds of waiting after which the waiter holds a host (None: never).
    :param image: image of the task, to create its hold from (any image on the host will do).
    :param task: the waiting task instance (``TaskInstanceRef.to_dict``), named by its hold.
    :param wait_timeout: the task's wait timeout in seconds, named in the deadline's message.
    :param queue: on a pool with queues, the task's :class:`QueueTicket` as a dict: the trigger
        fires only when the task is also first in line, and keeps its place in line meanwhile.
    :param hosts: the form of triggers deferred by earlier versions, whose kwargs carried every
        host whole (token included): only the hosts' connection ids are kept, the connections
        are looked up afresh and the stored tokens are masked and dropped (:func:`legacy_pool`).
    """

    def __init__(
        self,
        request: Mapping[str, Any],
        policy: str,
        deadline: float,
        pool: str | Sequence[str] | None = None,
        poll_interval: float = 10.0,
        waiter: Mapping[str, Any] | None = None,
        hold_after_s: float | None = None,
        image: str = "",
        task: Mapping[str, Any] | None = None,
        agent_timeout: float = AGENT_TIMEOUT_S,
        wait_timeout: float | None = None,
        queue: Mapping[str, Any] | None = None,
        hosts: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow's BaseTrigger is not annotated
        if hosts is not None and pool is not None:
            raise HostConfigError("GpuAvailableTrigger takes pool (connection ids) or, from an earlier version, "
                                  "hosts; not both. Pass pool only.")
        self.pool = legacy_pool(hosts) if hosts is not None else pool_ids(pool)
        self.request = dict(request)
        self.policy = policy
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.waiter = None if waiter is None else dict(waiter)
        self.hold_after_s = hold_after_s
        self.image = image
        self.waiting_task = None if task is None else dict(task)
        self.agent_timeout = agent_timeout
        self.wait_timeout = wait_timeout
        self.queue = None if queue is None else dict(queue)
        self._hosts: list[HostConfig] | None = None
        self._fired = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "pool": self.pool,
            "request": self.request,
            "policy": self.policy,
            "deadline": self.deadline,
            "poll_interval": self.poll_interval,
            "waiter": self.waiter,
            "hold_after_s": self.hold_after_s,
            "image": self.image,
            "task": self.waiting_task,
            "agent_timeout": self.agent_timeout,
            "wait_timeout": self.wait_timeout,
            "queue": self.queue,
        }

    def resolved(self, hosts: Sequence[HostConfig]) -> GpuAvailableTrigger:
        """This trigger, run in the process that resolved ``pool`` already (a task waiting in its
        worker slot): it looks nothing up again. The hosts never enter :meth:`serialize`."""
        self._hosts = list(hosts)
        return self

    async def pool_hosts(self) -> list[HostConfig]:
        """The pool's hosts, looked up once with Airflow's async connection look-up (a blocking
        one would stall every trigger of the triggerer)."""
        if self._hosts is None:
            self._hosts = await aresolve_pool(self.pool, BaseHook.aget_connection)
        return self._hosts

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            hosts = await self.pool_hosts()
        except HostConfigError as exc:  # a connection removed or broken while the task waited
            self._fired = True
            yield TriggerEvent({"status": "error", "message": str(exc)})
            return
        event = await wait_until_fits(
            hosts,
            PlacementRequest(**self.request),
            self.policy,
            deadline=self.deadline,
            poll_interval=self.poll_interval,
            waiter=None if self.waiter is None else Waiter(**self.waiter),
            hold_after_s=self.hold_after_s,
            image=self.image,
            task=None if self.waiting_task is None else TaskInstanceRef.from_dict(self.waiting_task),
            agent_timeout=self.agent_timeout,
            wait_timeout=self.wait_timeout,
            log=self.log,
            ticket=None if self.queue is None else QueueTicket.from_dict(self.queue),
        )
        self._fired = True
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """The task was killed, marked failed or cleared while waiting: give its place in line
        back. (Not ``cleanup``: that also runs when the triggerer shuts down or hands the trigger
        to another triggerer, and the task still waits then.) A fired trigger keeps its hold
        until its task has reserved; the task lifts it."""
        if self.waiter is None or self._fired:
            return
        try:
            hosts = await self.pool_hosts()
        except HostConfigError as exc:  # the holds lapse on their own
            self.log.warning("Could not lift the holds of %s: %s", self.waiter["owner"], exc)
            return
        await lift_holds(hosts, self.waiter["owner"])


def pool_ids(pool: Any) -> str | list[str] | None:
    """``pool`` as JSON-able connection ids, checked: the trigger's kwargs hold nothing else."""
    if pool is None or (isinstance(pool, str) and pool):
        return pool
    if isinstance(pool, (list, tuple)) and pool and all(isinstance(i, str) and i for i in pool):
        return list(pool)
    raise HostConfigError(
        f"GpuAvailableTrigger: pool must be a connection id or a non-empty list of host connection ids, "
        f"got {pool!r}."
    )


def legacy_pool(hosts: Sequence[Mapping[str, Any]]) -> str | list[str] | None:
    """The pool of a trigger deferred by an earlier version, whose kwargs held each host whole:
    the hosts' names are their connection ids, so the connections are looked up afresh (a token
    changed since is honoured). The stored tokens are masked, in case anything logs the row, and
    dropped. A pool of the default host alone stays the default (the local engine when its
    connection is not defined)."""
    names: list[str] = []
    for host in hosts:
        name = host.get("name") if isinstance(host, Mapping) else None
        if not isinstance(name, str) or not name:
            raise HostConfigError(
                f"GpuAvailableTrigger: a host in the stored kwargs (hosts) of a trigger deferred by an earlier "
                f"version has no connection id (name): {sorted(host) if isinstance(host, Mapping) else type(host).__name__}. "
                "Clear the task so that it defers again with this version."
            )
        token = host.get("agent_token")
        if isinstance(token, str) and token:
            mask_secret(token)
        names.append(name)
    if names == [DEFAULT_HOST_CONN_ID]:
        return None
    return pool_ids(names)


async def wait_until_fits(
    hosts: Sequence[HostConfig],
    request: PlacementRequest,
    policy_name: str,
    *,
    deadline: float,
    poll_interval: float,
    waiter: Waiter | None,
    hold_after_s: float | None,
    image: str,
    task: TaskInstanceRef | None,
    agent_timeout: float,
    wait_timeout: float | None,
    log: Any,
    ticket: QueueTicket | None = None,
) -> dict[str, Any]:
    """Poll the pool until ``request`` fits (and, with ``ticket``, the task's queue admits it and
    no task ahead of it in line could start instead) or the deadline passes; the trigger's event."""
    policy = get_policy(policy_name)
    context = PlacementContext(rng=random.Random())
    by_name = {h.name: h for h in hosts}
    waiter_doc = None if waiter is None else {"owner": waiter.owner, "since": waiter.since}
    while True:
        view = await read_pool_view(hosts, waiter, agent_timeout=agent_timeout)
        answer = room(request, view, policy, context)
        now = time.time()
        line = None
        if ticket is not None and waiter is not None and answer.verdict is not Verdict.NEVER:
            never = never_admitted(ticket, request)
            if never is not None:
                return {"status": "never", "message": f"{request.describe()} can never start: {never}"}
            line = line_answer(view, ticket, waiter.owner, waiter.since, request, answer.placement is not None, task)
        if answer.placement is not None and (line is None or line.start):
            if ticket is not None and line is not None and waiter is not None and task is not None:
                await _keep_place(hosts, view, ticket, waiter, request, task, image, poll_interval, log,
                                  renew=True)  # a full lease for the time the task takes to resume and claim
            return {"status": "fits", "host": answer.placement.node, "gpu_ids": list(answer.placement.gpu_indices),
                    "waiter": waiter_doc}
        no_fit = answer.no_fit or NoFit(request, {}, view.holders())
        if line is not None:
            no_fit = NoFit(request, no_fit.rejections, no_fit.holders, line=str(line))
        if answer.verdict is Verdict.NEVER:
            return {"status": "never", "message": str(no_fit)}
        if now >= deadline:
            return {"status": "timeout", "message": timeout_message(no_fit, wait_timeout)}
        if ticket is not None and line is not None and waiter is not None and task is not None:
            await _keep_place(hosts, view, ticket, waiter, request, task, image, poll_interval, log)
        if waiter is not None and task is not None and (line is None or line.short is None
                                                         or line.short.room is not None):
            # A task over its own queue's limits holds no host: the host would drain for nothing.
            # One that waits for the queues' shared part to come free does, as on a full pool.
            try:
                await hold_if_due(by_name, view, request, waiter, hold_after_s=hold_after_s, expires=deadline,
                                  image=image, task=task, now=now)
            except EngineError as hold_failed:  # the wait goes on; the next poll tries again
                log.warning("Could not hold a host yet: %s", hold_failed)
        log.info("Waiting for room: %s", no_fit)
        await asyncio.sleep(max(0.0, min(poll_interval, deadline - time.time())))


async def _keep_place(hosts: Sequence[HostConfig], view: PoolView, ticket: QueueTicket, waiter: Waiter,
                      request: PlacementRequest, task: TaskInstanceRef, image: str, poll_interval: float,
                      log: Any, renew: bool = False) -> None:
    """Keep the waiter's place in line; a failure only delays it to the next poll."""
    me = Waiting(waiter.owner, ticket.queue, ticket.priority, waiter.since, Amounts.of(request.resources), str(task))
    try:
        await keep_place(hosts, view, me, request, task, image, ticket.pool, lease_s(poll_interval), renew)
    except EngineError as lost:
        log.warning("Could not keep the place in line yet: %s", lost)


async def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    """Run a trigger to its first event here (a task that waits in its worker slot)."""
    async for event in trigger.run():
        return dict(event.payload)
    raise RuntimeError(f"{type(trigger).__name__} ended without an event")


def waiter_from_event(event: Mapping[str, Any], log: Any) -> Waiter:
    """The waiter to place again with, or :class:`NoRoom` when the wait ended without room."""
    if event.get("status") == "error":
        raise HostConfigError(str(event.get("message")))
    if event.get("status") != "fits":
        raise NoRoom(str(event.get("message") or event))
    log.info("Room on %s (GPUs %s); placing again", event["host"], event["gpu_ids"])
    return Waiter(**event["waiter"])
