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

from provider.logs.lines import LineBatch

DEFAULT_TAIL_LINES = 20


class LineLogger(Protocol):
    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def error(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def bind(self, **kw: Any) -> LineLogger: ...


class TaskLogSink:
    """Writes lines to a task logger and remembers the last ``tail_lines`` of them."""

    def __init__(self, logger: LineLogger, tail_lines: int = DEFAULT_TAIL_LINES) -> None:
        self._stdout = logger
        self._stderr = logger.bind(stream="stderr")
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self._keep = max(tail_lines, 1)  # a slice [-0:] would be everything
        self.lines = 0

    def write(self, batch: LineBatch) -> None:
        """Log the batch's lines one event each, and keep the last ones in the tail."""
        texts = batch.rendered()
        if batch.stream == "stderr":
            info = self._stderr.info
            for text in texts:
                info(text)
            self.tail.extend("[stderr] " + t for t in texts[-self._keep:])
        else:
            info = self._stdout.info
            for text in texts:
                info(text)
            self.tail.extend(texts[-self._keep:])
        self.lines += len(texts)

    def remember(self, stream: str, text: str) -> None:
        """Keep a line the live rate left out of the task log in the tail, for the error message."""
        self.tail.append("[stderr] " + text if stream == "stderr" else text)

    def drain(self, batches: Iterable[LineBatch]) -> Iterator[LineBatch]:
        """Pass batches through, writing each one: a stage in a pulled pipeline."""
        for batch in batches:
            self.write(batch)
            yield batch
