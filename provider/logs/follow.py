"""Follow a container's frames across dropped streams, without loss and without duplicates.

A log stream ends when the engine restarts or a connection drops, while the container may go
on printing. Reopening the stream with Docker's ``since`` resumes it, but ``since`` is
*inclusive* at its timestamp: the frames already read at exactly the last timestamp come again.
:class:`Resume` remembers the last timestamp and how many frames carried it, and skips that many
when the new stream starts. Deduplication works on frames, below line assembly, so a line that
was cut in the middle by the drop is reassembled exactly (the assembler's pending bytes survive
because one :func:`assemble_lines` runs over the joined frame stream).

When the stream ends and the container no longer runs, following ends: the frames read so far
are all the container printed, and the operator reports the exit code. A container that is gone
(an engine restart without live-restore kills and may remove containers) ends it too.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from provider.logs.lines import TruncatedStream

Frame = tuple[int, bytes]
# Opens the stream from a Docker ``since`` value (None: from the start).
OpenStream = Callable[[str | None], Iterable[Frame]]
# True while the container runs, False once it stopped, None when it no longer exists; raises
# ``OSError`` (or a subclass such as requests' ConnectionError) while the engine does not answer.
IsRunning = Callable[[], bool | None]


def docker_since(ts: bytes) -> str:
    """Docker's ``since`` value (``seconds.nanoseconds``) of an RFC 3339 engine timestamp.

    The engine writes UTC with up to nine fraction digits and trims trailing zeros
    (``2026-01-02T03:04:05.1Z``); the API does not accept that form back, only a Unix time.
    """
    text = ts.decode("ascii")
    if len(text) < 20 or text[-1] != "Z" or text[10] != "T":
        raise ValueError(f"not an engine timestamp (RFC 3339 UTC, ending in Z): {text!r}")
    seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    fraction = text[20:-1] if text[19] == "." else ""
    return f"{seconds}.{fraction.ljust(9, '0')[:9]}"


@dataclass(slots=True)
class Resume:
    """Where a followed stream stands: the last timestamp, and the frames read at exactly it.

    ``skipped`` counts the frames dropped as duplicates over all resumptions; ``resumes`` the
    reopened streams. Both end up in the manifest, so a reader sees what the follower did.
    """

    last_ts: bytes = b""
    at_last_ts: int = 0
    skipped: int = 0
    resumes: int = 0

    @property
    def since(self) -> str | None:
        return docker_since(self.last_ts) if self.last_ts else None

    def frames(self, stream: Iterable[Frame]) -> Iterator[Frame]:
        """Pass the frames of one (re)opened stream, skipping the ones already passed."""
        to_skip = self.at_last_ts if self.last_ts else 0
        last, count = self.last_ts, self.at_last_ts
        try:
            for frame in stream:
                payload = frame[1]
                space = payload.find(b" ", 0, 40)
                ts = payload[:space] if space >= 20 else b""
                if to_skip:
                    if ts == last:
                        to_skip -= 1
                        self.skipped += 1
                        continue
                    to_skip = 0
                if ts == last:
                    count += 1
                else:
                    last, count = ts, 1
                yield frame
        finally:
            self.last_ts, self.at_last_ts = last, count


def follow_frames(
    open_stream: OpenStream,
    is_running: IsRunning,
    resume: Resume,
    engine_wait_s: float = 120.0,
    drops: tuple[type[BaseException], ...] = (OSError,),
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Frame]:
    """All frames of a container, reopening the stream after each drop until the container stops.

    ``drops`` are the exceptions that mean "the connection broke" (the hook passes requests' and
    urllib3's); a stream truncated inside a frame is one too. The engine is polled for up to
    ``engine_wait_s`` seconds while it does not answer (a restarting daemon); if it never comes
    back, the last error is raised.
    """
    broken: tuple[type[BaseException], ...] = (TruncatedStream, *drops)
    final = False
    while True:
        clean = True
        try:
            yield from resume.frames(open_stream(resume.since))
        except broken:
            clean = False
        if final and clean:
            return
        running = _poll(is_running, engine_wait_s, drops, sleep, clock)
        if running is None:
            return
        if running or not clean:
            resume.resumes += 1
        # A followed stream can end before the engine delivered all of a stopped container's
        # output (seen with json-file when the reader lags behind): once the container has
        # stopped, one more pass from the last timestamp reads what is left, then ends.
        final = not running


def _poll(
    is_running: IsRunning,
    wait_s: float,
    drops: tuple[type[BaseException], ...],
    sleep: Callable[[float], object],
    clock: Callable[[], float],
) -> bool | None:
    deadline = clock() + wait_s
    delay = 0.1
    while True:
        try:
            return is_running()
        except drops:
            if clock() >= deadline:
                raise
            sleep(delay)
            delay = min(delay * 2, 2.0)
