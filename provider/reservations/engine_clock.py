"""The engine's clock, the one clock that judges the age of what is kept on an engine.

Claims, holds, places in line and host-problem markers are containers; their age is the engine's
time now (``SystemTime`` of ``GET /info``) less their ``Created``, both read on the engine, so a
worker whose clock is minutes off neither reclaims a live claim nor keeps a dead one.

``/info`` costs more than the rest of a read, so each engine is asked once per
:data:`INFO_TTL_S` in a process; its time in between is its ``SystemTime`` plus the time that
passed on this process's *monotonic* clock, which no change of the wall clock moves. The same
answer gives the engine's runtimes (an engine without the NVIDIA runtime offers no GPUs).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime

from provider.clients.engine import AsyncEngine

INFO_TTL_S = 300.0
"""How long an engine's ``/info`` is kept: its runtimes change only when dockerd restarts with
another configuration, and its clock, once anchored, is carried forward on the monotonic clock."""


def engine_seconds(stamp: object) -> float | None:
    """An engine's RFC 3339 time (``2026-11-26T12:00:00.123456789Z``) as Unix seconds; None if unreadable."""
    text = str(stamp or "")
    head, dot, tail = text.rstrip("Z").partition(".")
    fraction = "".join(ch for ch in tail if ch.isdigit())[:6]
    zone = "+00:00" if text.endswith("Z") else ""
    try:
        seconds = datetime.fromisoformat(f"{head}{'.' + fraction if dot and fraction else ''}{zone}").timestamp()
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What one ``/info`` said that a pool read needs: the runtimes, and the engine's time
    (``system_time``, None when it did not say) at ``read_at`` on this process's monotonic clock.

    ``read_at`` is when the answer arrived, after the engine wrote its time into it: the engine's
    time so carried forward is behind by the answer's latency, so an age read on it is never
    overstated and a claim is reclaimed, if anything, a little late, never early."""

    runtimes: tuple[str, ...]
    system_time: float | None
    read_at: float

    def now(self) -> float | None:
        """The engine's time now; None when the engine did not tell its time."""
        if self.system_time is None:
            return None
        return self.system_time + (time.monotonic() - self.read_at)


_known: dict[str, EngineInfo] = {}
"""Per engine URL, its last ``/info`` in this process."""


async def engine_info(engine: AsyncEngine) -> EngineInfo:
    """``engine``'s runtimes and clock, asked at most once per :data:`INFO_TTL_S`."""
    url = engine.host.docker_url
    known = _known.get(url)
    if known is None or time.monotonic() - known.read_at > INFO_TTL_S:
        doc = await engine.info()
        known = _known[url] = EngineInfo(tuple(sorted(doc.get("Runtimes") or {})),
                                         engine_seconds(doc.get("SystemTime")), time.monotonic())
    return known
