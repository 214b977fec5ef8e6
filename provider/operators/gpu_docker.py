"""GpuDockerOperator: run a training container with GPUs on a Docker host, logs live.

``execute`` follows the path of one training task: check the arguments, choose the host and
GPUs, create and start the container, stream its output into the task log, collect the exit
code and the result file, and remove the container: at once when it failed or was killed,
after Airflow has recorded the success when it exited 0 (:func:`remove_finished`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseHook, BaseOperator, Context
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.log import mask_secret

from provider.errors import EngineError, HandedOver, NoGpuRuntime

from provider.scheduling.no_fit import NoFit
from provider.clients.frames import Frames
from provider.hooks.docker_host import GpuDockerHook
from provider.clients.engine_sync import run_sync
from provider.clients.hosts import DEFAULT_HOST_CONN_ID, HostConfig, pool_extra, resolve_pool
from provider.clients.registry_auth import docker_connection, registry_auth
from provider.logs.archive import DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_S
from provider.logs.lines import DEFAULT_MAX_LINE_BYTES
from provider.logs.shipping import DEFAULT_LOG_ARCHIVE, LogShipping
from provider.logs.task_log import DEFAULT_TAIL_LINES
from provider.operators.arguments import ARGUMENT_NAMES, Arguments, check_arguments
from provider.operators.container_spec import DEFAULT_RESULT_PATH, create_body
from provider.operators.host_access import check_access
from provider.operators.interrupt import airflow_state, stopped_by_decision
from provider.operators.links import ContainerLogLink
from provider.operators.placement_stats import PlacementStats
from provider.operators.priority import effective_priority
from provider.operators.run_to_end import Running, earlier_try, run_to_end, shipping_for
from provider.labels import DEPLOYMENT_LABEL, OWNER_LABEL
from provider.reservations.deployment import current_deployment
from provider.reservations.placement import Reserved, no_fit_record, place_and_reserve, placement_record, release
from provider.reservations.queueing import QueueTicket
from provider.reservations.room import advice
from provider.reservations.store import DEFAULT_GRACE_S, lift_holds, mark_gpu_problem, new_owner
from provider.scheduling.model import MILLI_PER_GPU
from provider.scheduling.policies import DEFAULT_PULL_PENALTY_PER_GB
from provider.scheduling.waiting import Waiter
from provider.task_instance import GPU_QUEUE_LABEL, TaskInstanceRef
from provider.reservations.rules import request_document
from provider.triggers.gpu_available import GpuAvailableTrigger, first_event, waiter_from_event

DEFER_MARGIN_S = 60.0
"""Airflow's own deferral timeout is a backstop past the trigger's deadline, whose event
carries the better message (every host's reasons)."""


class GpuDockerOperator(BaseOperator):
    """Run ``image`` on a GPU Docker host and stream its output into the task log.

    Every argument, with its default and whether it is templated, is in ``docs/parameters.md``.

    :param image: Docker image reference.
    :param command: arguments passed to the image's ENTRYPOINT in place of its CMD (None keeps
        the CMD); a list, or a string split into words as a shell would (no shell runs it).
    :param entrypoint: replaces the image's ENTRYPOINT; ``[]`` or ``""`` resets it.
    :param user: a name or uid, optionally ``:group``; ``working_dir``: an absolute path.
    :param environment: environment variables; ``mounts``: ``"SOURCE:/path[:ro]"`` strings, a
        host path only under ``[gpu_docker] allowed_mount_sources`` (docs/security/edge.md).
    :param private_environment: environment variables for secrets: not templated, never shown
        in the UI or logged (their values are masked in the task log), passed to the engine only.
    :param gpus: whole GPUs, requested by explicit device id; with ``gpus=1``, ``gpu_milli``
        reserves a share (1000 = all of it). ``gpu_memory_mb``, ``gpu_model`` (``"A|B"``) and
        ``required_labels`` narrow the hosts that qualify.
    :param cpus: CPU limit (``2``, ``0.5``); with ``mem_limit`` (``"8g"``) reserved on the host.
    :param network_mode: ``"none"`` (default: training needs no network), ``"host"`` or ``"bridge"``.
    :param host: a ``gpu_docker_host`` connection id (default: the local engine), a pool of one
        when ``gpu_pool`` is not given (not ``pool``: that is Airflow's pool of task slots).
    :param gpu_pool: a ``gpu_docker_pool`` connection id or a list of host connection ids; the
        task runs where placement chooses and reserves (docs/reservations.md).
    :param placement_policy: a name from ``provider.scheduling.POLICIES``; checked after rendering.
    :param pull: ``"missing"``, ``"always"`` or ``"never"``; ``docker_conn_id`` a ``docker``
        connection to pull a private image with (docs/images.md).
    :param pull_penalty_per_gb: the locality term: score points a host loses per GB it would
        have to pull; 0 ignores where images are.
    :param result_path: a JSON file the container may write; its content is in the XCom.
    :param tail_lines: lines quoted in a failed container's error; ``max_line_bytes`` splits
        longer lines; ``stop_grace_s`` between SIGTERM and SIGKILL on kill.
    :param log_archive: object-storage URL of the complete output (default
        ``file://{AIRFLOW_HOME}/container_logs``; None archives nothing), with
        ``log_archive_conn_id``, ``log_live_rate``, ``log_chunk_s`` and ``log_chunk_bytes``.
    :param wait_for_resources: when nothing fits, wait (first come, first served, a long
        waiter holds a host after ``hold_after_s``) instead of failing at once; ``deferrable``
        waits in the triggerer; ``wait_timeout`` and ``poll_interval`` in seconds.
    :param gpu_queue: on a pool connection that declares queues, the queue the task counts
        against (None: the pool's ``default_queue``); its place in line within the queue follows
        Airflow's priority weight of the task (docs/queues.md).
    :param reattach: a retry adopts the container an earlier try left running or exited (its
        worker was lost) instead of training again; False removes it and starts afresh.
    """

    template_fields: Sequence[str] = (
        "image",
        "command",
        "entrypoint",
        "user",
        "working_dir",
        "environment",
        "mounts",
        "gpus",
        "cpus",
        "mem_limit",
        "shm_size",
        "host",
        "gpu_pool",
        "placement_policy",
        "gpu_queue",
    )
    ui_color = "#c6e8d5"
    operator_extra_links = (ContainerLogLink(),)

    def __init__(
        self,
        *,
        image: str,
        command: Sequence[str] | str | None = None,
        entrypoint: Sequence[str] | str | None = None,
        user: str | int | None = None,
        working_dir: str | None = None,
        environment: Mapping[str, Any] | None = None,
        private_environment: Mapping[str, Any] | None = None,
        mounts: Sequence[str] = (),
        gpus: int = 0,
        cpus: float | None = None,
        mem_limit: int | str | None = None,
        shm_size: int | str | None = None,
        network_mode: str = "none",
        host: str = DEFAULT_HOST_CONN_ID,
        gpu_pool: str | Sequence[str] | None = None,
        placement_policy: str = "least_loaded",
        gpu_milli: int = MILLI_PER_GPU,
        gpu_memory_mb: int = 0,
        gpu_model: str | None = None,
        required_labels: Mapping[str, str] | None = None,
        pull: str = "missing",
        docker_conn_id: str | None = None,
        pull_penalty_per_gb: float = DEFAULT_PULL_PENALTY_PER_GB,
        result_path: str = DEFAULT_RESULT_PATH,
        tail_lines: int = DEFAULT_TAIL_LINES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        stop_grace_s: int = 2,
        log_archive: str | None = DEFAULT_LOG_ARCHIVE,
        log_archive_conn_id: str | None = None,
        log_live_rate: float | None = None,
        log_chunk_s: float = DEFAULT_CHUNK_S,
        log_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        wait_for_resources: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_timeout: float | timedelta = 3600.0,
        poll_interval: float = 10.0,
        hold_after_s: float | None = 600.0,
        reattach: bool = True,
        gpu_queue: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.command = command
        self.entrypoint = entrypoint
        self.user = user
        self.working_dir = working_dir
        self.environment = environment
        self.private_environment = private_environment
        self.mounts = mounts
        self.gpus = gpus
        self.cpus = cpus
        self.mem_limit = mem_limit
        self.shm_size = shm_size
        self.network_mode = network_mode
        self.host = host
        self.gpu_pool = gpu_pool
        self.placement_policy = placement_policy
        self.gpu_milli = gpu_milli
        self.gpu_memory_mb = gpu_memory_mb
        self.gpu_model = gpu_model
        self.required_labels = required_labels
        self.pull = pull
        self.docker_conn_id = docker_conn_id
        self.pull_penalty_per_gb = pull_penalty_per_gb
        self.result_path = result_path
        self.tail_lines = tail_lines
        self.max_line_bytes = max_line_bytes
        self.stop_grace_s = stop_grace_s
        self.log_archive = log_archive
        self.log_archive_conn_id = log_archive_conn_id
        self.log_live_rate = log_live_rate
        self.log_chunk_s = log_chunk_s
        self.log_chunk_bytes = log_chunk_bytes
        self.wait_for_resources = wait_for_resources
        self.deferrable = deferrable
        self.wait_timeout = wait_timeout.total_seconds() if isinstance(wait_timeout, timedelta) else wait_timeout
        self.poll_interval = poll_interval
        self.hold_after_s = hold_after_s
        self.reattach = reattach
        self.gpu_queue = gpu_queue
        self.log_archive_url: str | None = None  # for ContainerLogLink
        # Set while a container exists, for on_kill (which runs in the SIGTERM handler on the
        # main thread, so no lock: a lock held by the interrupted code would deadlock it).
        self._running: tuple[GpuDockerHook, str] | None = None
        self._reserved: Reserved | None = None
        self._waiting: tuple[Sequence[HostConfig], str] | None = None  # the pool and owner of a waiter's holds
        self._task: TaskInstanceRef | None = None  # the task instance a followed container belongs to
        self._args: Arguments | None = None  # the checked arguments of the run in progress
        self._finished: tuple[GpuDockerHook, str] | None = None  # exited 0, removed once Airflow recorded it
        self.on_success_callback = [*self.on_success_callback, remove_finished]

    def execute(self, context: Context) -> dict[str, Any]:
        return self._execute(context, waiter=None)

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> dict[str, Any]:
        """Resumed from :class:`GpuAvailableTrigger`: place again, this time in line."""
        return self._execute(context, waiter=waiter_from_event(event, self.log))

    def _execute(self, context: Context, waiter: Waiter | None) -> dict[str, Any]:
        args = self._args = self._checked()
        spec = args.spec
        task = TaskInstanceRef.of(context["ti"])
        hosts = resolve_pool(args.pool, BaseHook.get_connection)
        check_access(spec, hosts, conf.get("gpu_docker", "allowed_mount_sources", fallback="") or "")
        ticket = self._ticket(args)
        if waiter is None:  # a try resumed from waiting for room never started a container
            adopted = earlier_try(hosts, task, spec, self.reattach, args.stop_grace_s, self.log)
            if adopted is not None:
                return self._to_end(adopted, task)
        labels = {**task.to_labels(), DEPLOYMENT_LABEL: current_deployment()}  # only this deployment adopts or sweeps it
        if ticket is not None:
            labels[GPU_QUEUE_LABEL] = ticket.queue  # for the node agent's GPU series (docs/metrics.md)
        target = self._reserve(hosts, args, context, task, waiter, ticket)
        gpu_ids = target.placement.gpu_indices
        hook = GpuDockerHook(target.host)
        labels[OWNER_LABEL] = target.reservation.owner
        self.log.info(
            "Starting %s on host %s (%s) with GPUs %s",
            spec.image, target.host.name, target.host.docker_url, list(gpu_ids) or "none",
        )
        body = create_body(spec, gpu_ids=gpu_ids, gpu_milli=args.request.gpu_milli, labels=labels)
        started = datetime.now(timezone.utc)
        try:
            container_id = hook.create(body)
        except BaseException:
            self._release()
            raise
        self._running = (hook, container_id)
        attached = None
        try:
            self._prepare(hook, container_id)
            attached = hook.attach_frames(container_id)  # before start: nothing printed is missed
            try:
                hook.start(container_id, spec.image)
            except NoGpuRuntime as exc:  # the host's fault: the retry must be placed elsewhere
                try:
                    run_sync(mark_gpu_problem(target.host, str(exc), spec.image))
                except EngineError as marking:
                    self.log.warning("Could not mark host %s for its GPU problem: %s", target.host.name, marking)
                raise
        except BaseException:
            self._remove_and_release(hook, container_id, attached)
            raise
        run = Running(hook, container_id, target, spec.image, spec.result_path, started, task.try_number, attached)
        return self._to_end(run, task)

    def _prepare(self, hook: GpuDockerHook, container_id: str) -> None:
        """Between create and start: nothing for an image that brings its program; the TaskFlow
        decorator places the function and its arguments here (provider/decorators/gpu_docker.py)."""

    def _to_end(self, run: Running, task: TaskInstanceRef) -> dict[str, Any]:
        """Follow ``run`` to its result. A container that failed or was killed is removed and its
        claim released here. One that exited 0 only gives its claim back: it is removed once
        Airflow has recorded the success (:func:`remove_finished`), so a worker lost in between
        leaves it for the retry to collect instead of training again. A worker going away
        (:class:`HandedOver`) leaves container and claim to the next try."""
        self._running, self._reserved, self._task = (run.hook, run.container_id), run.target, task
        try:
            out = run_to_end(run, self._log_shipping(task.at_try(run.started_by_try), run))
        except BaseException:
            if self._running is not None:  # None: ``on_kill`` removed the container or handed it over
                self._remove_and_release(run.hook, run.container_id, run.attached)
            raise
        self._running, self._finished = None, (run.hook, run.container_id)
        if run.attached is not None:
            run.attached.close()
        self._release()
        self.log.info("Container %s exited 0 after %d lines of output", run.container_id[:12], out["log_lines"])
        return out

    def _remove_and_release(self, hook: GpuDockerHook, container_id: str, attached: Frames | None) -> None:
        self._running = None
        if attached is not None:
            attached.close()
        hook.remove(container_id)
        self._release()

    def _checked(self) -> Arguments:
        """Every argument, rendered and checked: the first step of every run, before any
        connection, engine or agent is touched, so a bad value (a template's included) fails
        here with its fix, not halfway through placement (provider/operators/arguments.py). The
        values of ``private_environment`` are masked in this task's log from here on."""
        args = check_arguments({name: getattr(self, name) for name in ARGUMENT_NAMES})
        for value in args.spec.private_environment.values():
            mask_secret(value)
        return args

    def _ticket(self, args: Arguments) -> QueueTicket | None:
        """The task's queue on a pool with queues (None on one without), checked before anything
        is reserved: an unknown queue or a queue setup that does not parse fails here."""
        if not isinstance(args.pool, str):
            return None
        return QueueTicket.of(args.pool, pool_extra(args.pool, BaseHook.get_connection), args.queue,
                              effective_priority(self))

    def _reserve(
        self, hosts: Sequence[HostConfig], args: Arguments, context: Context, task: TaskInstanceRef,
        waiter: Waiter | None, ticket: QueueTicket | None,
    ) -> Reserved:
        """Place the task on the pool (``host`` alone is a pool of one) and reserve it there; the XCom
        ``placement`` says why, also when nothing fits (docs/reservations.md)."""
        request, spec = args.request, args.spec
        auth = None if self.docker_conn_id is None else registry_auth(docker_connection(self.docker_conn_id, BaseHook.get_connection))

        def prepare(host: HostConfig) -> None:
            GpuDockerHook(host).ensure_image(spec.image, args.pull, auth, progress=self.log.info)

        stats = PlacementStats(task, args.pool, None if ticket is None else ticket.queue)
        try:
            while True:
                if waiter is not None:
                    self._waiting = (hosts, waiter.owner)
                try:
                    reserved = run_sync(place_and_reserve(
                        hosts, request, args.policy, image=spec.image, task=task, prepare=stats.asking(prepare),
                        waiter=waiter, pull_penalty_per_gb=args.pull_penalty_per_gb, ticket=ticket,
                        on_claim_lost=stats.claim_lost,
                    ))
                    break
                except NoFit as exc:
                    context["ti"].xcom_push(key="placement", value=no_fit_record(exc, args.policy))
                    if exc.never:
                        raise
                    if not self.wait_for_resources:
                        raise exc.advised(advice(exc)) from None
                    waiter = self._wait_for_room(hosts, args, task, waiter, exc, ticket)
        except TaskDeferred:
            raise  # the wait goes on in the triggerer, with the task's place in line
        except BaseException:
            self._lift_holds()  # the task stops waiting: its hold must not keep the host from others
            raise
        self._waiting = None  # place_and_reserve lifted the hold with the claim made
        self._reserved = reserved
        try:
            stats.placed(reserved.host.name, waiter)
            context["ti"].xcom_push(key="placement", value=placement_record(reserved))
        except BaseException:
            self._release()
            raise
        self.log.info("Placed on %s, GPUs %s, by %s%s%s", reserved.host.name, list(reserved.placement.gpu_indices),
                      reserved.placement.policy, f" (capacity unknown: {reserved.unmeasured})" if reserved.unmeasured else "",
                      f"; admitted by {reserved.line.queue_state}" if reserved.line is not None else "")
        return reserved

    def _wait_for_room(
        self, hosts: Sequence[HostConfig], args: Arguments, task: TaskInstanceRef, waiter: Waiter | None,
        no_fit: NoFit, ticket: QueueTicket | None,
    ) -> Waiter:
        """Wait until the request fits: deferred to the triggerer, or polling in this worker.

        Both run the same :class:`GpuAvailableTrigger`; the waiter's place in line survives
        every round, so a task that loses a race for the room it waited for keeps its age.
        """
        waiter = waiter or Waiter(new_owner(), time.time())
        deadline = waiter.since + args.wait_timeout_s
        trigger = GpuAvailableTrigger(
            pool=args.pool, request=request_document(args.request), policy=args.policy,
            deadline=deadline, poll_interval=args.poll_interval_s, wait_timeout=args.wait_timeout_s,
            waiter={"owner": waiter.owner, "since": waiter.since}, hold_after_s=args.hold_after_s,
            image=args.spec.image, task=task.to_dict(), queue=None if ticket is None else ticket.to_dict(),
        )
        self.log.info("No room on the pool yet, waiting up to %.0f s more: %s", deadline - time.time(), no_fit)
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete",
                       timeout=timedelta(seconds=max(0.0, deadline - time.time()) + DEFER_MARGIN_S))
        return waiter_from_event(asyncio.run(first_event(trigger.resolved(hosts))), self.log)

    def _release(self) -> None:
        """Give the claim back; never fails a task or hides its error (a missed claim goes stale)."""
        reserved, self._reserved = self._reserved, None
        if reserved is not None:
            try:
                run_sync(release(reserved))
            except EngineError as exc:
                self.log.warning("Could not release the claim on %s (%s); it is reclaimed as stale within %.0f s",
                                 reserved.host.name, exc, DEFAULT_GRACE_S)

    def _lift_holds(self) -> None:
        """Lift the holds of a task that stops waiting (failed, killed); best effort, as holds lapse."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            run_sync(lift_holds(*waiting))

    def _log_shipping(self, task: TaskInstanceRef, run: Running) -> LogShipping:
        assert self._args is not None  # checked at the start of the run
        shipping = shipping_for(self._args.log, task, run, self.log)
        self.log_archive_url = shipping.archive.url if shipping.archive is not None else None
        return shipping

    def on_kill(self) -> None:
        """SIGTERM: a kill when Airflow says the try must end: stop and remove the container. Else
        the worker is going away: container and claim go to the next try (operators/interrupt.py)."""
        running, self._running = self._running, None
        if running is not None and self._task is not None and not stopped_by_decision(airflow_state(self._task)):
            self._reserved = None
            raise HandedOver(running[1], running[0].host.name)
        if running is not None:
            hook, container_id = running
            # A client of its own: the interrupted main thread may be inside the other one.
            GpuDockerHook(hook.host).stop_and_remove(
                container_id, grace_s=self._args.stop_grace_s if self._args is not None else self.stop_grace_s)
            self.log.info("Task killed: container %s stopped and removed", container_id[:12])
        self._release()
        self._lift_holds()


def remove_finished(context: Context) -> None:
    """Every :class:`GpuDockerOperator`'s own ``on_success_callback``: remove the container that
    exited 0. Airflow's task runner calls it after the api-server has recorded the success, the
    first moment the container is no longer the only proof that its training ran; one left by a
    lost worker is removed by the orphan sweep (docs/failures.md)."""
    task = context.get("task")
    if isinstance(task, GpuDockerOperator) and task._finished is not None:
        (hook, container_id), task._finished = task._finished, None
        hook.remove(container_id)
