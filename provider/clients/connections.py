"""Kept-alive connections to the agents and engines, one pool per event loop.

A placement reads every host of the pool; reading it again over the connections of the last
read saves a TCP (and TLS) handshake per host and request, and leaves no socket in TIME_WAIT
(docs/transport.md has the figures). So each event loop has a :class:`Pool`: at most one idle
connection per :class:`Endpoint` (a unix socket path, or host, port and TLS context), closed
after ``IDLE_S`` unused, and at most ``max_idle`` idle connections in all. GETs to one endpoint
take turns on its connection (a pool read asks an engine for its containers and an image at
once); any other request opens a connection of its own and leaves it idle afterwards if the
endpoint has none.

File descriptors: a process that reads a pool of N hosts keeps up to 2 N sockets open between
reads (an agent and an engine per host), plus up to ``MAX_CONCURRENT_HOSTS`` in flight. The cap
is half of the process's soft open-file limit (at most ``MAX_IDLE``), so a triggerer with the
common soft limit of 1024 keeps 512 and opens the rest per request; raise ``ulimit -n`` to
4 N + 512 to keep them all.

A kept connection the server closed meanwhile is normal (an idle timeout on its side): a GET
that fails on a reused connection is sent once more on a new one. Other methods never take an
idle connection, since they must not be sent twice. The pool of a
loop closes its connections when the loop shuts down its async generators (``asyncio.run`` and
``asyncio.Runner`` do).
"""

from __future__ import annotations

import asyncio
import collections
import os
import resource
import ssl
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from provider.clients.http11 import MAX_RESPONSE_BYTES, open_response

