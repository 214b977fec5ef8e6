"""The orphan sweep as a service: sweep every few seconds, remember what was reaped.

:func:`provider.reservations.orphans.sweep` reaps once; a :class:`Sweeper` repeats it until
cancelled and keeps the last sweep and the containers it reaped lately, for whoever shows them
(the api-server's app, :mod:`provider.ui.orphan_app`, which also gives it the hosts to sweep
and the task-instance states from the metadata database).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence, Set
from datetime import datetime, timezone
from typing import Any

from provider.clients.hosts import HostConfig
from provider.reservations.orphans import Reaped, StateLookup, Sweep, sweep

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0
"""With a sweep every 30 s, an orphan is gone well within 2 minutes of its task instance ending."""
KEPT_ACTIONS = 200
"""Reaped containers remembered for ``GET /gpu-orphans/``; the api-server's log keeps them all."""


class Sweeper:
    """Sweeps every ``interval_s`` until cancelled and remembers what it did, for the app's ``GET``.

    :param hosts: the hosts to sweep now (called in a worker thread: it may read a database).
    :param lookup: the state of task instances (likewise, in a worker thread).
    :param on_sweep: told of every sweep that read the pool to the end (the app counts sweeps and
        reaped containers in Airflow's metrics; this layer knows no Airflow).
    """

    def __init__(self, hosts: Callable[[], Sequence[HostConfig]], lookup: StateLookup,
                 interval_s: float = DEFAULT_INTERVAL_S, on_sweep: Callable[[Sweep], None] = lambda done: None) -> None:
        self.hosts = hosts
        self.lookup = lookup
        self.interval_s = interval_s
        self.on_sweep = on_sweep
        self.last: Sweep | None = None
        self.reaped: deque[Reaped] = deque(maxlen=KEPT_ACTIONS)

    async def once(self) -> Sweep:
        result = await sweep(await asyncio.to_thread(self.hosts), self.lookup)
        self.last = result
        self.reaped.extend(result.reaped)
        self.on_sweep(result)
        return result

    async def forever(self) -> None:
        """Sweep now and every ``interval_s``; a failed sweep is logged and the next one comes."""
        while True:
            try:
                await self.once()
            except Exception:
                log.exception("Orphan sweep failed; orphaned containers stay until a sweep succeeds, the next "
                              "in %g s. The cause:", self.interval_s)
            await asyncio.sleep(self.interval_s)

    def document(self, readable_dags: Set[str]) -> dict[str, Any]:
        """The last sweep and the containers reaped lately, newest first, of DAGs the user may read."""
        last = self.last
        return {
            "interval_s": self.interval_s,
            "last_sweep": None if last is None else {
                "at": _iso(last.at), "hosts": list(last.hosts), "task_containers": last.task_containers,
                "skipped": list(last.skipped),
            },
            "reaped": [{**r.as_dict(), "at": _iso(r.at)} for r in reversed(self.reaped)
                       if r.task.dag_id in readable_dags],
        }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
