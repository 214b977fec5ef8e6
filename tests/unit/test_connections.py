"""Kept-alive connections: reused, retried once when the server closed them, expired, capped,
closed with their loop; and the process-wide loop that synchronous callers share."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import multiprocessing
import signal
import threading
from collections.abc import AsyncIterator

import pytest

from provider.clients import connections
from provider.clients.connections import Endpoint, Pool, pool
from provider.clients import engine_sync
from provider.clients.engine_sync import run_sync


class Server:
    """A loopback HTTP/1.1 server that counts connections and requests; ``close_after``: it closes
    each connection after that many answers, without saying so (an idle timeout on its side)."""

    def __init__(self, close_after: int = 0) -> None:
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Endpoint:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return Endpoint("127.0.0.1", self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        answered = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.requests.append(head.split(b"\r\n", 1)[0])
                body = b'{"n": %d}' % len(self.requests)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                answered += 1
                if answered == self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _get(kept: Pool, endpoint: Endpoint, method: str = "GET") -> bytes:
    return (await kept.request(endpoint, method, "/x", host="h", what="server S")).body


def test_one_connection_serves_every_read() -> None:
    async def main() -> tuple[int, int, list[bytes]]:
        server, kept = Server(), Pool()
        async with server as endpoint:
            bodies = [await _get(kept, endpoint) for _ in range(5)]
            kept.close()
        return server.connections, len(server.requests), bodies
    connections_made, requests, bodies = asyncio.run(main())
    assert (connections_made, requests) == (1, 5) and bodies[-1] == b'{"n": 5}'


def test_gets_at_once_to_one_endpoint_take_turns_on_its_connection() -> None:
    async def main() -> tuple[int, int]:
        server, kept = Server(), Pool()
        async with server as endpoint:
            late = asyncio.ensure_future(asyncio.wait_for(_get(kept, endpoint), 0.0001))  # gives up its turn
            await asyncio.gather(*(_get(kept, endpoint) for _ in range(5)), late, return_exceptions=True)
            await _get(kept, endpoint)
            kept.close()
        return server.connections, len(kept._busy)
    assert asyncio.run(main()) == (1, 0)


def test_a_get_on_a_connection_the_server_closed_is_sent_again_on_a_new_one() -> None:
    async def main() -> tuple[int, int]:
        server, kept = Server(close_after=1), Pool()
        async with server as endpoint:
            for _ in range(3):
                await _get(kept, endpoint)
                await asyncio.sleep(0)  # the reader may or may not have seen the end yet
            kept.close()
        return server.connections, len(server.requests)
    assert asyncio.run(main()) == (3, 3)


def test_a_stale_connection_is_retried_even_when_it_looked_alive() -> None:
    async def main() -> tuple[int, int]:
        server, kept = Server(close_after=1), Pool()
        async with server as endpoint:
            await _get(kept, endpoint)
            await asyncio.sleep(0.05)  # the server has closed it
            (reader, _), _, _ = kept._idle[endpoint]
            reader.at_eof = lambda: False  # type: ignore[method-assign]  # as if the close were not seen yet
            await _get(kept, endpoint)
            kept.close()
        return server.connections, len(server.requests)
    assert asyncio.run(main()) == (2, 2)


def test_a_kept_connection_does_not_outlive_its_unix_socket_file(tmp_path: Path) -> None:
    """A Docker engine shutting down removes its socket and still answers the connections it has."""
    async def main() -> tuple[int, str]:
        path = str(tmp_path / "engine.sock")
        server, kept = Server(), Pool()
        server.server = await asyncio.start_unix_server(server._answer, path)
        endpoint = Endpoint(unix=path)
        await _get(kept, endpoint)
        os.unlink(path)  # the old engine's connection stays open
        try:
            await _get(kept, endpoint)
            outcome = "answered"
        except FileNotFoundError:
            outcome = "no engine"
        await server.__aexit__()
        kept.close()
        return server.connections, outcome
    assert asyncio.run(main()) == (1, "no engine")


def test_other_methods_never_take_a_kept_connection_but_leave_theirs() -> None:
    async def main() -> tuple[int, int]:
        server, kept = Server(), Pool()
        async with server as endpoint:
            await _get(kept, endpoint)
            await _get(kept, endpoint, "POST")
            await _get(kept, endpoint)
            kept.close()
        return server.connections, len(server.requests)
    assert asyncio.run(main()) == (2, 3)


def test_idle_connections_expire_and_are_capped() -> None:
    async def main() -> tuple[int, int, int]:
        servers = [Server() for _ in range(3)]
        kept = Pool(max_idle=2, idle_s=0.5)  # well above a full garbage collection of the test session
        endpoints = [await s.__aenter__() for s in servers]
        for endpoint in endpoints:
            await _get(kept, endpoint)
        capped = len(kept)
        await asyncio.sleep(1.0)
        expired = len(kept)
        for endpoint in endpoints:
            await _get(kept, endpoint)
        for s in servers:
            await s.__aexit__()
        kept.close()
        return capped, expired, sum(s.connections for s in servers)
    assert asyncio.run(main()) == (2, 0, 6)


def test_the_loops_pool_closes_its_connections_when_the_loop_shuts_down() -> None:
    seen: list[int] = []

    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> Pool:
        server = Server()
        async with server as endpoint:
            kept = await pool()
            assert kept is await pool()
            await _get(kept, endpoint)
            seen.append(len(kept))
        loops.append(asyncio.get_running_loop())
        return kept

    kept = asyncio.run(main())
    # Other loops of the process (the synchronous callers' I/O loop) keep pools of their own.
    assert seen == [1] and len(kept) == 0 and connections._pools.get(loops[0]) is None


def _read_once(endpoint: Endpoint) -> bytes:
    async def get() -> bytes:
        return await _get(await pool(), endpoint)
    return run_sync(get())


@pytest.fixture()
def served() -> AsyncIterator[tuple[Server, Endpoint]]:
    """A server on a loop of its own thread, as a host is to the process."""
    loop = asyncio.new_event_loop()
    server = Server()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    endpoint = asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result()
    yield server, endpoint
    asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_synchronous_callers_share_one_loop_and_its_connections(served: tuple[Server, Endpoint]) -> None:
    server, endpoint = served
    before = server.connections
    for _ in range(3):
        _read_once(endpoint)
    assert server.connections - before <= 1 and len(server.requests) == 3
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(_read_once(endpoint))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 4 and len(server.requests) == 7


def test_run_sync_works_inside_a_running_loop(served: tuple[Server, Endpoint]) -> None:
    async def inside() -> bytes:
        return _read_once(served[1])  # on_kill, in a signal handler that interrupted a loop
    assert asyncio.run(inside()).startswith(b'{"n": ')


def test_run_sync_from_its_own_loop_raises_instead_of_waiting_forever() -> None:
    async def nested() -> None:
        run_sync(asyncio.sleep(0))
    with pytest.raises(RuntimeError, match="would wait for itself"):
        run_sync(nested())


def test_run_sync_in_a_signal_handler_that_interrupted_it_inside_its_own_lock() -> None:
    """SIGTERM's handler (``on_kill``) runs in the main thread at any instant, also while that
    thread is inside :func:`run_sync` making sure the loop exists: it must not wait for itself."""
    run_sync(asyncio.sleep(0))
    answered: list[int] = []

    def interrupted_inside() -> None:
        with engine_sync._state.lock:  # where the main thread was when the signal came
            answered.append(run_sync(asyncio.sleep(0, result=7)))
    caller = threading.Thread(target=interrupted_inside, daemon=True)
    caller.start()
    caller.join(10)
    assert answered == [7], "run_sync waited for a lock its own thread held"


def test_an_interrupted_wait_cancels_the_coroutine() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            run_sync(forever())
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert cancelled.wait(5)


def _in_child(endpoint: Endpoint, out: multiprocessing.connection.Connection) -> None:  # type: ignore[name-defined]
    out.send(_read_once(endpoint))


def test_a_forked_child_gets_a_loop_of_its_own(served: tuple[Server, Endpoint]) -> None:
    server, endpoint = served
    _read_once(endpoint)  # the parent's loop exists, with a kept connection, before the fork
    before = server.connections
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_in_child, args=(endpoint, theirs))
    child.start()
    assert ours.poll(20), "the child's read hung"
    assert ours.recv().startswith(b'{"n": ')
    child.join(10)
    assert child.exitcode == 0
    assert server.connections == before + 1  # the child connected itself, never used the parent's socket
    _read_once(endpoint)  # and the parent's connection still works
    assert server.connections == before + 1
