"""GpuDockerOperator: run a training container with GPUs on a Docker host, logs live.

``execute`` follows the path of one training task: check the arguments, choose the host and
GPUs, create and start the container, stream its output into the task log, collect the exit
code and the result file, and always remove the container.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseHook, BaseOperator, Context

from provider.errors import ContainerFailed, NoFit, NoGpuRuntime, SpecError
from provider.hooks.agent_client import gpu_sample
from provider.hooks.docker_host import GpuDockerHook
from provider.hooks.engine import run_sync
from provider.hooks.hosts import DEFAULT_HOST_CONN_ID, HostConfig, host_to_dict, resolve_pool
from provider.hooks.registry import docker_connection, registry_auth
from provider.logs.archive import DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_S
from provider.logs.lines import DEFAULT_MAX_LINE_BYTES
from provider.logs.shipping import DEFAULT_LOG_ARCHIVE, LogShipping
from provider.logs.task_log import DEFAULT_TAIL_LINES
from provider.operators.container_spec import (
    DEFAULT_RESULT_PATH,
    ContainerSpec,
    build_spec,
    create_body,
    gpu_count,
)
from provider.operators.links import ContainerLogLink
from provider.operators.outcome import result_record
from provider.reservations.labels import OWNER_LABEL, task_labels
from provider.reservations.placement import Reserved, no_fit_record, place_and_reserve, placement_record, release
from provider.reservations.room import advice
from provider.reservations.store import mark_gpu_problem, new_owner
from provider.scheduling.model import MILLI_PER_GPU, PlacementRequest
from provider.scheduling.policies import DEFAULT_PULL_PENALTY_PER_GB
from provider.scheduling.registry import check_placement_policy
from provider.scheduling.waiting import Waiter
from provider.triggers.gpu_available import GpuAvailableTrigger, first_event, request_to_dict, waiter_from_event

_PULL_POLICIES = ("missing", "always", "never")
DEFER_MARGIN_S = 60.0
"""Airflow's own deferral timeout is a backstop past the trigger's deadline, whose event
carries the better message (every host's reasons)."""


class GpuDockerOperator(BaseOperator):
    """Run ``image`` on a GPU Docker host and stream its output into the task log.

    :param image: Docker image reference.
    :param command: arguments passed to the image's ENTRYPOINT, in place of the image's CMD
        (None keeps the CMD): a list, or a string split into words as a shell would, though no
        shell runs it. With an image whose ENTRYPOINT is ``["python3", "train.py"]``,
        ``command=["--epochs", "40"]`` runs ``python3 train.py --epochs 40``; to run another
        program there, set ``entrypoint`` too.
    :param entrypoint: replaces the image's ENTRYPOINT (list or string, as ``command``); the
        image's CMD is then not used, only ``command``. ``[]`` or ``""`` resets it: ``command``
        is the program, or without ``command`` the image's CMD. None (default) keeps it.
    :param user: user the container runs as: a name or uid, optionally ``:group`` or ``:gid``
        (``"1000:1000"``); None keeps the image's USER. A name must exist in the image.
    :param working_dir: absolute path the command starts in (created if the image lacks it);
        None keeps the image's WORKDIR.
    :param environment: environment variables of the container.
    :param mounts: ``"SOURCE:/path[:ro]"`` strings; SOURCE an absolute host path or a volume.
    :param gpus: number of whole GPUs; they are requested by explicit device id.
    :param gpu_milli: with ``gpus=1``, the share of the GPU to reserve (1000 = all of it).
    :param gpu_memory_mb: measured free memory each chosen GPU must have.
    :param gpu_model: GPU model the host must have (``"A|B"`` accepts either).
    :param required_labels: labels the host connection must carry, e.g. ``{"zone": "a"}``.
    :param cpus: CPU limit (e.g. ``2`` or ``0.5``); ``mem_limit`` and ``shm_size`` take sizes
        such as ``"8g"``.
    :param network_mode: ``"none"`` (default: training needs no network), ``"host"`` or
        ``"bridge"``.
    :param host: id of a ``gpu_docker_host`` connection (default: the local engine); used
        when ``gpu_pool`` is not given, as a pool of one. (Not ``pool``: that is Airflow's own
        pool of task slots on every operator.)
    :param gpu_pool: a ``gpu_docker_pool`` connection id or a list of host connection ids; the
        task runs on the host placement chooses and reserves (docs/reservations.md).
    :param placement_policy: a name from ``provider.scheduling.POLICIES``; checked when the
        task runs, after rendering, so it may be a template such as ``"{{ params.policy }}"``.
    :param pull: ``"missing"`` (pull only if absent), ``"always"`` or ``"never"``.
    :param docker_conn_id: a connection of the Docker provider's type ``docker`` (Registry URL,
        Username, Password) to pull a private image with; the credential goes with the pull to
        the chosen host's engine only (docs/images.md).
    :param pull_penalty_per_gb: the locality term: a host that would have to pull the image
        loses this many score points per GB, so hosts that have it win unless they are busier
        by more than that; 0 ignores where images are.
    :param result_path: a JSON file the container may write; its content is in the XCom.
    :param tail_lines: lines of output quoted in the error of a failed container.
    :param max_line_bytes: longer lines are split with a visible continuation mark.
    :param stop_grace_s: seconds between SIGTERM and SIGKILL when the task is killed.
    :param log_archive: where the complete container output is archived (chunks while it runs,
        a checksummed ``manifest.json`` at the end), as an object-storage URL:
        ``file://{AIRFLOW_HOME}/container_logs`` (default) or ``s3://CONN_ID@bucket/prefix``;
        None archives nothing. Storage failures never fail the task: objects are spooled on
        the worker and uploaded when storage answers again.
    :param log_archive_conn_id: connection for the archive when the URL does not name one.
    :param log_live_rate: lines per second shown live in the task log (default None: every
        line). Lines past the rate are still archived; the task log says how many it left out.
    :param log_chunk_s: seconds between archive chunks (what a crashed worker can lose).
    :param log_chunk_bytes: an archive chunk is written early once it holds this many bytes.
    :param wait_for_resources: when nothing fits, wait until something does instead of
        failing at once. Waiting tasks are served first come, first served; one that has
        waited ``hold_after_s`` holds a host so that younger ones cannot keep overtaking it
        (:mod:`provider.scheduling.waiting`).
    :param deferrable: wait in the triggerer, holding no worker slot (default: Airflow's
        ``[operators] default_deferrable``); otherwise the worker polls.
    :param wait_timeout: seconds to wait for room before failing with every host's reasons.
    :param poll_interval: seconds between two looks at the pool while waiting.
    :param hold_after_s: seconds of waiting after which the task holds a host; None never holds.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if pull not in _PULL_POLICIES:
            raise SpecError(f"pull={pull!r}; use one of {', '.join(_PULL_POLICIES)}.")
        self.image = image
        self.command = command
        self.entrypoint = entrypoint
        self.user = user
        self.working_dir = working_dir
        self.environment = dict(environment or {})
        self.mounts = list(mounts)
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
        self.required_labels = dict(required_labels or {})
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
        self.wait_timeout_s = wait_timeout.total_seconds() if isinstance(wait_timeout, timedelta) else float(wait_timeout)
        self.poll_interval = poll_interval
        self.hold_after_s = hold_after_s
        if self.wait_timeout_s <= 0 or poll_interval <= 0:
            raise SpecError(f"wait_timeout and poll_interval must be > 0, got {wait_timeout!r}, {poll_interval!r}.")
        self.log_archive_url: str | None = None  # for ContainerLogLink
        # Set while a container exists, for on_kill (which runs in the SIGTERM handler on the
        # main thread, so no lock: a lock held by the interrupted code would deadlock it).
        self._running: tuple[GpuDockerHook, str] | None = None
        self._reserved: Reserved | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        return self._execute(context, waiter=None)

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> dict[str, Any]:
        """Resumed from :class:`GpuAvailableTrigger`: place again, this time in line."""
        return self._execute(context, waiter=waiter_from_event(event, self.log))

    def _execute(self, context: Context, waiter: Waiter | None) -> dict[str, Any]:
        spec = self._spec()
        gpus = gpu_count(self.gpus)
        identity = _ti_identity(context)
        labels = task_labels(**identity)
        target = self._reserve(gpus, spec, context, dict(labels), waiter)
        gpu_ids = target.placement.gpu_indices
        hook = GpuDockerHook(target.host)
        labels[OWNER_LABEL] = target.reservation.owner
        self.log.info(
            "Starting %s on host %s (%s) with GPUs %s",
            spec.image, target.host.name, target.host.docker_url, list(gpu_ids) or "none",
        )
        body = create_body(spec, gpu_ids=gpu_ids, labels=labels)
        started = datetime.now(timezone.utc)
        try:
            container_id = hook.create(body)
        except BaseException:
            self._release()
            raise
        self._running = (hook, container_id)
        try:
            attached = hook.attach_frames(container_id)  # before start: nothing printed is missed
            try:
                hook.start(container_id, spec.image)
            except NoGpuRuntime as exc:  # the host's fault: the retry must be placed elsewhere
                run_sync(mark_gpu_problem(target.host, str(exc), spec.image, time.time()))
                raise
            shipping = self._log_shipping(identity, target)
            exit_code: int | None = None
            try:
                shipping.run(hook, container_id, attached)
                exit_code = self._wait(hook, container_id)
            finally:
                shipped = shipping.finish(
                    exit_code=exit_code, host=target.host.name, container_id=container_id,
                    gpu_ids=list(gpu_ids), image=spec.image,
                )
            finished = datetime.now(timezone.utc)
            if exit_code != 0:
                raise ContainerFailed(
                    image=spec.image,
                    host=target.host.name,
                    container_id=container_id,
                    exit_code=exit_code,
                    duration_s=(finished - started).total_seconds(),
                    tail=list(shipping.sink.tail),
                    oom_killed=hook.oom_killed(container_id),
                )
            result = hook.read_json(container_id, spec.result_path)
        finally:
            self._running = None
            hook.remove(container_id)
            self._release()
        self.log.info("Container %s exited 0 after %d lines of output", container_id[:12], shipping.sink.lines)
        record = result_record(
            host=target.host.name,
            container_id=container_id,
            image=spec.image,
            gpu_ids=gpu_ids,
            exit_code=exit_code,
            started=started,
            finished=finished,
            log_lines=shipping.sink.lines,
            result=result,
        )
        return {**record, **shipped}

    def _spec(self) -> ContainerSpec:
        """Check the rendered arguments and return the container they describe.

        The first step of every run, before any connection or engine is touched: template
        fields are rendered only now, so a bad value (``placement_policy`` included) fails
        here with its fix, not halfway through placement.
        """
        check_placement_policy(self.placement_policy)
        return build_spec(
            image=self.image,
            command=self.command,
            entrypoint=self.entrypoint,
            environment=self.environment,
            mounts=self.mounts,
            cpus=self.cpus,
            mem_limit=self.mem_limit,
            shm_size=self.shm_size,
            network_mode=self.network_mode,
            user=self.user,
            working_dir=self.working_dir,
            result_path=self.result_path,
        )

    def _reserve(
        self, gpus: int, spec: ContainerSpec, context: Context, identity: Mapping[str, str], waiter: Waiter | None
    ) -> Reserved:
        """Place the task on the pool (``host`` alone is a pool of one) and reserve it there.

        The placement record goes to the XCom ``placement`` also when nothing fits, with every
        host's reasons and the tasks holding each busy host (docs/reservations.md).
        """
        hosts = resolve_pool(self.gpu_pool if self.gpu_pool is not None else self.host, BaseHook.get_connection)
        request = PlacementRequest(
            gpus=gpus,
            gpu_milli=self.gpu_milli,
            gpu_memory_mb=self.gpu_memory_mb,
            cpu_milli=round((spec.cpus or 0) * 1000),
            memory_mb=(spec.mem_limit or 0) // (1024 * 1024),
            gpu_model=self.gpu_model,
            labels=self.required_labels,
        )

        auth = None if self.docker_conn_id is None else registry_auth(docker_connection(self.docker_conn_id))

        def prepare(host: HostConfig) -> None:
            GpuDockerHook(host).ensure_image(spec.image, self.pull, auth, progress=self.log.info)

        while True:
            try:
                reserved = place_and_reserve(
                    hosts, request, self.placement_policy, image=spec.image, identity=identity, prepare=prepare,
                    waiter=waiter, pull_penalty_per_gb=self.pull_penalty_per_gb,
                )
                break
            except NoFit as exc:
                context["ti"].xcom_push(key="placement", value=no_fit_record(exc, self.placement_policy))
                if exc.never:
                    raise
                if not self.wait_for_resources:
                    raise exc.advised(advice(exc)) from None
                waiter = self._wait_for_room(hosts, request, spec.image, identity, waiter, exc)
        self._reserved = reserved
        context["ti"].xcom_push(key="placement", value=placement_record(reserved))
        self.log.info("Placed on %s, GPUs %s, by %s%s", reserved.host.name, list(reserved.placement.gpu_indices),
                      reserved.placement.policy, f" (capacity unknown: {reserved.unmeasured})" if reserved.unmeasured else "")
        return reserved

    def _wait_for_room(
        self, hosts: Sequence[HostConfig], request: PlacementRequest, image: str, identity: Mapping[str, str],
        waiter: Waiter | None, no_fit: NoFit,
    ) -> Waiter:
        """Wait until the request fits: deferred to the triggerer, or polling in this worker.

        Both run the same :class:`GpuAvailableTrigger`; the waiter's place in line survives
        every round, so a task that loses a race for the room it waited for keeps its age.
        """
        waiter = waiter or Waiter(new_owner(), time.time())
        deadline = waiter.since + self.wait_timeout_s
        trigger = GpuAvailableTrigger(
            hosts=[host_to_dict(h) for h in hosts], request=request_to_dict(request), policy=self.placement_policy,
            deadline=deadline, poll_interval=self.poll_interval, wait_timeout=self.wait_timeout_s,
            waiter={"owner": waiter.owner, "since": waiter.since}, hold_after_s=self.hold_after_s,
            image=image, identity=identity,
        )
        self.log.info("No room on the pool yet, waiting up to %.0f s more: %s", deadline - time.time(), no_fit)
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete",
                       timeout=timedelta(seconds=max(0.0, deadline - time.time()) + DEFER_MARGIN_S))
        return waiter_from_event(asyncio.run(first_event(trigger)), self.log)

    def _release(self) -> None:
        reserved, self._reserved = self._reserved, None
        if reserved is not None:
            release(reserved)

    def _log_shipping(self, identity: Mapping[str, Any], target: Reserved) -> LogShipping:
        """The log pipeline; with GPUs on a host with an agent, each archive chunk also records
        their utilisation in the manifest."""
        samples = None
        gpu_ids = target.placement.gpu_indices
        if gpu_ids and target.host.agent_url:
            samples = functools.partial(gpu_sample, target.host, gpu_ids)
        shipping = LogShipping(
            self.log,
            archive=self.log_archive,
            identity=identity,
            archive_conn_id=self.log_archive_conn_id,
            live_rate=self.log_live_rate,
            max_line_bytes=self.max_line_bytes,
            tail_lines=self.tail_lines,
            chunk_s=self.log_chunk_s,
            chunk_bytes=self.log_chunk_bytes,
            gpu_samples=samples,
        )
        self.log_archive_url = shipping.archive.url if shipping.archive is not None else None
        return shipping

    def _wait(self, hook: GpuDockerHook, container_id: str) -> int:
        exit_code = hook.wait(container_id)
        if exit_code is None:
            raise ContainerFailed(
                image=self.image, host=hook.host.name, container_id=container_id, exit_code=-1,
                duration_s=0.0, tail=["(the container was removed while the task waited: killed)"],
            )
        return exit_code

    def on_kill(self) -> None:
        """Stop and remove the container: a killed task must leave nothing running."""
        running, self._running = self._running, None
        if running is not None:
            hook, container_id = running
            # A client of its own: the interrupted main thread may be inside the other one.
            GpuDockerHook(hook.host).stop_and_remove(container_id, grace_s=self.stop_grace_s)
            self.log.info("Task killed: container %s stopped and removed", container_id[:12])
        self._release()


def _ti_identity(context: Context) -> dict[str, Any]:
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": int(getattr(ti, "try_number", 1) or 1),
        "map_index": -1 if map_index is None else int(map_index),
    }
