"""Every error this provider raises, under one root: :class:`GpuDockerError`.

A DAG author sees these in a task log with nothing else to go on, so each message names the
cause (which host, which argument, which limit) and the fix. One root lets a caller catch
"anything this provider refused" in one clause, as docker-py's ``DockerException`` does; the
second bases keep the built-in meaning (``ValueError`` for a bad argument, ``ConnectionError``
for a host that does not answer) for callers that already catch those.

Pure: no Airflow, Docker or network imports, so the placement core raises from here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provider.scheduling.model import PlacementRequest
    from provider.scheduling.reasons import Reason


class GpuDockerError(Exception):
    """Root of every error of this provider."""


class SpecError(GpuDockerError, ValueError):
    """An operator argument is invalid; the message names it and says what is accepted."""


class HostConfigError(GpuDockerError, ValueError):
    """A host or pool connection is missing or malformed; the message says how to fix it."""


class EngineError(GpuDockerError):
    """A Docker engine could not do what was asked; subclasses say whether it did not answer
    or answered no."""


class HostUnreachable(EngineError, ConnectionError):
    """The Docker engine of a host did not answer (refused, timed out, TLS failed)."""


class EngineRefused(EngineError, RuntimeError):
    """The engine answered, but would not do it (create, start, remove, ...): the message
    carries the engine's own reason, ``status`` its HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ImageMissing(EngineError, LookupError):
    """The image is neither on the host nor pullable from a registry the host reaches."""


class NoGpuRuntime(EngineError):
    """GPUs were asked for on a host whose engine cannot give them to a container."""


class AgentError(GpuDockerError):
    """A node agent could not be read; the message is the host's ``unreachable`` reason."""


class ProtocolError(GpuDockerError):
    """A peer answered, but not with what was asked for; the message says what came back."""


class FrameError(GpuDockerError, ValueError):
    """The engine's multiplexed output stream is malformed."""


class TruncatedStream(FrameError):
    """The stream ended in the middle of a frame (the connection dropped)."""


class ResultFileError(GpuDockerError, ValueError):
    """The container's result file is too large or not JSON; the message says what to do."""


class ClaimTaken(GpuDockerError):
    """Another task reserved the resources between the pool read and this claim; place again."""


class NoRoom(GpuDockerError):
    """A wait for room ended without it; the message names every host and what it lacks."""


class ReattachAmbiguous(GpuDockerError):
    """More than one container of earlier tries of the task exists: which to adopt is unclear."""

    def __init__(self, found: Sequence[object]) -> None:
        self.found = list(found)
        super().__init__(
            f"{len(found)} containers of earlier tries of this task exist: {'; '.join(map(str, found))}. Nothing "
            "was started. Remove all but the one to keep (`docker rm -f ID` on its host), or set reattach=False "
            "to remove them all and train afresh."
        )


class HandedOver(GpuDockerError):
    """The task process got SIGTERM while Airflow still counts its try as running: its worker
    is going away (a Celery cold shutdown, a service manager stopping the worker, a pod evicted),
    which is not a user's decision to stop the training. The container goes on with its claim;
    the next try adopts it, or the orphan sweep removes it when no try comes."""

    def __init__(self, container: str, host: str) -> None:
        super().__init__(
            f"This try's worker is shutting down (SIGTERM while Airflow still counts the try as running). "
            f"Container {container[:12]} on host {host!r} goes on training and keeps its GPUs: the next try "
            "of the task adopts it (reattach), and with no try left the api-server's orphan sweep stops it "
            "within 2 minutes. To stop a training run, mark the task failed or clear it."
        )


class ContainerFailed(GpuDockerError):
    """A training container exited non-zero; the message carries what is needed to act on it.

    ``engine_restarted``: the container was stopped by a signal while its log stream dropped,
    which is what an engine without live-restore does to its containers when it restarts."""

    def __init__(
        self,
        *,
        image: str,
        host: str,
        container_id: str,
        exit_code: int,
        duration_s: float,
        tail: list[str],
        oom_killed: bool = False,
        engine_restarted: bool = False,
    ) -> None:
        self.exit_code = exit_code
        self.tail = list(tail)
        why = " (killed for running out of memory: raise mem_limit)" if oom_killed else ""
        if engine_restarted and not oom_killed:
            why = (
                f" (stopped by the Docker engine of host {host!r}, which restarted while the container ran: "
                "its log stream dropped, and an engine without live-restore stops its containers when it "
                "stops. A retry places the task again, possibly on another host; set \"live-restore\": true "
                "in the host's daemon.json to keep training through engine restarts)"
            )
        lines = "\n".join(f"  {line}" for line in tail) or "  (the container printed nothing)"
        super().__init__(
            f"Container {container_id[:12]} of image {image!r} on host {host!r} exited with code "
            f"{exit_code}{why} after {duration_s:.1f} s. Last {len(tail)} lines of its output:\n"
            f"{lines}"
        )


class NoFit(GpuDockerError):
    """No node can take the request; the message names every node and every reason.

    ``rejections`` holds each node's reasons as values (:mod:`provider.scheduling.reasons`), for
    a caller to act on; they are put into words only where shown (this message, the XCom).
    ``holders`` names, per host, the tasks whose reservations take its resources, so a full
    pool says who holds it rather than only that it is full. ``never`` says that no host
    could take the request even with nothing else on it: waiting would not help.
    """

    def __init__(
        self,
        request: PlacementRequest,
        rejections: Mapping[str, tuple[Reason, ...]],
        holders: Mapping[str, tuple[str, ...]] | None = None,
        never: bool = False,
        advice: str = "",
    ) -> None:
        self.request = request
        self.rejections = dict(rejections)
        self.holders = dict(holders or {})
        self.never = never
        self.advice = advice
        super().__init__(request, self.rejections)

    def __str__(self) -> str:
        # Built on demand: a simulator that counts misfits never pays for the text.
        return self._message()

    def _message(self) -> str:
        asked = self.request.describe()
        if not self.rejections:
            return f"No host fits {asked}: the pool is empty. Add hosts to the pool."
        parts = []
        for node, why in sorted(self.rejections.items()):
            held = self.holders.get(node)
            parts.append(f"{node}: {'; '.join(map(str, why))}" + (f" (held by {', '.join(held)})" if held else ""))
        text = f"No host fits {asked}: " + " | ".join(parts)
        if self.never:
            text += (". No host of the pool could take it even with nothing else running: ask for less or "
                     "add a larger host.")
        return text + (f" {self.advice}" if self.advice else "")

    def advised(self, advice: str) -> NoFit:
        """The same no-fit with what the user can do about it appended."""
        return NoFit(self.request, self.rejections, self.holders, self.never, advice)
