"""The pool hook: one snapshot of every GPU host, read from their node agents.

``NodeMetricsHook(pool="gpu_pool").snapshot()`` returns one :class:`NodeState` per host of the
pool, in the pool's order, read concurrently with a per-host timeout. Hosts that cannot be
read are in the list with ``unreachable`` set, so placement can say why it skipped them.
The hook is also the ``gpu_docker_pool`` connection type's hook: its ``test_connection``
backs the UI's Test button.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cached_property

from airflow.sdk import BaseHook

from provider.hooks.agent_client import DEFAULT_MAX_CONCURRENCY, read_pool
from provider.hooks.hosts import DEFAULT_HOST_CONN_ID, POOL_CONN_TYPE, HostConfig, resolve_pool
from provider.scheduling.model import NodeState

#: The ``connection-types`` entry of ``get_provider_info()`` for pools.
class NodeMetricsHook(BaseHook):
    """Reads the node agents of a pool.

    :param pool: a ``gpu_docker_pool`` connection id, a ``gpu_docker_host`` connection id, or
        a list of host connection ids; None means this machine's default host.
    :param hosts: hosts already resolved (a trigger passes these so it looks nothing up);
        overrides ``pool``.
    :param timeout: seconds each agent may take, connect and read together.
    :param max_concurrency: agents read at once, which bounds open sockets.
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
        timeout: float = 2.0,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
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

    def snapshot(self) -> list[NodeState]:
        """Every host's state now; blocks for at most about ``timeout`` per wave of hosts."""
        hosts = self.hosts
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._logged(asyncio.run(read_pool(hosts, self.timeout, self.max_concurrency)))
        raise RuntimeError("NodeMetricsHook.snapshot() blocks; inside an event loop use `await hook.asnapshot()`.")

    async def asnapshot(self) -> list[NodeState]:
        """:meth:`snapshot` for triggers; connection look-ups, if any, run in a thread."""
        hosts = self.hosts if "hosts" in self.__dict__ else await asyncio.to_thread(lambda: self.hosts)
        return self._logged(await read_pool(hosts, self.timeout, self.max_concurrency))

    def test_connection(self) -> tuple[bool, str]:
        """Read every agent of the pool once; fails when any host is unreachable."""
        try:
            nodes = self.snapshot()
        except Exception as exc:  # noqa: BLE001 - the UI shows the message
            return False, str(exc)
        down = [n for n in nodes if n.unreachable]
        if down:
            return False, f"{len(down)} of {len(nodes)} hosts unreachable: " + " | ".join(
                f"{n.name}: {n.unreachable}" for n in down
            )
        return True, f"All {len(nodes)} hosts answered: " + ", ".join(
            f"{n.name} ({len(n.gpus)} GPUs)" for n in nodes
        )

    def _logged(self, nodes: list[NodeState]) -> list[NodeState]:
        down = [n.name for n in nodes if n.unreachable]
        if down:
            self.log.warning("Read %s hosts, %s unreachable: %s", len(nodes), len(down), down)
        else:
            self.log.debug("Read %s hosts, all reachable", len(nodes))
        return nodes
