"""The last stage: container lines into Airflow's task log, keeping only a bounded tail.

Each line becomes one task-log event as soon as it arrives, so people follow training live in
the Airflow UI. stderr lines carry ``stream=stderr`` so they can be told apart. Only the last
few lines are kept in memory, for the error message of a failed container; the complete output
belongs in the archive, not in the worker's memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from provider.logs.lines import LogLine

DEFAULT_TAIL_LINES = 20


class LineLogger(Protocol):
    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def bind(self, **kw: Any) -> LineLogger: ...


class TaskLogSink:
    """Writes lines to a task logger and remembers the last ``tail_lines`` of them."""

    def __init__(self, logger: LineLogger, tail_lines: int = DEFAULT_TAIL_LINES) -> None:
        self._stdout = logger
        self._stderr = logger.bind(stream="stderr")
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.lines = 0

    def write(self, line: LogLine) -> None:
        """Log the line and keep it in the tail."""
        text = line.render()
        if line.stream == "stderr":
            self._stderr.info(text)
            self.tail.append("[stderr] " + text)
        else:
            self._stdout.info(text)
            self.tail.append(text)
        self.lines += 1

    def remember(self, line: LogLine) -> None:
        """Keep a line the live rate left out of the task log in the tail, for the error message."""
        self.tail.append("[stderr] " + line.render() if line.stream == "stderr" else line.render())

    def drain(self, lines: Iterable[LogLine]) -> Iterator[LogLine]:
        """Pass lines through, writing each one: a stage in a pulled pipeline."""
        for line in lines:
            self.write(line)
            yield line
