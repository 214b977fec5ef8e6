"""Frame parsing and line assembly: the pure stages of log shipping."""

from __future__ import annotations

import struct

import pytest

from provider.logs.lines import (
    CONTINUATION_MARK,
    FrameError,
    LogLine,
    assemble_lines,
    dechunk,
    parse_frames,
    split_timestamp,
)

TS = "2026-01-02T03:04:05.123456789Z"


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def ts_frame(stream: int, text: bytes, ts: str = TS) -> bytes:
    return frame(stream, ts.encode() + b" " + text)


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


@pytest.mark.parametrize(
    "payload, expected",
    [
        pytest.param(f"{TS} hello".encode(), (TS, b"hello"), id="plain"),
        pytest.param(f"{TS} ".encode(), (TS, b""), id="empty-text"),
        pytest.param(b"no timestamp here", ("", b"no timestamp here"), id="no-timestamp"),
    ],
)
def test_split_timestamp(payload: bytes, expected: tuple[str, bytes]) -> None:
    assert split_timestamp(payload) == expected


def lines_of(frames: list[tuple[int, bytes]], max_line_bytes: int = 64 * 1024) -> list[LogLine]:
    return list(assemble_lines(frames, max_line_bytes))


@pytest.mark.parametrize(
    "frames, expected",
    [
        pytest.param(
            [(1, f"{TS} a\n".encode()), (2, f"{TS} b\n".encode())],
            [("stdout", "a", False), ("stderr", "b", False)],
            id="one-line-per-frame",
        ),
        pytest.param(
            [(1, f"{TS} par".encode()), (2, f"{TS} err\n".encode()), (1, f"{TS} tial\n".encode())],
            [("stderr", "err", False), ("stdout", "partial", False)],
            id="partial-held-per-stream",
        ),
        pytest.param([(1, f"{TS} \n".encode())], [("stdout", "", False)], id="empty-line"),
        pytest.param(
            [(1, f"{TS} a\nb\n".encode())], [("stdout", "a", False), ("stdout", "b", False)], id="two-in-one"
        ),
        pytest.param([(1, f"{TS} tail".encode())], [("stdout", "tail", False)], id="unterminated-at-end"),
        pytest.param(
            [(1, f"{TS} ".encode() + b"\xff\xfebad\n")], [("stdout", "\ufffd\ufffdbad", False)], id="invalid-utf8"
        ),
        pytest.param(
            [(1, f"{TS} 0123456789\n".encode())],
            [("stdout", "01234567", True), ("stdout", "89", False)],
            id="split-long-line",
        ),
        pytest.param(
            [(1, f"{TS} 01234".encode()), (1, f"{TS} 56789abcdefgh\n".encode())],
            [("stdout", "01234567", True), ("stdout", "89abcdef", True), ("stdout", "gh", False)],
            id="split-long-partial",
        ),
    ],
)
def test_assemble_lines(frames: list[tuple[int, bytes]], expected: list[tuple[str, str, bool]]) -> None:
    got = [(line.stream, line.text, line.continued) for line in lines_of(frames, max_line_bytes=8)]
    assert got == expected


def test_split_never_cuts_a_utf8_character() -> None:
    text = "ééééé"  # 2 bytes each: a cut at 5 bytes must fall back to 4
    out = lines_of([(1, f"{TS} {text}\n".encode())], max_line_bytes=5)
    assert [line.text for line in out] == ["éé", "éé", "é"]
    assert "".join(line.text for line in out) == text


def test_line_keeps_timestamp_of_its_first_frame() -> None:
    later = "2026-01-02T03:04:06.000000000Z"
    out = lines_of([(1, f"{TS} ab".encode()), (1, f"{later} cd\n".encode())])
    assert out == [LogLine("stdout", TS, "abcd")]


def test_render_marks_continuation() -> None:
    assert LogLine("stdout", TS, "abc", continued=True).render() == "abc" + CONTINUATION_MARK
    assert LogLine("stdout", TS, "abc").render() == "abc"


def test_max_line_bytes_must_be_sane() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        lines_of([(1, b"x\n")], max_line_bytes=2)


def http_chunks(*payloads: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\n\r\n"


def test_dechunk_survives_every_cut_position() -> None:
    data = http_chunks(b"hello", b"x" * 300, b"\r\n inside", b"!")
    expected = b"hello" + b"x" * 300 + b"\r\n inside!"
    for cut in range(len(data) + 1):
        assert b"".join(dechunk([data[:cut], data[cut:]])) == expected, cut
    assert b"".join(dechunk(bytes([b]) for b in data)) == expected


def test_dechunk_rejects_a_bad_size_line() -> None:
    with pytest.raises(FrameError, match="bad HTTP chunk size"):
        list(dechunk([b"zz\r\nabc\r\n"]))
