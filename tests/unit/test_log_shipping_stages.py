"""Pure stages of log shipping: resume and dedup, the live rate, the archive digest, the spool."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from provider.logs.archive import ChunkedArchive, StreamDigest, encode_record
from provider.logs.follow import Frame, Resume, docker_since, follow_frames
from provider.logs.lines import LogLine, TruncatedStream, assemble_lines
from provider.logs.rate import LiveRate
from provider.logs.spool import Spool

T1, T2, T3 = "2026-01-02T03:04:05.1Z", "2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:06Z"


def fr(ts: str, text: str, stream: int = 1) -> Frame:
    return stream, f"{ts} {text}".encode()


@pytest.mark.parametrize(
    "ts, since",
    [
        pytest.param(T1, "1767323045.100000000", id="trimmed-fraction"),
        pytest.param(T2, "1767323045.123456789", id="nanoseconds"),
        pytest.param(T3, "1767323046.000000000", id="no-fraction"),
    ],
)
def test_docker_since_converts_engine_timestamps(ts: str, since: str) -> None:
    assert docker_since(ts.encode()) == since


def test_docker_since_rejects_what_is_not_an_engine_timestamp() -> None:
    with pytest.raises(ValueError, match="RFC 3339 UTC"):
        docker_since(b"2026-01-02 03:04:05")


class Engine:
    """A container's output as the engine serves it: ``since`` is inclusive, streams may drop."""

    def __init__(self, frames: list[Frame], drops_after: list[int], running: list[bool | None]) -> None:
        self.frames = frames
        self.drops_after = list(drops_after)
        self.running = list(running)
        self.sinces: list[str | None] = []

    def open(self, since: str | None) -> Iterator[Frame]:
        self.sinces.append(since)
        start = 0
        if since is not None:
            start = next(i for i, f in enumerate(self.frames) if docker_since(f[1][: f[1].index(b" ")]) >= since)
        drop = self.drops_after.pop(0) if self.drops_after else None
        for n, frame in enumerate(self.frames[start:]):
            if drop is not None and n == drop:
                raise ConnectionResetError("engine went away")
            yield frame

    def is_running(self) -> bool | None:
        return self.running.pop(0) if self.running else False


FRAMES = [fr(T1, "a\n"), fr(T2, "b\n"), fr(T2, "c\n"), fr(T2, "d\n", 2), fr(T3, "e\n")]


@pytest.mark.parametrize(
    "drops_after, running, resumes, skipped",
    [
        pytest.param([], [False], 0, 1, id="no-drop-then-final-pass"),
        pytest.param([2], [True, False], 1, 2, id="drop-inside-a-timestamp"),
        pytest.param([1, 1, 1], [True, True, True, False], 3, 4, id="three-drops"),
        pytest.param([4], [False], 1, 3, id="drop-then-stopped"),
        pytest.param([2], [None], 0, 0, id="container-gone"),
    ],
)
def test_follow_resumes_without_loss_or_duplicates(
    drops_after: list[int], running: list[bool | None], resumes: int, skipped: int
) -> None:
    engine = Engine(FRAMES, drops_after, running)
    resume = Resume()
    got = list(follow_frames(engine.open, engine.is_running, resume, sleep=lambda s: None))
    expected = FRAMES[:2] if running == [None] else FRAMES
    assert got == expected
    assert (resume.resumes, resume.skipped) == (resumes, skipped)


def test_follow_waits_for_a_restarting_engine_then_gives_up() -> None:
    calls = {"n": 0}

    def is_running() -> bool | None:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionRefusedError("restarting")
        return False

    now = [0.0]
    got = list(follow_frames(lambda since: iter([FRAMES[0]]), is_running, Resume(), sleep=lambda s: None))
    assert got == [FRAMES[0]] and calls["n"] == 3

    def down() -> bool | None:
        raise ConnectionRefusedError("still down")

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(ConnectionRefusedError):
        list(follow_frames(lambda since: iter(()), down, Resume(), engine_wait_s=5, sleep=sleep, clock=lambda: now[0]))


