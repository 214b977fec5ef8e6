"""Frame parsing and line assembly: the pure stages of log shipping."""

from __future__ import annotations

import re
import struct

import pytest

from provider.clients.frames import parse_frames
from provider.errors import FrameError
from provider.logs.lines import (
    CONTINUATION_MARK,
    LineBatch,
    arrival_time,
    assemble_lines,
)


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_parse_frames_survives_every_cut_position() -> None:
    data = frame(1, b"hello\n") + frame(2, b"oops\n") + frame(1, b"") + frame(1, b"x" * 300)
    expected = [(1, b"hello\n"), (2, b"oops\n"), (1, b""), (1, b"x" * 300)]
    for cut in range(len(data) + 1):
        assert list(parse_frames([data[:cut], data[cut:]])) == expected, cut
    assert list(parse_frames(bytes([b]) for b in data)) == expected


@pytest.mark.parametrize(
    "data, message",
    [
        pytest.param(frame(1, b"abc")[:-1], "ended inside a frame", id="truncated"),
        pytest.param(b"hello world, a TTY stream", "without a TTY", id="tty-stream"),
    ],
)
def test_parse_frames_rejects_what_is_not_docker_framing(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        list(parse_frames([data]))


class Clock:
    """Arrival times T1, T2, ... one per frame, so a test can tell which frame stamped a line."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"T{self.n}"


def batches_of(frames: list[tuple[int, bytes]], max_line_bytes: int = 64 * 1024) -> list[LineBatch]:
    return list(assemble_lines(frames, Clock(), max_line_bytes))


def lines_of(frames: list[tuple[int, bytes]], max_line_bytes: int = 64 * 1024) -> list[tuple[str, str, bool]]:
    return [(b.stream, t, b.continued) for b in batches_of(frames, max_line_bytes) for t in b.texts]


@pytest.mark.parametrize(
    "frames, expected",
    [
        pytest.param([(1, b"a\n"), (2, b"b\n")], [("stdout", "a", False), ("stderr", "b", False)], id="one-per-frame"),
        pytest.param(
            [(1, b"par"), (2, b"err\n"), (1, b"tial\n")],
            [("stderr", "err", False), ("stdout", "partial", False)],
            id="partial-held-per-stream",
        ),
        pytest.param([(1, b"\n")], [("stdout", "", False)], id="empty-line"),
        pytest.param([(1, b"a\n\nb\n")], [("stdout", "a", False), ("stdout", "", False), ("stdout", "b", False)],
                     id="many-in-one-with-empty"),
        pytest.param([(1, b"a\nb"), (1, b"c\nd\n")],
                     [("stdout", "a", False), ("stdout", "bc", False), ("stdout", "d", False)], id="cut-anywhere"),
        pytest.param([(1, b"tail")], [("stdout", "tail", False)], id="unterminated-at-end"),
        pytest.param([(1, b"\xff\xfebad\n")], [("stdout", "\ufffd\ufffdbad", False)], id="invalid-utf8"),
        pytest.param([(1, b"\xc3"), (1, b"\xa9\n")], [("stdout", "\u00e9", False)], id="utf8-cut-by-frames"),
        pytest.param(
            [(1, b"0123456789\n")], [("stdout", "01234567", True), ("stdout", "89", False)], id="split-long-line"
        ),
        pytest.param(
            [(1, b"ok\n0123456789\nfine\n")],
            [("stdout", "ok", False), ("stdout", "01234567", True), ("stdout", "89", False), ("stdout", "fine", False)],
            id="long-line-among-short-ones",
        ),
        pytest.param(
            [(1, b"01234"), (1, b"56789abcdefgh\n")],
            [("stdout", "01234567", True), ("stdout", "89abcdef", True), ("stdout", "gh", False)],
            id="split-long-partial",
        ),
    ],
)
def test_assemble_lines(frames: list[tuple[int, bytes]], expected: list[tuple[str, str, bool]]) -> None:
    assert lines_of(frames, max_line_bytes=8) == expected


def test_a_payload_of_many_lines_is_one_batch() -> None:
    assert batches_of([(1, b"1\n2\n3\n4")]) == [
        LineBatch("stdout", "T1", ["1", "2", "3"]),
        LineBatch("stdout", "T1", ["4"]),  # unterminated: held, then flushed at the end
    ]


def test_split_never_cuts_a_utf8_character() -> None:
    text = "ééééé"  # 2 bytes each: a cut at 5 bytes must fall back to 4
    out = lines_of([(1, f"{text}\n".encode())], max_line_bytes=5)
    assert [t for _, t, _ in out] == ["éé", "éé", "é"]


def test_line_keeps_arrival_time_of_its_first_frame() -> None:
    assert batches_of([(1, b"ab"), (1, b"cd\nef\n")]) == [
        LineBatch("stdout", "T1", ["abcd"]), LineBatch("stdout", "T2", ["ef"]),
    ]


def test_rendered_marks_continuation() -> None:
    assert LineBatch("stdout", "T", ["abc"], continued=True).rendered() == ["abc" + CONTINUATION_MARK]
    assert LineBatch("stdout", "T", ["a", "b"]).rendered() == ["a", "b"]


def test_max_line_bytes_must_be_sane() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        lines_of([(1, b"x\n")], max_line_bytes=2)


def test_arrival_time_is_rfc3339_utc_with_nanoseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", arrival_time())
