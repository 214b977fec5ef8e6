"""No host can take a request: the placement core's verdict, as the error a DAG author reads.

It lives with the placement core because it carries the core's own values (the request and
each host's typed reasons, :mod:`provider.scheduling.reasons`) and is put into words only when
read; it is a :class:`~provider.errors.GpuDockerError` like every error of the provider.
"""

from __future__ import annotations

from collections.abc import Mapping

from provider.errors import GpuDockerError
from provider.scheduling.model import PlacementRequest
from provider.scheduling.reasons import Reason


class NoFit(GpuDockerError):
    """No node can take the request; the message names every node and every reason.

    ``rejections`` holds each node's reasons as values (:mod:`provider.scheduling.reasons`), for
    a caller to act on; they are put into words only where shown (this message, the XCom).
    ``holders`` names, per host, the tasks whose reservations take its resources, so a full
    pool says who holds it rather than only that it is full. ``never`` says that no host
    could take the request even with nothing else on it: waiting would not help. ``line`` is,
    on a pool with queues, the task's place in line and what it waits for there
    (:class:`~provider.scheduling.line.LineAnswer`); the hosts may have room then.
    """

    def __init__(
        self,
        request: PlacementRequest,
        rejections: Mapping[str, tuple[Reason, ...]],
        holders: Mapping[str, tuple[str, ...]] | None = None,
        never: bool = False,
        advice: str = "",
        line: str = "",
    ) -> None:
        self.request = request
        self.rejections = dict(rejections)
        self.holders = dict(holders or {})
        self.never = never
        self.advice = advice
        self.line = line
        super().__init__(request, self.rejections)

    def __str__(self) -> str:
        # Built on demand: a simulator that counts misfits never pays for the text.
        return self._message()

    def _message(self) -> str:
        asked = self.request.describe()
        if self.line:
            text = f"{asked} {'can never start' if self.never else 'waits in line'}: {self.line}"
            if self.rejections:
                text += ". Hosts: " + " | ".join(self._parts())
            return f"{text}." + (f" {self.advice}" if self.advice else "")
        if not self.rejections:
            return f"No host fits {asked}: the pool is empty. Add hosts to the pool."
        text = f"No host fits {asked}: " + " | ".join(self._parts())
        if self.never:
            text += (". No host of the pool could take it even with nothing else running: ask for less or "
                     "add a larger host.")
        return text + (f" {self.advice}" if self.advice else "")

    def _parts(self) -> list[str]:
        parts = []
        for node, why in sorted(self.rejections.items()):
            held = self.holders.get(node)
            parts.append(f"{node}: {'; '.join(map(str, why))}" + (f" (held by {', '.join(held)})" if held else ""))
        return parts

    def advised(self, advice: str) -> NoFit:
        """The same no-fit with what the user can do about it appended."""
        return NoFit(self.request, self.rejections, self.holders, self.never, advice, self.line)