def test_a_line_cut_by_a_drop_is_reassembled_exactly() -> None:
    frames = [fr(T1, "hel"), fr(T2, "lo\n")]

    def open_stream(since: str | None) -> Iterator[Frame]:
        if since is None:
            yield frames[0]
            raise TruncatedStream("cut")
        # since is inclusive: from T1 the first frame comes again
        yield from (f for f in frames if docker_since(f[1].split(b" ")[0]) >= since)

    running = iter([True, False])
    lines = list(assemble_lines(follow_frames(open_stream, lambda: next(running), Resume())))
    assert [(x.text, x.ts) for x in lines] == [("hello", T1)]


@pytest.mark.parametrize(
    "rate, times, allowed",
    [
        pytest.param(2, [0, 0, 0, 0.1, 0.5, 0.6, 2.0], [1, 1, 0, 0, 1, 0, 1], id="two-per-second"),
        pytest.param(0.5, [0, 0.1, 1.9, 2.1], [1, 0, 0, 1], id="one-every-two-seconds"),
        pytest.param(1000, [0] * 5, [1] * 5, id="burst-under-rate"),
    ],
)
def test_live_rate_is_a_token_bucket(rate: float, times: list[float], allowed: list[int]) -> None:
    limiter = LiveRate(rate)
    assert [int(limiter.allow(t)) for t in times] == allowed


@pytest.mark.parametrize("rate", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
def test_live_rate_rejects_non_positive_rates(rate: float) -> None:
    with pytest.raises(ValueError, match="use None to put every line"):
        LiveRate(rate)


@pytest.mark.parametrize(
    "pieces, lines, content",
    [
        pytest.param([("1", False), ("2", False)], 2, b"1\n2\n", id="whole-lines"),
        pytest.param([("ab", True), ("cd", True), ("e", False)], 1, b"abcde\n", id="joined-pieces"),
        pytest.param([("", False)], 1, b"\n", id="empty-line"),
        pytest.param([("é", False)], 1, "é\n".encode(), id="utf-8"),
    ],
)
def test_stream_digest_hashes_joined_lines(pieces: list[tuple[str, bool]], lines: int, content: bytes) -> None:
    digest = StreamDigest()
    for text, continued in pieces:
        digest.add(text.encode(), continued)
    assert digest.summary() == {"lines": lines, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


@pytest.mark.parametrize(
    "line, record",
    [
        pytest.param(LogLine("stdout", T1, "x y"), f"{T1} stdout x y\n", id="stdout"),
        pytest.param(LogLine("stderr", T2, "boom", True), f"{T2} stderr+ boom\n", id="continued-stderr"),
    ],
)
def test_encode_record(line: LogLine, record: str) -> None:
    assert encode_record(line, line.text.encode()) == record.encode()


class Log:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def info(self, msg: str, *args: object) -> None:
        self.messages.append(msg % args)

    warning = info


def test_archive_spools_while_storage_fails_and_uploads_when_it_answers(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the archive's directory should be: writes fail")
    now = [0.0]
    log = Log()
    archive = ChunkedArchive(
        ObjectStoragePath(f"file://{blocker}/run"), Spool(tmp_path / "spool"), log,
        chunk_s=1, retry_s=10, clock=lambda: now[0],
    )
    for i in range(5):
        now[0] = float(i)
        archive.add(LogLine("stdout", T1, str(i)))
    assert archive.spooled == 4 and archive.spool.pending() == 4
    assert "spooling to" in log.messages[0]
    blocker.unlink()  # storage answers again
    now[0] = 20.0
    manifest = archive.finish(exit_code=0)
    assert archive.spool.pending() == 0 and any("answers again" in m for m in log.messages)
    records = b"".join(p.read_bytes() for p in sorted((blocker / "run").glob("chunk-*.log")))
    assert records == b"".join(f"{T1} stdout {i}\n".encode() for i in range(5))
    stored = json.loads((blocker / "run" / "manifest.json").read_text())
    assert stored == manifest and manifest["lines"] == 5 and manifest["exit_code"] == 0
    assert manifest["sha256"] == hashlib.sha256(b"0\n1\n2\n3\n4\n").hexdigest()


def test_spool_flush_of_an_earlier_task_and_a_partial_entry(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    dest = ObjectStoragePath(f"file://{tmp_path}/out/a/chunk-000001.log")
    spool.put(dest, b"kept\n")
    (tmp_path / "spool" / "half.data").write_bytes(b"no .json yet: still being written")
    assert Spool(tmp_path / "spool").flush() == 1
    assert (tmp_path / "out/a/chunk-000001.log").read_bytes() == b"kept\n"
    assert spool.pending() == 0
