"""The second half of a training task: from a started container to its result.

The same for a container this try started and for one it adopted from an earlier try whose
worker was lost (``reattach``): ship its output, wait for its exit, seal the archive, and read
the result file. :func:`earlier_try` finds that earlier try's container on the pool and
decides whether to adopt it. Removing the container and releasing its claim stay with the
operator, which also answers a kill.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from provider.errors import ContainerFailed, HandedOver
from provider.clients.engine_sync import run_sync
from provider.clients.frames import Frames
from provider.hooks.docker_host import GpuDockerHook
from provider.clients.agent import gpu_sample
from provider.clients.hosts import HostConfig
from provider.logs.shipping import LogShipping
from provider.logs.task_log import LineLogger
from provider.operators.arguments import LogSettings
from provider.operators.container_spec import ContainerSpec
from provider.operators.outcome import result_record
from provider.reservations.adopt import started_at, take_over
from provider.reservations.placement import Reserved
from provider.task_instance import TaskInstanceRef


@dataclass(frozen=True, slots=True)
class Running:
    """A started container and what the task knows of it.

    ``attached`` is the attach stream opened before the start; None for an adopted container,
    whose output is read from the engine's log after what the earlier try archived."""

    hook: GpuDockerHook
    container_id: str
    target: Reserved
    image: str
    result_path: str
    started: datetime
    started_by_try: int
    attached: Frames | None

    @property
    def reattached(self) -> bool:
        return self.attached is None


def earlier_try(hosts: Sequence[HostConfig], task: TaskInstanceRef, spec: ContainerSpec, reattach: bool,
                grace_s: int, log: LineLogger) -> Running | None:
    """A container an earlier try of this task left on the pool, adopted when ``reattach``
    and it runs or exited by itself (docs/failures.md); otherwise removed with its claim:
    one never started, or killed by a signal (its engine restarted), trains afresh."""
    adopted = run_sync(take_over(hosts, task, reattach, grace_s, log.info))
    if adopted is None:
        return None
    earlier = adopted.earlier
    return Running(GpuDockerHook(earlier.host), earlier.container_id, adopted.reserved, spec.image, spec.result_path,
                   started_at(adopted.state), earlier.try_number, None)


def run_to_end(run: Running, shipping: LogShipping) -> dict[str, Any]:
    """Follow ``run`` to its exit and return the task's XCom; :class:`ContainerFailed` on a
    non-zero exit. ``reattached`` and ``started_by_try`` say, in the XCom and in the archive's
    manifest, whether this try adopted the container and which try started it."""
    hook, container_id, host = run.hook, run.container_id, run.target.host.name
    gpu_ids = run.target.placement.gpu_indices
    who = {"reattached": run.reattached, "started_by_try": run.started_by_try}
    exit_code: int | None = None
    handed_over = False
    try:
        shipping.run(hook, container_id, run.attached)
        exit_code = hook.wait(container_id)
        if exit_code is None:
            raise ContainerFailed(
                image=run.image, host=host, container_id=container_id, exit_code=-1, duration_s=0.0,
                tail=["(the container was removed while the task waited: killed)"],
            )
    except HandedOver:  # raised by ``on_kill``: the container goes on, for the next try
        handed_over = True
        shipping.hand_over()
        raise
    finally:
        if not handed_over:
            shipped = shipping.finish(exit_code=exit_code, host=host, container_id=container_id,
                                      gpu_ids=list(gpu_ids), image=run.image, **who)
    finished = datetime.now(timezone.utc)
    if exit_code != 0:
        raise ContainerFailed(
            image=run.image, host=host, container_id=container_id, exit_code=exit_code,
            duration_s=(finished - run.started).total_seconds(), tail=list(shipping.sink.tail),
            oom_killed=hook.oom_killed(container_id),
            engine_restarted=exit_code >= 128 and hook.stopped_by_restart(container_id, run.started.timestamp()),
        )
    result = hook.read_json(container_id, run.result_path)
    record = result_record(
        host=host, container_id=container_id, image=run.image, gpu_ids=gpu_ids, exit_code=exit_code,
        started=run.started, finished=finished, log_lines=shipping.sink.lines, result=result,
    )
    return {**record, **shipped, **who}


def shipping_for(settings: LogSettings, task: TaskInstanceRef, run: Running, log: LineLogger) -> LogShipping:
    """The log pipeline of ``run``; with GPUs on a host with an agent, each archive chunk also
    records their utilisation in the manifest."""
    samples = None
    gpu_ids, host = run.target.placement.gpu_indices, run.target.host
    if gpu_ids and host.agent_url:
        samples = functools.partial(gpu_sample, host, gpu_ids)
    return LogShipping(
        log, archive=settings.archive, task=task, archive_conn_id=settings.archive_conn_id,
        live_rate=settings.live_rate, max_line_bytes=settings.max_line_bytes, tail_lines=settings.tail_lines,
        chunk_s=settings.chunk_s, chunk_bytes=settings.chunk_bytes, gpu_samples=samples, carry_on=run.reattached,
    )
