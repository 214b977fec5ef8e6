"""The synchronous face of the one Docker Engine API client (:mod:`provider.clients.engine`).

The operator's worker code is synchronous: :class:`Engine` runs :class:`AsyncEngine`'s
coroutines and has the same method names and the same exceptions, as Kubernetes'
``PodManager`` mirrors ``AsyncPodManager``. A container's output is a :class:`Stream` read
synchronously as it arrives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.clients.http11 import Response
from provider.limits import ENGINE_TIMEOUT_S

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end from synchronous code.

    Where this thread is already inside an event loop (``on_kill`` runs in a signal handler
    that may interrupt one), it runs in a thread of its own instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Stream(Iterator[bytes]):
    """A response opened now (not on first iteration) and read synchronously as it arrives.

    It has an event loop of its own. :meth:`close` ends it and frees the socket and the loop,
    also when it was never read (the container it was attached to failed to start); the end of
    the answer closes it too. A broken connection raises ``OSError``, which the log follower
    treats as a drop and resumes from.
    """

    def __init__(self, open_stream: Coroutine[Any, Any, Response]) -> None:
        self._response: Response | None = None  # before anything can fail: __del__ reads it
        self._loop = asyncio.new_event_loop()
        try:
            self._response = self._loop.run_until_complete(open_stream)
        except BaseException:
            self._loop.close()
            raise

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        if self._response is None:
            raise StopIteration
        try:
            chunk = self._loop.run_until_complete(self._response.read())
        except BaseException:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()
            self._loop.close()

    def __del__(self) -> None:
        self.close()


class Engine:
    """:class:`AsyncEngine`'s verbs for synchronous code: same names, same exceptions."""

    def __init__(self, host: HostConfig, timeout: float = ENGINE_TIMEOUT_S) -> None:
        self.aio = AsyncEngine(host, timeout)

    @property
    def host(self) -> HostConfig:
        return self.aio.host

    def info(self) -> dict[str, Any]:
        return run_sync(self.aio.info())

    def containers(self, labels: Sequence[str]) -> list[dict[str, Any]]:
        return run_sync(self.aio.containers(labels))

    def create(self, body: Mapping[str, Any], name: str | None = None) -> str | None:
        return run_sync(self.aio.create(body, name))

    def create_idle(self, name: str, image: str, labels: Mapping[str, str]) -> str | None:
        return run_sync(self.aio.create_idle(name, image, labels))

    def start(self, container_id: str) -> None:
        run_sync(self.aio.start(container_id))

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        return run_sync(self.aio.inspect(container_id))

    def stop(self, container_id: str, grace_s: int) -> None:
        run_sync(self.aio.stop(container_id, grace_s))

    def remove(self, container_id: str) -> None:
        run_sync(self.aio.remove(container_id))

    def wait(self, container_id: str) -> int | None:
        return run_sync(self.aio.wait(container_id))

    def death_recorded(self, container_id: str, since: float, until: float) -> bool:
        return run_sync(self.aio.death_recorded(container_id, since, until))

    def image(self, reference: str) -> dict[str, Any] | None:
        return run_sync(self.aio.image(reference))

    def pull(
        self, reference: str, progress: Callable[[dict[str, Any]], None] | None = None, auth: str | None = None
    ) -> None:
        run_sync(self.aio.pull(reference, progress, auth))

    def archive(self, container_id: str, path: str, limit: int) -> bytes | None:
        return run_sync(self.aio.archive(container_id, path, limit))

    def attach(self, container_id: str) -> Stream:
        return Stream(self.aio.attach(container_id))

    def logs(self, container_id: str, follow: bool) -> Stream:
        return Stream(self.aio.logs(container_id, follow))
