"""Pure stages that turn a container's output frames into batches of tagged lines.

The Docker engine sends a container's output as *frames* (:mod:`provider.clients.frames`). On
the attach stream a payload is whatever the container wrote in one go (often many lines, or
part of one); on the logs endpoint it is one logged message. Lines are cut here, per stream,
at ``\n``.

The unit passed on is a :class:`LineBatch`, the whole lines of one payload, so the work per
line is a slice of bulk ``bytes.split``/``decode``/``join`` rather than a Python loop: a
training job that prints a million lines must not cost more than the stock operator does.
These stages are generators that pull, so memory stays bounded by one frame plus one pending
line per stream, whatever the number of lines. They take bytes and return values; the only
outside input is the ``now`` function that stamps each batch with its arrival time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

from provider.clients.frames import STDERR, STDOUT

STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
DEFAULT_MAX_LINE_BYTES = 64 * 1024
CONTINUATION_MARK = " [continued]"


@dataclass(frozen=True, slots=True)
class LineBatch:
    """Consecutive lines of one stream that arrived together.

    ``ts`` is the arrival time of the payload that completed them (RFC 3339 UTC, nanoseconds),
    or of the payload that started a line cut in pieces. ``continued`` is true when the batch
    is one piece of a line longer than the limit: its single text goes on in the next batch of
    the same stream. No text contains a newline.
    """

    stream: str
    ts: str
    texts: list[str]
    continued: bool = False

    def rendered(self) -> list[str]:
        """The texts as shown to people: a cut piece carries a visible continuation mark."""
        return [self.texts[0] + CONTINUATION_MARK] if self.continued else self.texts


def assemble_lines(
    frames: Iterable[tuple[int, bytes]],
    now: Callable[[], str],
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[LineBatch]:
    """Cut frames into lines per stream, in batches.

    A partial line is held until its newline arrives; one that grows past ``max_line_bytes``
    is emitted in pieces marked ``continued``, cut at a UTF-8 character boundary. Invalid UTF-8
    becomes U+FFFD, never an error. A partial line left when the stream ends is emitted as it
    is. Decoding whole lines together is exact: ``\n`` never occurs inside a UTF-8 sequence.
    """
    if max_line_bytes < 4:
        raise ValueError(f"max_line_bytes must be at least 4, got {max_line_bytes}")
    pending: dict[int, bytearray] = {}
    pending_ts: dict[int, str] = {}
    for stream, payload in frames:
        ts = now()
        name = STREAM_NAMES.get(stream, "stdout")
        end = payload.rfind(b"\n")
        if end < 0:
            buf = pending.get(stream)
            if buf is None:
                buf = pending[stream] = bytearray()
                pending_ts[stream] = ts
            buf += payload
            if len(buf) > max_line_bytes:
                pending_ts[stream] = yield from _cut(name, pending_ts[stream], ts, buf, max_line_bytes)
            continue
        whole = payload[:end]
        buf = pending.pop(stream, None)
        if buf is not None:  # the first line completes the pending one
            first = whole.find(b"\n")
            buf += whole if first < 0 else whole[:first]
            line_ts = pending_ts.pop(stream)
            if len(buf) > max_line_bytes:
                line_ts = yield from _cut(name, line_ts, ts, buf, max_line_bytes)
            yield LineBatch(name, line_ts, [buf.decode("utf-8", "replace")])
            if first >= 0:
                yield from _whole_lines(name, ts, whole[first + 1 :], max_line_bytes)
        else:
            yield from _whole_lines(name, ts, whole, max_line_bytes)
        rest = payload[end + 1 :]
        if rest:
            pending[stream] = bytearray(rest)
            pending_ts[stream] = ts
            if len(rest) > max_line_bytes:
                pending_ts[stream] = yield from _cut(name, ts, ts, pending[stream], max_line_bytes)
    for stream, buf in pending.items():
        if buf:
            yield LineBatch(STREAM_NAMES.get(stream, "stdout"), pending_ts[stream], [buf.decode("utf-8", "replace")])


def _whole_lines(name: str, ts: str, whole: bytes, max_line_bytes: int) -> Iterator[LineBatch]:
    """``whole``: complete lines joined by newlines, the last one's newline removed."""
    if len(whole) <= max_line_bytes:
        yield LineBatch(name, ts, whole.decode("utf-8", "replace").split("\n"))
        return
    parts = whole.split(b"\n")
    if max(map(len, parts)) <= max_line_bytes:
        yield LineBatch(name, ts, whole.decode("utf-8", "replace").split("\n"))
        return
    for part in parts:
        buf = bytearray(part)
        line_ts = ts
        if len(buf) > max_line_bytes:
            line_ts = yield from _cut(name, ts, ts, buf, max_line_bytes)
        yield LineBatch(name, line_ts, [buf.decode("utf-8", "replace")])


def _cut(name: str, ts: str, next_ts: str, buf: bytearray, max_line_bytes: int) -> Generator[LineBatch, None, str]:
    """Emit pieces of an over-long line until ``buf`` fits; returns the rest's timestamp."""
    while len(buf) > max_line_bytes:
        cut = _utf8_boundary(buf, max_line_bytes)
        yield LineBatch(name, ts, [buf[:cut].decode("utf-8", "replace")], continued=True)
        del buf[:cut]
        ts = next_ts
    return ts


def _utf8_boundary(buf: bytearray, limit: int) -> int:
    """The largest cut ``<= limit`` that does not split a UTF-8 sequence (when it is valid)."""
    cut = limit
    for _ in range(3):
        if cut > 0 and (buf[cut] & 0xC0) == 0x80:
            cut -= 1
        else:
            return cut
    return cut if cut > 0 else limit


def arrival_time() -> str:
    """Now as an RFC 3339 UTC timestamp with nanoseconds: the ``now`` of :func:`assemble_lines`."""
    ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"
