"""The Docker engine's multiplexed output stream, as ``(stream id, payload)`` frames.

A container run without a TTY sends its stdout and stderr over one connection as frames: an
8-byte header (stream id, three zero bytes, big-endian payload length) and the payload. This is
the engine's wire format, so it lives with the engine client; cutting payloads into lines is the
log pipeline's business (:mod:`provider.logs.lines`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from provider.clients.engine_sync import Stream
from provider.errors import FrameError, TruncatedStream

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")


def parse_frames(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Reassemble ``(stream id, payload)`` frames from arbitrarily cut chunks of bytes."""
    buf = bytearray()
    pos = 0
    for chunk in chunks:
        if pos:
            del buf[:pos]
            pos = 0
        buf += chunk
        end = len(buf)
        while end - pos >= _HEADER.size:
            stream, size = _HEADER.unpack_from(buf, pos)
            if stream not in (0, STDOUT, STDERR):
                raise FrameError(
                    f"unexpected stream id {stream} in the log stream; containers must run "
                    "without a TTY (tty=False) for stdout and stderr to be told apart"
                )
            if end - pos - _HEADER.size < size:
                break
            start = pos + _HEADER.size
            yield stream or STDOUT, bytes(buf[start : start + size])
            pos = start + size
    if len(buf) - pos:
        raise TruncatedStream(f"log stream ended inside a frame ({len(buf) - pos} bytes left over)")



class Frames:
    """A container's output as ``(stream id, payload)`` frames, over a stream that can be closed
    before it is read (:class:`~provider.clients.engine_sync.Stream`)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._frames = parse_frames(stream)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return self._frames

    def close(self) -> None:
        self.stream.close()
