"""HTTP/1.1 over an asyncio stream, for the node agents and the Docker engines: the wire format.

Placement reads every host of a pool, agent and engine, on every decision, and a waiting
task's trigger does so every poll inside the triggerer's shared event loop. Each request must
be cheap, so this is a small hand-written reader (docs/transport.md has the measurement): a
request and its answer's head (:func:`open_response`), then the body by its Content-Length,
chunk by chunk (dockerd sends bodies over about 2 KB chunked), or to the end of the stream when
the server says so (``Connection: close``, HTTP/1.0) or sends no length. Answers that cannot
have a body (1xx, 204, 304) have none.

Every request is HTTP/1.1 and asks to be kept alive: :mod:`provider.clients.connections` reuses
the connection once its answer is read to the end. Long answers (container output, pull
progress) go through aiohttp instead (:mod:`provider.clients.streams`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provider.errors import ProtocolError

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_CHUNK_LINE = 4096
"""A chunk-size line or a trailer field longer than this is not HTTP."""
_BODYLESS = frozenset({204, 304})
_HEX = b"0123456789abcdefABCDEF"


@dataclass(slots=True)
class Response:
    """A response whose head has been read; the body is read from ``reader`` as it comes.

    ``reusable`` turns true once a kept-alive answer has been read to its end: the connection
    can then carry the next request.
    """

    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    what: str
    keep_alive: bool = False
    _length: int | None = None  # bytes left of a Content-Length body
    _chunked: bool = False
    _chunk_left: int = 0  # bytes left of the current chunk
    _done: bool = False

    def __post_init__(self) -> None:
        encoding = self.headers.get("transfer-encoding", "").lower()
        if self.status < 200 or self.status in _BODYLESS:
            self._done = True
        elif encoding:
            if encoding.rsplit(",", 1)[-1].strip() != "chunked":
                raise ProtocolError(f"{self.what} sent a body in an unknown transfer encoding {encoding!r}")
            self._chunked = True
        elif "content-length" in self.headers:
            value = self.headers["content-length"]
            if not (value.isascii() and value.isdigit()):
                raise ProtocolError(f"{self.what} sent an invalid Content-Length {value[:40]!r}")
            self._length = int(value)
            self._done = self._length == 0
        else:
            self.keep_alive = False  # the body ends where the stream does

    @property
    def reusable(self) -> bool:
        return self.keep_alive and self._done

    async def read(self, size: int = 65536) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        if self._done:
            return b""
        try:
            if self._chunked:
                return await self._read_chunked(size)
            if self._length is not None:
                data = await self.reader.read(min(size, self._length))
                if not data:
                    raise ProtocolError(f"{self.what} closed the connection {self._length} bytes before the end "
                                        "of its answer")
                self._length -= len(data)
                self._done = self._length == 0
                return data
            data = await self.reader.read(size)
            self._done = not data
            return data
        except asyncio.IncompleteReadError:
            raise ProtocolError(f"{self.what} closed the connection in the middle of its answer") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"{self.what} sent a chunk header longer than the stream's limit") from None

    async def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            line = await self.reader.readuntil(b"\r\n")
            digits = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not digits or len(digits) > 15 or digits.strip(_HEX):
                raise ProtocolError(f"{self.what} sent an invalid chunk size {line[:40]!r}")
            self._chunk_left = int(digits, 16)
            if self._chunk_left == 0:
                while (trailer := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    if len(trailer) > MAX_CHUNK_LINE:
                        raise ProtocolError(f"{self.what} sent a trailer field over {MAX_CHUNK_LINE} bytes")
                self._done = True
                return b""
        data = await self.reader.read(min(size, self._chunk_left))
        if not data:
            raise asyncio.IncompleteReadError(b"", self._chunk_left)
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and await self.reader.readexactly(2) != b"\r\n":
            raise ProtocolError(f"{self.what} sent a chunk longer than its size")
        return data

    async def body(self, limit: int = MAX_RESPONSE_BYTES) -> bytes:
        """The rest of the body, at most ``limit`` bytes (more is a :class:`ProtocolError`)."""
        if self._length is not None and self._length > limit:
            raise ProtocolError(f"{self.what} sent more than {limit} bytes ({self._length} announced)")
        if self._length is not None and not self._done:
            try:  # one read for the common case: the whole announced body
                data = await self.reader.readexactly(self._length)
            except asyncio.IncompleteReadError as exc:
                raise ProtocolError(f"{self.what} closed the connection {self._length - len(exc.partial)} bytes "
                                    "before the end of its answer") from None
            self._length, self._done = 0, True
            return data
        chunks: list[bytes] = []
        size = 0
        while chunk := await self.read(65536):
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"{self.what} sent more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


def request_bytes(method: str, path: str, *, host: str, headers: Mapping[str, str] | None = None,
                  body: Any = None) -> bytes:
    """One HTTP/1.1 request to be kept alive (``body`` as JSON)."""
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    elif method not in ("GET", "HEAD"):
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


async def read_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, what: str) -> Response:
    """The answer's status and header fields; raises :class:`ProtocolError` for anything else.

    A connection that ends before the first byte of an answer raises ``ConnectionResetError``:
    a kept-alive connection the server closed meanwhile (see :mod:`provider.clients.connections`).
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionResetError(f"{what} closed the connection without answering") from None
        first = exc.partial.split(b"\r\n", 1)[0].decode("latin-1")
        raise ProtocolError(f"{what} sent no valid HTTP response (first line {first[:80]!r})") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"{what} sent a response head longer than the stream's limit") from None
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not (parts[1].isascii() and parts[1].isdigit()) or not parts[0].startswith("HTTP/"):
        raise ProtocolError(f"{what} sent no valid HTTP response (first line {status_line[:80]!r})")
    found: dict[str, str] = {}
    for line in fields:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            if key == "content-length" and key in found and found[key] != value.strip():
                raise ProtocolError(f"{what} sent two different Content-Length fields")
            found[key] = value.strip()
    kept = parts[0] == "HTTP/1.1" and "close" not in found.get("connection", "").lower()
    return Response(int(parts[1]), found, reader, writer, what, keep_alive=kept)


async def open_response(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    *,
    host: str,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    what: str,
) -> Response:
    """Send one request and read the response's head.

    ``what`` names the peer in errors, e.g. ``"agent http://a:9400"``. The caller owns the
    returned response and closes it (or, kept alive and read to its end, reuses the stream); on
    error the stream is closed here.
    """
    try:
        writer.write(request_bytes(method, path, host=host, headers=headers, body=body))
        return await read_head(reader, writer, what)
    except BaseException:
        writer.close()
        raise


def decode_json(content: bytes, what: str) -> Any:
    try:
        return json.loads(content)
    except ValueError as exc:
        raise ProtocolError(f"{what} sent invalid JSON ({exc})") from exc
