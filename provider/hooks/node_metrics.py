"""The pool hook: one look at every GPU host of a pool, through the one pool reader.

``NodeMetricsHook(pool="gpu_pool").snapshot()`` returns a :class:`~provider.reservations.view.PoolView`
(per host: the agent's measurements, the claims and holds on its engine), read concurrently
with per-host timeouts by :func:`provider.reservations.pool.read_pool_view` in its look-only
mode: it removes nothing. Hosts that cannot be read are in the view with ``unreachable`` set,
so a caller can say why. The hook is also the ``gpu_docker_pool`` connection type's hook: its
``test_connection`` backs the UI's Test button.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cached_property

from airflow.sdk import BaseHook

from provider.clients.engine_sync import run_sync
from provider.clients.hosts import DEFAULT_HOST_CONN_ID, POOL_CONN_TYPE, HostConfig, resolve_pool
from provider.limits import AGENT_TIMEOUT_S, MAX_CONCURRENT_HOSTS
from provider.reservations.pool import read_pool_view
from provider.reservations.view import PoolView


class NodeMetricsHook(BaseHook):
    """Reads a pool's agents and engines.

    :param pool: a ``gpu_docker_pool`` connection id, a ``gpu_docker_host`` connection id, or
        a list of host connection ids; None means this machine's default host.
    :param hosts: hosts already resolved (a trigger passes these so it looks nothing up);
        overrides ``pool``.
    :param timeout: seconds each agent may take, connect and read together (engines have their
        own, :data:`provider.limits.ENGINE_TIMEOUT_S`).
    :param max_concurrency: hosts read at once, which bounds open sockets.
    """

    conn_type = POOL_CONN_TYPE
    conn_name_attr = "pool"
    default_conn_name = DEFAULT_HOST_CONN_ID
    hook_name = "GPU Docker pool"

    def __init__(
        self,
        pool: str | Sequence[str] | None = default_conn_name,
        *,
        hosts: Sequence[HostConfig] | None = None,
        timeout: float = AGENT_TIMEOUT_S,
        max_concurrency: int = MAX_CONCURRENT_HOSTS,
    ) -> None:
        super().__init__()
        if timeout <= 0 or max_concurrency < 1:
            raise ValueError(f"timeout must be > 0 and max_concurrency >= 1, got {timeout}, {max_concurrency}")
        self.pool = pool
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        if hosts is not None:
            self.__dict__["hosts"] = list(hosts)

    @cached_property
    def hosts(self) -> list[HostConfig]:
        """The pool's hosts, looked up on first use (never in ``__init__``)."""
        return resolve_pool(self.pool, BaseHook.get_connection)

    def snapshot(self) -> PoolView:
        """Every host's state now; blocks for at most about ``timeout`` per wave of hosts."""
        return self._logged(run_sync(self._read(self.hosts)))

    async def asnapshot(self) -> PoolView:
        """:meth:`snapshot` for triggers; connection look-ups, if any, run in a thread."""
        hosts = self.hosts if "hosts" in self.__dict__ else await asyncio.to_thread(lambda: self.hosts)
        return self._logged(await self._read(hosts))

    async def _read(self, hosts: Sequence[HostConfig]) -> PoolView:
        return await read_pool_view(hosts, tidy=False, agent_timeout=self.timeout, max_concurrency=self.max_concurrency)

    def test_connection(self) -> tuple[bool, str]:
        """Read every host of the pool once; fails when any agent or engine is unreachable."""
        try:
            view = self.snapshot()
        except Exception as exc:  # noqa: BLE001 - the UI shows the message
            return False, str(exc)
        down = [n for n in view.nodes if n.unreachable]
        if down:
            return False, f"{len(down)} of {len(view.nodes)} hosts unreachable: " + " | ".join(
                f"{n.name}: {n.unreachable}" for n in down
            )
        return True, f"All {len(view.nodes)} hosts answered: " + ", ".join(
            f"{n.name} ({len(n.gpus)} GPUs)" for n in view.nodes
        )

    def _logged(self, view: PoolView) -> PoolView:
        down = [n.name for n in view.nodes if n.unreachable]
        if down:
            self.log.warning("Read %s hosts, %s unreachable: %s", len(view.nodes), len(down), down)
        else:
            self.log.debug("Read %s hosts, all reachable", len(view.nodes))
        return view
