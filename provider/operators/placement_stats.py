"""The placement metrics of one task, sent from its worker through Airflow's ``Stats``.

Every placement ends in the task's own worker: a task that waited in the triggerer resumes there
and places again (:class:`~provider.triggers.gpu_available.GpuAvailableTrigger` only says when
there is room), so the worker sees the whole of it, deferred or not, and sends it all. It uses
the task SDK's ``Stats``, the one Airflow's task runner sets up from ``[metrics]`` in the task's
process (the triggerer and the api-server set up Airflow core's instead). Names and tags:
:mod:`provider.stat_names`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from airflow.sdk.observability.stats import Stats

from provider.clients.hosts import HostConfig
from provider.scheduling.waiting import Waiter
from provider.stat_names import CLAIM_RETRIES, PLACEMENT_LATENCY, ROOM_WAIT, stat_tags
from provider.task_instance import TaskInstanceRef


class PlacementStats:
    """The metrics of one task's placement, tagged with its DAG, task, pool and queue.

    :param pool: the ``gpu_pool`` connection id; a pool given as a list of host ids is not
        tagged (the host is).
    :param queue: the task's queue on a pool with queues, else None.
    """

    def __init__(self, task: TaskInstanceRef, pool: str | Sequence[str], queue: str | None) -> None:
        self.tags = stat_tags(dag_id=task.dag_id, task_id=task.task_id,
                              pool=pool if isinstance(pool, str) else None, queue=queue)
        self._asked = 0.0
        self._pulling = 0.0

    def asking(self, prepare: Callable[[HostConfig], None]) -> Callable[[HostConfig], None]:
        """Start the clock of one placement; ``prepare`` (the image pull on the chosen host),
        timed so that the pull is left out of the placement's latency."""
        self._asked, self._pulling = time.monotonic(), 0.0

        def timed(host: HostConfig) -> None:
            started = time.monotonic()
            try:
                prepare(host)
            finally:
                self._pulling += time.monotonic() - started

        return timed

    def claim_lost(self, host: str) -> None:
        """A claim on ``host`` lost its race; placement reads the pool again."""
        Stats.incr(CLAIM_RETRIES, tags={**self.tags, **stat_tags(host=host)})

    def placed(self, host: str, waiter: Waiter | None) -> None:
        """The claim on ``host`` is made: the latency since :meth:`asking`, and for a task that
        waited (``waiter``) the time since nothing first fitted it. ``waiter.since`` is the
        first worker's wall clock, so the wait spans workers and the triggerer."""
        tags = {**self.tags, **stat_tags(host=host)}
        Stats.timing(PLACEMENT_LATENCY, timedelta(seconds=time.monotonic() - self._asked - self._pulling), tags=tags)
        if waiter is not None:
            Stats.timing(ROOM_WAIT, timedelta(seconds=max(0.0, time.time() - waiter.since)), tags=tags)
