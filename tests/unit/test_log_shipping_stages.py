"""Pure stages of log shipping: resume and dedup, the live rate, the archive digest, the spool."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from provider.errors import TruncatedStream
from provider.logs.archive import ChunkedArchive, StreamDigest, encode_records
from provider.logs.follow import Frame, Resume, Status, follow_frames
from provider.logs.lines import LineBatch, assemble_lines
from provider.logs.rate import LiveRate
from provider.logs.spool import Spool

T1, T2 = "2026-01-02T03:04:05.100000000Z", "2026-01-02T03:04:06.000000000Z"


class Engine:
    """A container's output as the engine serves it: the attach stream (large payloads, may
    drop), and the log, read from its start (one payload per line, may drop too)."""

    def __init__(self, out: bytes, err: bytes, drops: list[int], statuses: list[Status | None]) -> None:
        self.log = [(1, line) for line in out.splitlines(keepends=True)] + [
            (2, line) for line in err.splitlines(keepends=True)
        ]
        self.attach = [(1, out[:7]), (2, err), (1, out[7:])]
        self.drops = list(drops)  # frames each stream delivers before it breaks (-1: never)
        self.statuses = list(statuses)
        self.opened: list[bool] = []

    def _serve(self, frames: list[Frame]) -> Iterator[Frame]:
        drop = self.drops.pop(0) if self.drops else -1
        for n, frame in enumerate(frames):
            if n == drop:
                raise ConnectionResetError("engine went away")
            yield frame

    def attached(self) -> Iterator[Frame]:
        return self._serve(self.attach)

    def open_log(self, follow: bool) -> Iterator[Frame]:
        self.opened.append(follow)
        return self._serve(self.log)

    def status(self) -> Status | None:
        return self.statuses.pop(0) if self.statuses else Status(running=False, exit_code=0)


OUT, ERR = b"line 1\nline 2\nline 3\n", b"oops\n"
EXITED, KILLED, RUNNING = Status(False, 0), Status(False, 137), Status(True)


def followed(engine: Engine, resume: Resume) -> dict[int, bytes]:
    got: dict[int, bytes] = {1: b"", 2: b""}
    for sid, payload in follow_frames(engine.attached(), engine.open_log, engine.status, resume,
                                      sleep=lambda s: None):
        got[sid] += payload
    return got


@pytest.mark.parametrize(
    "drops, statuses, opened, resumes",
    [
        pytest.param([], [EXITED], [], 0, id="attach-alone-when-the-container-exited-by-itself"),
        pytest.param([], [KILLED], [False], 0, id="killed-a-last-pass-over-the-log"),
        pytest.param([1], [RUNNING, EXITED], [True, False], 1, id="drop-then-follow-the-log"),
        pytest.param([2, 3], [RUNNING, RUNNING, EXITED], [True, True, False], 2, id="the-log-drops-too"),
        pytest.param([1], [EXITED], [False], 1, id="drop-after-exit"),
    ],
)
def test_follow_resumes_without_loss_or_duplicates(
    drops: list[int], statuses: list[Status | None], opened: list[bool], resumes: int
) -> None:
    engine, resume = Engine(OUT, ERR, drops, statuses), Resume()
    assert followed(engine, resume) == {1: OUT, 2: ERR}
    assert engine.opened == opened and resume.resumes == resumes
    assert resume.passed == {1: len(OUT), 2: len(ERR)}


@pytest.mark.parametrize(
    "statuses, opened", [([RUNNING, EXITED], [True, False]), ([EXITED], [False])], ids=["running", "exited"]
)
def test_an_adopted_container_is_followed_from_its_log_after_what_was_passed_on(
    statuses: list[Status | None], opened: list[bool]
) -> None:
    engine, resume = Engine(OUT, ERR, [], statuses), Resume(passed={1: len(b"line 1\n"), 2: 0})
    got: dict[int, bytes] = {1: b"", 2: b""}
    for sid, payload in follow_frames(None, engine.open_log, engine.status, resume, sleep=lambda s: None):
        got[sid] += payload
    assert got == {1: b"line 2\nline 3\n", 2: ERR} and engine.opened == opened


def test_follow_ends_when_the_container_is_gone() -> None:
    engine = Engine(OUT, ERR, [1], [None])
    assert followed(engine, Resume()) == {1: OUT[:7], 2: b""}
    assert engine.opened == []


def test_a_clean_end_waits_for_the_engine_to_report_the_exit() -> None:
    engine = Engine(OUT, ERR, [], [RUNNING, RUNNING, EXITED])
    assert followed(engine, Resume()) == {1: OUT, 2: ERR}
    assert engine.opened == []  # not mistaken for a drop


def test_resume_skips_exactly_the_bytes_already_passed_inside_a_payload() -> None:
    resume = Resume()
    assert list(resume.frames([(1, b"abc"), (2, b"x")], from_start=False)) == [(1, b"abc"), (2, b"x")]
    again = list(resume.frames([(1, b"a"), (1, b"bcde"), (2, b"xy")], from_start=True))
    assert again == [(1, b"de"), (2, b"y")]
    assert resume.skipped == 4 and resume.passed == {1: 5, 2: 2}


def test_follow_waits_for_a_restarting_engine_then_gives_up() -> None:
    calls = {"n": 0}

    def status() -> Status | None:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionRefusedError("restarting")
        return EXITED

    got = list(follow_frames(iter([(1, b"a\n")]), lambda f: iter(()), status, Resume(), sleep=lambda s: None))
    assert got == [(1, b"a\n")] and calls["n"] == 3

    def down() -> Status | None:
        raise ConnectionRefusedError("still down")

    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(ConnectionRefusedError):
        list(follow_frames(iter(()), lambda f: iter(()), down, Resume(), engine_wait_s=5, sleep=sleep,
                           clock=lambda: now[0]))


def test_a_line_cut_by_a_drop_is_reassembled_exactly() -> None:
    def attached() -> Iterator[Frame]:
        yield 1, b"hel"
        raise TruncatedStream("cut")

    statuses = iter([RUNNING, EXITED])
    frames = follow_frames(attached(), lambda follow: iter([(1, b"hello\n")]), lambda: next(statuses), Resume(),
                           sleep=lambda s: None)
    assert [(b.texts, b.ts) for b in assemble_lines(frames, lambda: "T")] == [(["hello"], "T")]


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
        pytest.param([(["1", "2"], False)], 2, b"1\n2\n", id="whole-lines"),
        pytest.param([(["ab"], True), (["cd"], True), (["e"], False)], 1, b"abcde\n", id="joined-pieces"),
        pytest.param([([""], False)], 1, b"\n", id="empty-line"),
        pytest.param([(["é"], False)], 1, "é\n".encode(), id="utf-8"),
    ],
)
def test_stream_digest_hashes_joined_lines(pieces: list[tuple[list[str], bool]], lines: int, content: bytes) -> None:
    digest = StreamDigest()
    for texts, continued in pieces:
        digest.add("\n".join(texts).encode(), len(texts), continued)
    assert digest.summary() == {"lines": lines, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


@pytest.mark.parametrize(
    "batch, records",
    [
        pytest.param(LineBatch("stdout", T1, ["x y"]), f"{T1} stdout x y\n", id="stdout"),
        pytest.param(LineBatch("stdout", T1, ["a", "", "b"]), f"{T1} stdout a\n{T1} stdout \n{T1} stdout b\n",
                     id="several-lines"),
        pytest.param(LineBatch("stderr", T2, ["boom"], True), f"{T2} stderr+ boom\n", id="continued-stderr"),
    ],
)
def test_encode_records(batch: LineBatch, records: str) -> None:
    assert encode_records(batch, "\n".join(batch.texts).encode()) == records.encode()


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
        archive.add(LineBatch("stdout", T1, [str(i)]))
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
    spool.put(ObjectStoragePath(f"file://{tmp_path}/out/a"), "chunk-000001.log", b"kept\n")
    (tmp_path / "spool" / "half.data").write_bytes(b"no .json yet: still being written")
    assert Spool(tmp_path / "spool").flush() == 1
    assert (tmp_path / "out/a/chunk-000001.log").read_bytes() == b"kept\n"
    assert spool.pending() == 0


def test_an_archive_carried_on_by_a_later_try_equals_one_written_at_once(tmp_path: Path) -> None:
    batches = [LineBatch("stdout", T1, ["1", "2"]), LineBatch("stderr", T1, ["warn"]),
               LineBatch("stdout", T2, ["x" * 5], True), LineBatch("stdout", T2, ["y", "3"])]

    def archive(where: str) -> ChunkedArchive:
        return ChunkedArchive(ObjectStoragePath(f"file://{tmp_path}/{where}"), Spool(tmp_path / "spool"), Log(),
                              chunk_s=3600)

    whole = archive("whole")
    for batch in batches:
        whole.add(batch)
        whole.flush()
    expected = whole.finish(exit_code=0)

    first = archive("split")  # the first try: killed after two chunks, before its manifest
    for batch in batches[:2]:
        first.add(batch)
        first.flush()
    first._stop.set()
    later = archive("split")
    assert later.carry_on() == {"stdout": len(b"1\n2\n"), "stderr": len(b"warn\n")}
    for batch in batches[2:]:
        later.add(batch)
        later.flush()
    carried = later.finish(exit_code=0)
    assert carried == expected and carried["sha256"] == hashlib.sha256(b"1\n2\nxxxxxy\n3\n").hexdigest()
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert archive("empty").carry_on() == {"stdout": 0, "stderr": 0}
