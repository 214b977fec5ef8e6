"""Follow a container's frames across dropped streams, without loss and without duplicates.

The live source is the **attach** stream, opened before the container starts: it carries
what the container writes as it writes it, in large payloads, and it is what the stock
DockerOperator reads too. It ends when the container's output is closed, or early when the
engine restarts or the connection drops while the container may go on printing.

Then following goes on from the engine's **log** of the container (the logs endpoint), which
holds everything printed so far. That log is read from its start, and :class:`Resume` skips
per stream exactly as many bytes as were already passed on, so nothing is lost or repeated;
skipping works on bytes below line assembly, so a line that a drop cut in the middle is
reassembled exactly. (The engine's json-file log stores text: output that is not valid UTF-8
can come back altered, which shifts the skip after a drop; valid text resumes exactly.)

When the attach stream ends cleanly and the container exited by itself (exit code below
128), everything has been read. When it was killed by a signal, possibly by an engine that
shut down, one last pass over the log picks up anything the attach stream did not deliver.
A container that is gone (an engine restart without live-restore may remove it) ends
following too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from provider.errors import TruncatedStream
from provider.clients.frames import STDERR, STDOUT

Frame = tuple[int, bytes]
# Opens the container's log from its start; True: follow it while the container runs.
OpenLog = Callable[[bool], Iterable[Frame]]


@dataclass(frozen=True, slots=True)
class Status:
    """What following needs to know of the container after a stream ended."""

    running: bool
    exit_code: int | None = None

    @property
    def exited_by_itself(self) -> bool:
        return not self.running and self.exit_code is not None and 0 <= self.exit_code < 128


# The container's status, None once it no longer exists; raises ``OSError`` (the engine
# client's HostUnreachable is one) while the engine does not answer.
GetStatus = Callable[[], Status | None]
SETTLE_S = 2.0
"""How long a cleanly ended attach stream may wait for the engine to report the exit."""


@dataclass(slots=True)
class Resume:
    """Bytes passed on per stream; ``skipped`` bytes and ``resumes`` go into the manifest."""

    passed: dict[int, int] = field(default_factory=lambda: {STDOUT: 0, STDERR: 0})
    skipped: int = 0
    resumes: int = 0

    def frames(self, stream: Iterable[Frame], from_start: bool) -> Iterator[Frame]:
        """Pass one stream's frames on; one read ``from_start`` skips what was passed before."""
        skip = dict(self.passed) if from_start else {}
        passed = self.passed
        for sid, payload in stream:
            sid = sid or STDOUT
            left = skip.get(sid, 0)
            if left:
                size = len(payload)
                if size <= left:
                    skip[sid] = left - size
                    self.skipped += size
                    continue
                payload = payload[left:]
                skip[sid] = 0
                self.skipped += left
            passed[sid] = passed.get(sid, 0) + len(payload)
            yield sid, payload


def follow_frames(
    attached: Iterable[Frame] | None,
    open_log: OpenLog,
    status: GetStatus,
    resume: Resume,
    engine_wait_s: float = 120.0,
    drops: tuple[type[BaseException], ...] = (OSError,),
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Frame]:
    """All frames of a container: the attach stream, then the log after a drop, until it stops.

    ``attached`` None: no attach stream (a container adopted from an earlier try of the task),
    so following starts from the engine's log, skipping what ``resume`` says was passed on.

    ``drops`` are the exceptions that mean "the connection broke" (``OSError``: a reset socket,
    the engine client's ``HostUnreachable``); a stream truncated inside a frame is one too. The engine is polled for up
    to ``engine_wait_s`` seconds while it does not answer (a restarting daemon); if it never
    comes back, the last error is raised.
    """
    broken: tuple[type[BaseException], ...] = (TruncatedStream, *drops)
    stream, from_start, final = attached or (), False, False
    if attached is None:
        now = _poll(status, engine_wait_s, drops, sleep, clock)
        if now is None:
            return
        final = not now.running
        stream, from_start = open_log(now.running), True
    while True:
        clean = True
        try:
            yield from resume.frames(stream, from_start)
        except broken:
            clean = False
        if final and clean:
            return
        now = _poll(status, engine_wait_s, drops, sleep, clock)
        if now is not None and clean and not from_start and now.running:
            now = _settle(status, now, engine_wait_s, drops, sleep, clock)
        if now is None:
            return
        if clean and not from_start and now.exited_by_itself:
            return
        if now.running or not clean:
            resume.resumes += 1
        # A followed log can end before the engine delivered all of a stopped container's
        # output (seen with json-file when the reader lags behind): once the container has
        # stopped, one more pass reads what is left, then ends.
        final = not now.running
        stream, from_start = open_log(now.running), True


def _settle(
    status: GetStatus, now: Status, wait_s: float, drops: tuple[type[BaseException], ...],
    sleep: Callable[[float], object], clock: Callable[[], float],
) -> Status | None:
    """The attach stream ends a moment before the engine reports the exit: wait for it."""
    deadline = clock() + SETTLE_S
    current: Status | None = now
    while current is not None and current.running and clock() < deadline:
        sleep(0.05)
        current = _poll(status, wait_s, drops, sleep, clock)
    return current


def _poll(
    status: GetStatus,
    wait_s: float,
    drops: tuple[type[BaseException], ...],
    sleep: Callable[[float], object],
    clock: Callable[[], float],
) -> Status | None:
    deadline = clock() + wait_s
    delay = 0.1
    while True:
        try:
            return status()
        except drops:
            if clock() >= deadline:
                raise
            sleep(delay)
            delay = min(delay * 2, 2.0)
