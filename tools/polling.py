"""The one way tests, benchmarks and the tools they use wait for a condition: poll with a deadline.

``eventually(check, timeout_s)`` calls ``check`` until it returns a truthy value (or one that
``until`` accepts) and returns that value; at the deadline it raises :class:`NotWithin`, which
names what was awaited and the last value ``check`` returned. ``NotWithin`` is an ``AssertionError`` (a test that waited in
vain fails, it does not error) and a ``TimeoutError`` (what the tools raised before, and what
their callers catch). An exception raised by ``check`` is not swallowed: it ends the wait, so a
check can fail early (a process that died, an HTTP error that is not "not yet").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
SHOWN = 2000  # characters of the last value that an error message shows


class NotWithin(AssertionError, TimeoutError):
    """A condition did not hold within its deadline."""

    def __init__(self, message: str, last: object) -> None:
        super().__init__(message)
        self.last = last


def eventually(
    check: Callable[[], T], timeout_s: float, interval_s: float = 0.2, what: str = "",
    until: Callable[[T], object] = bool,
) -> T:
    """Call ``check`` every ``interval_s`` until ``until`` accepts what it returns (by default:
    until it is truthy) and return that; raise :class:`NotWithin` when nothing was accepted
    within ``timeout_s`` (``check`` runs at least once, and once more at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = check()
        if until(last):
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            name = what or getattr(check, "__name__", "the condition")
            seen = repr(last)
            seen = seen if len(seen) <= SHOWN else seen[:SHOWN] + f"... ({len(seen)} characters)"
            raise NotWithin(f"{name}: not within {timeout_s:g} s; last seen: {seen}", last)
        time.sleep(min(interval_s, left))
