"""An engine's long answers over aiohttp: container output, pull progress, events, waits, archives.

These answers come once per task, not once per placement decision, and they last as long as a
container or a pull runs. Their cost is the engine's own work (reading its log files, talking to
a registry). Measured on a real engine reading a 15 MB log, the hand-written reader was 0.94 times
as fast as aiohttp (docs/transport.md). The hand-written reader is kept only where it is at least
1.5 times faster, which is the pool's short reads (:mod:`provider.clients.connections`), so these
answers go through aiohttp.

Each answer gets a session and a connection of its own, and both close with it. Nothing is kept
between answers. The caller bounds the time to the answer's head; the body may take as long as
the container runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl

from provider.clients.connections import Endpoint
from provider.errors import ProtocolError

READ_SIZE = 65536


class StreamAnswer:
    """An answer whose head has arrived; its body is read as it comes.

    ``headers`` has lower-case names, as :class:`provider.clients.http11.Response` has. A broken
    connection raises ``ConnectionResetError``, an ``OSError`` as the hand-written reader raises;
    the log follower treats that as a drop and resumes.
    """

    def __init__(self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse, what: str) -> None:
        self._session = session
        self._response = response
        self.what = what
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.headers.items()}

    async def read(self, size: int = READ_SIZE) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        try:
            return await self._response.content.read(size)
        except aiohttp.ClientError as exc:
            raise ConnectionResetError(f"{self.what} broke off its answer ({exc})") from exc

    async def body(self, limit: int) -> bytes:
        """The rest of the body, at most ``limit`` bytes (more is a :class:`ProtocolError`)."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"{self.what} sent more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Close the connection now, read to its end or not. Safe to call more than once, and
        from synchronous code: the connector keeps no idle connection (``force_close``), so
        once the answer's connection is closed the session only has to let go of it."""
        self._response.close()
        self._session.detach()


async def open_stream(
    endpoint: Endpoint, method: str, path: str, *, what: str,
    headers: Mapping[str, str] | None = None, body: Any = None, data: bytes | None = None,
) -> StreamAnswer:
    """Send one request (``body`` as JSON, or ``data`` as it is: an archive) on a connection of
    its own; return once the answer's head is read.

    Raises ``OSError`` when the endpoint cannot be reached or drops the connection,
    ``ssl.SSLError`` when TLS fails, and :class:`ProtocolError` when the answer is not HTTP. The
    caller bounds the time with ``asyncio.wait_for``.
    """
    connector: aiohttp.BaseConnector
    if endpoint.unix is not None:
        connector = aiohttp.UnixConnector(path=endpoint.unix, force_close=True)
        url = yarl.URL("http://docker" + path, encoded=True)
    else:
        connector = aiohttp.TCPConnector(force_close=True, ssl=endpoint.tls if endpoint.tls is not None else True)
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        scheme = "http" if endpoint.tls is None else "https"
        url = yarl.URL(f"{scheme}://{host}:{endpoint.port}{path}", encoded=True)
    # No total limit: a wait or an attach lasts as long as the container runs.
    response: aiohttp.ClientResponse | None = None
    session = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    try:
        if data is not None:
            response = await session.request(method, url, headers=headers, data=data)
        else:
            response = await session.request(method, url, headers=headers, json=body)
    except aiohttp.ClientResponseError as exc:
        raise ProtocolError(f"{what} sent no valid HTTP answer ({exc.message})") from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise ConnectionResetError(f"{what} closed the connection without answering ({exc})") from exc
    finally:
        if response is None:  # failed or cancelled: aiohttp has closed the connection it was making
            session.detach()
    return StreamAnswer(session, response, what)

