"""Every error this provider raises, under one root: :class:`GpuDockerError`.

A DAG author sees these in a task log with nothing else to go on, so each message names the
cause (which host, which argument, which limit) and the fix. One root lets a caller catch
"anything this provider refused" in one clause, as docker-py's ``DockerException`` does; the
second bases keep the built-in meaning (``ValueError`` for a bad argument, ``ConnectionError``
for a host that does not answer) for callers that already catch those.

Pure, and the bottom of the provider: it imports nothing, so every layer raises from here. The
placement core's own verdict, :class:`~provider.scheduling.no_fit.NoFit`, subclasses the root
where the reasons it carries are defined.
"""

from __future__ import annotations

from collections.abc import Sequence


class GpuDockerError(Exception):
    """Root of every error of this provider."""


class SpecError(GpuDockerError, ValueError):
    """An operator argument is invalid; the message names it and says what is accepted."""


class HostConfigError(GpuDockerError, ValueError):
    """A host or pool connection is missing or malformed; the message says how to fix it."""


class LabelError(GpuDockerError, ValueError):
    """A label on a container this provider reads is malformed: the message names the label,
    what is wrong with it and what readers do with such a container."""


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


class SpoolEntryError(GpuDockerError, ValueError):
    """A log-spool entry failed its checks; it is quarantined, never uploaded (provider/logs/spool.py)."""


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
