"""The HTTP/1.1 reader, byte for byte: how each kind of body ends, and what is refused."""

from __future__ import annotations

import asyncio

import pytest

from provider.clients.http11 import read_head, request_bytes
from provider.errors import ProtocolError


class _Writer:
    """The write side is not used by the reader: only closed."""

    closed = False

    def close(self) -> None:
        self.closed = True


async def _answer(data: bytes, limit: int = 1 << 20, eof: bool = True
                  ) -> tuple[int, bytes, bool, bytes]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    response = await read_head(reader, _Writer(), "engine E")  # type: ignore[arg-type]
    body = await response.body(limit)
    rest = reader._buffer  # what the next answer on this connection would start with
    return response.status, body, response.reusable, bytes(rest)


def run(data: bytes, **kwargs: object) -> tuple[int, bytes, bool, bytes]:
    return asyncio.run(_answer(data, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "body", "reusable"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT", b"hello", True, id="content-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length:0\r\n\r\nNEXT", b"", True, id="empty"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
                     b"hello world", True, id="chunked"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n"
                     b"A ; x\r\n0123456789\r\n0;last\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\nNEXT",
                     b"hello0123456789", True, id="chunked-extensions-trailers"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\nNEXT",
                     b"ok", True, id="chunked-wins-over-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokNEXT", b"ok", False,
                     id="connection-close"),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nokNEXT", b"ok", False, id="http10-length"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\nall of it\r\nto the end", b"all of it\r\nto the end", False,
                     id="close-delimited"),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\nNEXT", b"", True, id="no-content"),
        pytest.param(b"HTTP/1.1 304 Not Modified\r\n\r\nNEXT", b"", True, id="not-modified"),
    ],
)
def test_a_body_ends_where_its_framing_says(data: bytes, body: bytes, reusable: bool) -> None:
    status, got, kept, rest = run(data)
    assert (got, kept) == (body, reusable)
    if reusable:
        assert rest == b"NEXT"  # nothing of the next answer was read


def test_a_chunked_body_is_read_as_it_arrives_chunk_by_chunk() -> None:
    async def main() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        response = await read_head(reader, _Writer(), "engine E")  # type: ignore[arg-type]
        got = [await response.read()]
        reader.feed_data(b"2\r\nde\r\n0\r\n\r\n")
        got += [await response.read(), await response.read()]
        return got
    assert asyncio.run(main()) == [b"abc", b"de", b""]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "5 bytes before the end",
                     id="truncated-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", "in the middle",
                     id="truncated-chunk"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "in the middle",
                     id="no-last-chunk"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", "invalid chunk size",
                     id="bad-chunk-size"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n", "invalid chunk size",
                     id="prefixed-chunk-size"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
                     "chunk longer than its size", id="chunk-overrun"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unknown transfer encoding",
                     id="unknown-encoding"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length", id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "two different",
                     id="two-lengths"),
        pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", "no valid HTTP response", id="not-http"),
        pytest.param(b"HTTP/1.1 20", "no valid HTTP response", id="truncated-head"),
    ],
)
def test_a_broken_answer_is_a_protocol_error_naming_the_peer(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=f"engine E.*{message}"):
        run(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a", id="announced"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n5\r\n6789a\r\n0\r\n\r\n",
                     id="chunked"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\n0123456789a", id="close-delimited"),
    ],
)
def test_a_body_over_the_limit_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="more than 10 bytes"):
        run(data, limit=10)


def test_a_connection_closed_before_any_answer_is_a_reset_to_retry() -> None:
    with pytest.raises(ConnectionResetError, match="without answering"):
        run(b"")


@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        pytest.param("GET", None, b"GET /p HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n"
                     b"Connection: keep-alive\r\n\r\n", id="get"),
        pytest.param("POST", None, b"POST /p HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n"
                     b"Connection: keep-alive\r\nContent-Length: 0\r\n\r\n", id="post-empty"),
        pytest.param("POST", {"a": 1}, b"POST /p HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n"
                     b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
                     b"{\"a\": 1}", id="post-json"),
    ],
)
def test_requests(method: str, body: object, expected: bytes) -> None:
    assert request_bytes(method, "/p", host="h", body=body) == expected
