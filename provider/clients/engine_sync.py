"""The synchronous face of the one Docker Engine API client (:mod:`provider.clients.engine`).

The operator's worker code is synchronous: :class:`Engine` runs :class:`AsyncEngine`'s
coroutines and has the same method names and the same exceptions, as Kubernetes'
``PodManager`` mirrors ``AsyncPodManager``. A container's output is a :class:`Stream` read
synchronously as it arrives.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig
from provider.clients.streams import StreamAnswer
from provider.limits import ENGINE_TIMEOUT_S

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end from synchronous code, on the process's I/O loop.

    The loop lives in a daemon thread of its own for the life of the process, so connections
    kept alive by one call (:mod:`provider.clients.connections`) serve the next: the operator's
    placement, the sensor's pokes, the cluster page and :class:`NodeMetricsHook` read the pool
    over the connections of their last read. The calling thread waits; many threads may wait at
    once, and a caller inside a running loop of its own (``on_kill`` in a signal handler that
    interrupted one) waits the same way. Interrupted while waiting (a signal handler raising,
    ``KeyboardInterrupt``), it cancels the coroutine and raises. A forked child makes a loop of
    its own on first use: the parent's loop, its thread and its connections are never touched
    there. Calling it from a coroutine on that loop itself would wait forever, so it raises
    ``RuntimeError`` instead.
    """
    loop = _io_loop()
    if threading.get_ident() == _state.thread_id:
        coro.close()
        raise RuntimeError(
            "run_sync was called from a coroutine on the provider's I/O loop, which would wait for itself "
            "forever; await the coroutine instead"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


class _LoopState:
    """The process's I/O loop and the thread running it; the pid it belongs to."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        """Reentrant: a signal handler (``on_kill``) may call :func:`run_sync` in a thread that it
        interrupted while that thread held the lock, which would otherwise wait for itself."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None
        self.pid = os.getpid()


_state = _LoopState()
_forked_off: list[_LoopState] = []
"""The states a forked child inherited: kept, never used, so that nothing of the parent's loop
(its self-pipe, its epoll set, its kept-alive sockets) is closed or written to from the child."""


def _io_loop() -> asyncio.AbstractEventLoop:
    global _state
    if _state.pid != os.getpid():  # a fork that at-fork hooks missed (they run for os.fork only)
        _forget_loop()
    state = _state
    if state.loop is not None:  # made once per process; read without the lock
        return state.loop
    with state.lock:
        if state.loop is None:
            loop = asyncio.new_event_loop()
            started = threading.Event()
            thread = threading.Thread(target=_serve, args=(loop, started), name="provider-io-loop", daemon=True)
            thread.start()
            started.wait()
            state.loop, state.thread_id = loop, thread.ident
        return state.loop


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    loop.run_forever()


def _forget_loop() -> None:
    """In a forked child: the parent's loop is not running here; the next call makes a new one."""
    global _state
    _forked_off.append(_state)
    _state = _LoopState()


os.register_at_fork(after_in_child=_forget_loop)


class Stream(Iterator[bytes]):
    """A response opened now (not on first iteration) and read synchronously as it arrives.

    It has an event loop of its own. :meth:`close` ends it and frees the socket and the loop,
    also when it was never read (the container it was attached to failed to start); the end of
    the answer closes it too. A broken connection raises ``OSError``, which the log follower
    treats as a drop and resumes from.
    """

    def __init__(self, open_stream: Coroutine[Any, Any, StreamAnswer]) -> None:
        self._response: StreamAnswer | None = None  # before anything can fail: __del__ reads it
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
        if self._loop.is_closed() or self._loop.is_running():
            return  # closed already, or being read in another thread: that read ends and closes it
        try:
            self._loop.run_until_complete(asyncio.sleep(0))  # the closed connection lets go of its socket
        except RuntimeError:
            pass  # another loop runs in this thread (a garbage collection inside it): the socket goes with it
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

    def put_archive(self, container_id: str, path: str, tar: bytes) -> None:
        run_sync(self.aio.put_archive(container_id, path, tar))

    def attach(self, container_id: str) -> Stream:
        return Stream(self.aio.attach(container_id))

    def logs(self, container_id: str, follow: bool) -> Stream:
        return Stream(self.aio.logs(container_id, follow))
