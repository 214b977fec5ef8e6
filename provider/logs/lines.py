"""Pure stages that turn Docker's log stream into tagged lines.

The Docker engine sends a container's output as *frames*: an 8-byte header (stream id, three
zero bytes, big-endian payload length) and the payload. Asked with ``timestamps=1``, every
payload starts with the engine's RFC 3339 nanosecond timestamp and a space. The engine cuts
lines longer than 16 KiB into several frames, the last of which ends with a newline.

These stages are generators that pull, so memory stays bounded by one frame plus one
pending line per stream, whatever the number of lines. They take bytes and return values;
no socket, logger or clock is touched here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

STDOUT, STDERR = 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
DEFAULT_MAX_LINE_BYTES = 64 * 1024
CONTINUATION_MARK = " [continued]"
_HEADER = struct.Struct(">BxxxL")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of container output.

    ``ts`` is the engine's timestamp of the line's first frame (RFC 3339, nanoseconds), used to
    resume a dropped stream. ``continued`` is true when the line was longer than the limit and
    the rest follows in the next :class:`LogLine` of the same stream.
    """

    stream: str
    ts: str
    text: str
    continued: bool = False

    def render(self) -> str:
        """The text as shown to people: a split line carries a visible continuation mark."""
        return self.text + CONTINUATION_MARK if self.continued else self.text


class FrameError(ValueError):
    """The byte stream is not Docker's multiplexed format (for example a TTY container)."""


class TruncatedStream(FrameError):
    """The stream stopped inside a frame: the connection dropped, the data may follow later."""


def dechunk(data: Iterable[bytes]) -> Iterator[bytes]:
    """Undo HTTP/1.1 chunked transfer coding, yielding whatever each read made available.

    The engine sends every log frame as its own HTTP chunk. Reading through http.client gives
    one chunk (a few dozen bytes) per call at a cost of microseconds each; decoding the chunk
    framing of a whole socket read here is several times cheaper and still never waits for a
    buffer to fill, so output stays live.
    """
    buf = bytearray()
    pos = 0
    left = 0  # payload bytes still to come in the current chunk
    crlf = False  # the CRLF that closes a chunk's payload is still to be skipped
    for piece in data:
        if pos:
            del buf[:pos]
            pos = 0
        buf += piece
        out = bytearray()
        end = len(buf)
        while pos < end:
            if left:
                take = min(left, end - pos)
                out += buf[pos : pos + take]
                pos += take
                left -= take
                crlf = not left
                continue
            if crlf:
                if end - pos < 2:
                    break
                pos += 2
                crlf = False
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise FrameError(f"bad HTTP chunk size line {bytes(buf[pos:eol])[:40]!r}") from None
            pos = eol + 2
            if size == 0:
                if out:
                    yield bytes(out)
                return
            left = size
        if out:
            yield bytes(out)


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


def split_timestamp(payload: bytes) -> tuple[str, bytes]:
    """Split ``b"2024-01-01T00:00:00.000000001Z text"`` into the timestamp and the text."""
    space = payload.find(b" ", 0, 40)
    if space < 20:
        return "", payload
    return payload[:space].decode("ascii", "replace"), payload[space + 1 :]


def assemble_lines(
    frames: Iterable[tuple[int, bytes]],
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[LogLine]:
    """Join timestamped frames into whole lines per stream.

    A partial line is held until its newline arrives; one that grows past ``max_line_bytes``
    is emitted in pieces marked ``continued``. Invalid UTF-8 becomes U+FFFD, never an error.
    A partial line left when the stream ends is emitted as it is.
    """
    if max_line_bytes < 4:
        raise ValueError(f"max_line_bytes must be at least 4, got {max_line_bytes}")
    pending: dict[int, bytearray] = {}
    pending_ts: dict[int, str] = {}
    for stream, payload in frames:
        ts, body = split_timestamp(payload)
        name = STREAM_NAMES.get(stream, "stdout")
        parts = body.split(b"\n")
        # Every element but the last ends a line; the last is the start of the next one.
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and not part:
                break
            buf = pending.get(stream)
            if buf is None:
                if not last and len(part) <= max_line_bytes:
                    # The common case, one whole line in one frame: no copy into a buffer.
                    yield LogLine(name, ts, part.decode("utf-8", "replace"))
                    continue
                buf = pending[stream] = bytearray()
                pending_ts[stream] = ts
            buf += part
            while len(buf) > max_line_bytes:
                cut = _utf8_boundary(buf, max_line_bytes)
                yield LogLine(name, pending_ts[stream], buf[:cut].decode("utf-8", "replace"), True)
                del buf[:cut]
                pending_ts[stream] = ts
            if not last:
                yield LogLine(name, pending_ts.pop(stream), buf.decode("utf-8", "replace"))
                del pending[stream]
    for stream, buf in pending.items():
        if buf:
            yield LogLine(STREAM_NAMES.get(stream, "stdout"), pending_ts[stream], buf.decode("utf-8", "replace"))


def _utf8_boundary(buf: bytearray, limit: int) -> int:
    """The largest cut ``<= limit`` that does not split a UTF-8 sequence (when it is valid)."""
    cut = limit
    for _ in range(3):
        if cut > 0 and (buf[cut] & 0xC0) == 0x80:
            cut -= 1
        else:
            return cut
    return cut if cut > 0 else limit
