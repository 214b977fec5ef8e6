"""How many container lines per second reach the live task log.

A trainer that prints a million lines a minute would drown the task log (and the worker that
writes it); the archive keeps every line anyway. The limiter is a token bucket: up to ``rate``
lines per second on average, bursts of up to one second's worth, so a quiet trainer's lines
always show at once. It takes the time as an argument, which keeps it pure and testable.
"""

from __future__ import annotations


class LiveRate:
    """Token bucket deciding, line by line, whether a line goes to the live task log."""

    __slots__ = ("rate", "_tokens", "_at")

    def __init__(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError(
                f"log_live_rate={rate!r} must be a number of lines per second > 0; "
                "use None to put every line into the task log."
            )
        self.rate = float(rate)
        self._tokens = max(self.rate, 1.0)
        self._at: float | None = None

    def allow(self, now: float) -> bool:
        """True if a line arriving at ``now`` (seconds, monotonic) may be shown."""
        if self._at is not None:
            self._tokens = min(max(self.rate, 1.0), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