IDLE_S = 30.0
"""An idle connection is closed after this long; servers time out later (the agent after 60 s)."""
MAX_IDLE = 8192
T = TypeVar("T")
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where connections go: ``unix`` (a socket path) or ``host`` and ``port``, with ``tls``."""

    host: str = ""
    port: int = 0
    tls: ssl.SSLContext | None = None
    unix: str | None = None

    def listener(self) -> tuple[int, int] | None:
        """Which socket file answers at a unix path now (device, inode); None: none, or TCP.

        A Docker engine that shuts down removes its socket but goes on answering the connections
        it has, for a while: a kept connection must not outlive the socket it came from, or a
        caller would read a restarting engine as one that answers."""
        if self.unix is None:
            return None
        try:
            found = os.stat(self.unix)
        except OSError:
            return (-1, -1)
        return found.st_dev, found.st_ino

    async def connect(self) -> Stream:
        if self.unix is not None:
            return await asyncio.open_unix_connection(self.unix)
        return await asyncio.open_connection(self.host, self.port, ssl=self.tls)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Pool:
    """The idle connections of one event loop; see the module's documentation."""

    def __init__(self, max_idle: int | None = None, idle_s: float = IDLE_S) -> None:
        self.max_idle = default_max_idle() if max_idle is None else max_idle
        self.idle_s = idle_s
        self._idle: dict[Endpoint, tuple[Stream, float, tuple[int, int] | None]] = {}
        self._busy: dict[Endpoint, collections.deque[asyncio.Future[Stream | None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closer: AsyncGenerator[None, None] | None = None

    def __len__(self) -> int:
        return len(self._idle)

    async def request(
        self, endpoint: Endpoint, method: str, path: str, *, host: str, what: str,
        headers: Mapping[str, str] | None = None, body: Any = None, limit: int = MAX_RESPONSE_BYTES,
    ) -> Answer:
        """One request and its whole answer (at most ``limit`` bytes), kept-alive.

        GETs to one endpoint take turns on its connection: one that finds the connection busy
        waits for it rather than opening another (a pool read asks an engine for its list and an
        image at once). Raises ``OSError`` (connecting, a connection broken off),
        ``ssl.SSLError`` or :class:`~provider.errors.ProtocolError`; the caller bounds the time.
        """
        if method != "GET":
            answer, kept = await self._exchange(await endpoint.connect(), method, path, host, what, headers, body,
                                                limit)
            if kept is not None:
                self._keep(endpoint, kept)
            return answer
        stream = await self._turn(endpoint)
        kept = None
        try:
            if stream is not None:
                try:
                    answer, kept = await self._exchange(stream, method, path, host, what, headers, body, limit)
                    return answer
                except OSError:
                    pass  # closed by the server while idle: once more on a new connection
            answer, kept = await self._exchange(await endpoint.connect(), method, path, host, what, headers, body,
                                                limit)
            return answer
        finally:
            self._pass_on(endpoint, kept)

    async def _turn(self, endpoint: Endpoint) -> Stream | None:
        """Wait until no other GET uses the endpoint's connection; that connection, if any."""
        waiting = self._busy.get(endpoint)
        if waiting is None:
            self._busy[endpoint] = collections.deque()
            return self._take(endpoint)
        turn: asyncio.Future[Stream | None] = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._pass_on(endpoint, turn.result())  # handed over just as this request gave up
            raise

    def _pass_on(self, endpoint: Endpoint, stream: Stream | None) -> None:
        """Hand the connection (None: there is none) to the next GET waiting, or keep it."""
        waiting = self._busy.get(endpoint)
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(stream)
                return
        self._busy.pop(endpoint, None)
        if stream is not None:
            self._keep(endpoint, stream)

    async def _exchange(
        self, stream: Stream, method: str, path: str, host: str, what: str,
        headers: Mapping[str, str] | None, body: Any, limit: int,
    ) -> tuple[Answer, Stream | None]:
        """The answer, and the connection when it can carry another request (else it is closed)."""
        try:
            response = await open_response(*stream, method, path, host=host, headers=headers, body=body, what=what)
            content = await response.body(limit)
        except BaseException:
            stream[1].close()
            raise
        if not response.reusable:
            stream[1].close()
        return Answer(response.status, response.headers, content), stream if response.reusable else None

    def _take(self, endpoint: Endpoint) -> Stream | None:
        kept = self._idle.pop(endpoint, None)
        if kept is None:
            return None
        stream, _, listener = kept
        if (stream[0].at_eof() or stream[1].is_closing() or stream[0].exception() is not None
                or endpoint.listener() != listener):
            stream[1].close()
            return None
        return stream

    def _keep(self, endpoint: Endpoint, stream: Stream) -> None:
        if endpoint in self._idle or len(self._idle) >= self.max_idle or self.idle_s <= 0:
            stream[1].close()
            return
        self._idle[endpoint] = (stream, time.monotonic(), endpoint.listener())
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.idle_s, self._expire)

    def _expire(self) -> None:
        """Close the connections idle for ``idle_s``; come back when the next one is due."""
        self._timer = None
        now = time.monotonic()
        for endpoint, (stream, since, _) in list(self._idle.items()):
            if now - since >= self.idle_s:
                del self._idle[endpoint]
                stream[1].close()
        if self._idle:
            due = min(since for _, since, _ in self._idle.values()) + self.idle_s
            self._timer = asyncio.get_running_loop().call_later(max(0.0, due - now), self._expire)

    def close(self) -> None:
        """Close every idle connection."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, {}
        for stream, _, _ in idle.values():
            stream[1].close()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = weakref.WeakKeyDictionary()


async def pool() -> Pool:
    """The running loop's pool, made on first use and closed when the loop shuts down."""
    loop = asyncio.get_running_loop()
    found = _pools.get(loop)
    if found is None:
        found = _pools[loop] = Pool()
        # The loop finalises the async generators it has seen when it shuts down (asyncio.run
        # does so before closing the loop): this one's ``finally`` closes the idle connections.
        found._closer = _closing(loop, found)
        await found._closer.__anext__()
    return found


async def _closing(loop: asyncio.AbstractEventLoop, pool: Pool) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        pool.close()
        if _pools.get(loop) is pool:
            del _pools[loop]


async def within(coro: Coroutine[Any, Any, T], seconds: float) -> T:
    """``coro``'s result, or ``TimeoutError`` after ``seconds``. On Python 3.11 and later this
    runs it in the caller's task (``asyncio.timeout``) instead of a task of its own
    (``asyncio.wait_for``): a pool read makes two such calls per host."""
    if _timeout is None:
        return await asyncio.wait_for(coro, seconds)
    async with _timeout(seconds):
        return await coro


_timeout: Callable[[float], AbstractAsyncContextManager[None]] | None = getattr(asyncio, "timeout", None)


def default_max_idle() -> int:
    """Half of the soft open-file limit, at most ``MAX_IDLE``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_IDLE
    return max(0, min(MAX_IDLE, soft // 2))
