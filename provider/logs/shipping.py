"""The log-shipping pipeline of one container: engine → lines → archive → live task log.

One pulled chain of generator stages, so memory is bounded by a frame, one pending line per
stream, one archive chunk and the error tail, whatever the number of lines::

    follow_frames (attach stream; the engine's log after a drop) → assemble_lines (batches)
        → ChunkedArchive.drain → live

Every line reaches the archive; the live task log gets them at ``live_rate`` lines per second
at most (default: all), and says how many it left out and where the full log is.
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from airflow.configuration import conf, get_airflow_home
from airflow.sdk import ObjectStoragePath

from provider.logs.archive import DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_S, MANIFEST_NAME, ChunkedArchive
from provider.logs.follow import Frame, Resume, Status, follow_frames
from provider.clients.frames import STDERR, STDOUT
from provider.logs.lines import DEFAULT_MAX_LINE_BYTES, LineBatch, arrival_time, assemble_lines
from provider.logs.rate import LiveRate
from provider.logs.spool import Spool
from provider.logs.task_log import DEFAULT_TAIL_LINES, LineLogger, TaskLogSink
from provider.task_instance import TaskInstanceRef

DEFAULT_LOG_ARCHIVE = "file://{AIRFLOW_HOME}/container_logs"
GpuSamples = Callable[[], Mapping[str, Any] | None]


class ContainerOutput(Protocol):
    """Where a followed container's state and log come from (the operator's engine hook): the
    log pipeline reads them, and knows nothing else of engines."""

    def state(self, container_id: str) -> dict[str, Any] | None: ...

    def log_frames(self, container_id: str, follow: bool) -> Iterable[tuple[int, bytes]]: ...


def archive_prefix(base: str, conn_id: str | None, task: TaskInstanceRef) -> ObjectStoragePath:
    """Where one task attempt's container log goes, laid out like Airflow's own task logs."""
    if "://" not in base:
        raise ValueError(
            f"log_archive={base!r} is not a URL; use file:///absolute/dir or "
            "s3://CONN_ID@bucket/prefix (or None for no archive)."
        )
    root = ObjectStoragePath(base.replace("{AIRFLOW_HOME}", get_airflow_home()), conn_id=conn_id)
    parts = [f"dag_id={task.dag_id}", f"run_id={task.run_id}", f"task_id={task.task_id}"]
    if task.map_index >= 0:
        parts.append(f"map_index={task.map_index}")
    parts.append(f"attempt={task.try_number}")
    return root.joinpath(*parts)


def deployment_archive(conn_id: str | None) -> tuple[str, str | None]:
    """The archive of tasks that name none: ``[gpu_docker] log_archive`` (and
    ``log_archive_conn_id``) when the deployment sets it, else a directory of the worker's.

    With several workers a directory of each worker's own scatters the archives, so a
    deployment sets one store for all of them once, instead of every DAG naming it."""
    base = conf.get("gpu_docker", "log_archive", fallback="") or DEFAULT_LOG_ARCHIVE
    return base, conn_id or conf.get("gpu_docker", "log_archive_conn_id", fallback="") or None


def default_spool_root() -> Path:
    """One spool per worker, shared by its tasks, so a later task uploads what an earlier left."""
    return Path(get_airflow_home()) / "container_logs_spool"


class LogShipping:
    """Ships one container's output; ``run`` follows it to the end, ``finish`` seals the archive.

    :param log: the task logger (structlog in a task).
    :param archive: prefix URL of the archive (``{AIRFLOW_HOME}`` is expanded), or None.
    :param task: the task instance and try whose archive this is: the archive's sub-path.
    :param live_rate: lines per second into the task log; None shows every line.
    :param carry_on: the container was started by an earlier try, which archived part of its
        output under ``task``: continue that archive and ship only what follows it.
    """

    def __init__(
        self,
        log: LineLogger,
        *,
        archive: str | None,
        task: TaskInstanceRef,
        archive_conn_id: str | None = None,
        live_rate: float | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        tail_lines: int = DEFAULT_TAIL_LINES,
        chunk_s: float = DEFAULT_CHUNK_S,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        gpu_samples: GpuSamples | None = None,
        spool_root: Path | None = None,
        carry_on: bool = False,
    ) -> None:
        self.log = log
        self.sink = TaskLogSink(log, tail_lines)
        self.max_line_bytes = max_line_bytes
        self.limiter = LiveRate(live_rate) if live_rate is not None else None
        self.resume = Resume()
        self.elided = 0
        self.total_elided = 0
        self.archive: ChunkedArchive | None = None
        if archive == DEFAULT_LOG_ARCHIVE:
            archive, archive_conn_id = deployment_archive(archive_conn_id)
        if archive is not None:
            spool = Spool(spool_root or default_spool_root(), log)
            self.archive = ChunkedArchive(
                archive_prefix(archive, archive_conn_id, task), spool, log,
                chunk_s=chunk_s, chunk_bytes=chunk_bytes, gpu_samples=gpu_samples,
            )
            if carry_on:  # an adopted container: go on after what the earlier try archived
                self._upload_leftovers()
                done = self.archive.carry_on()
                self.resume = Resume(passed={STDOUT: done["stdout"], STDERR: done["stderr"]})

    @property
    def where(self) -> str:
        return self.archive.url if self.archive is not None else "(no archive: log_archive=None)"

    def run(self, hook: ContainerOutput, container_id: str, attached: Iterable[Frame] | None) -> None:
        """Follow the container until it stops, shipping every line.

        ``attached`` is the attach stream, opened before the container was started; None for an
        adopted container, which is read from the engine's log.
        """
        if self.archive is not None and self.archive.spool.pending():
            self._upload_leftovers()

        def status() -> Status | None:
            state = hook.state(container_id)
            if state is None:
                return None
            return Status(running=bool(state.get("Running")), exit_code=state.get("ExitCode"))

        # A broken connection or an engine that does not answer raises OSError (HostUnreachable
        # is one): following treats it as a drop and resumes from the engine's log.
        open_log = functools.partial(hook.log_frames, container_id)
        frames = follow_frames(attached, open_log, status, self.resume)
        batches: Iterable[LineBatch] = assemble_lines(frames, arrival_time, self.max_line_bytes)
        if self.archive is not None:
            batches = self.archive.drain(batches)
        for _ in self._live(batches):
            pass
        self._note_elided()
        if self.resume.resumes:
            note = (
                f"(the log stream dropped {self.resume.resumes} time(s), e.g. the Docker engine "
                f"restarted; it was resumed from the engine's log, {self.resume.skipped} bytes already "
                "shipped were skipped)"
            )
            self.log.info(note)
            self.sink.tail.append(note)

    def _live(self, batches: Iterable[LineBatch]) -> Iterable[LineBatch]:
        limiter, sink = self.limiter, self.sink
        if limiter is None:
            yield from sink.drain(batches)
            return
        clock = time.monotonic
        for batch in batches:
            shown: list[str] = []
            for text in batch.rendered():
                if limiter.allow(clock()):
                    if self.elided:  # nothing is in ``shown`` yet: the elision flushed it
                        self._note_elided()
                    shown.append(text)
                else:
                    if shown:
                        sink.write(replace(batch, texts=shown, continued=False))
                        shown = []
                    sink.remember(batch.stream, text)
                    self.elided += 1
            if shown:
                sink.write(replace(batch, texts=shown, continued=False))
            yield batch

    def _note_elided(self) -> None:
        if self.elided and self.limiter is not None:
            self.log.info(
                "%d lines not shown here (log_live_rate=%g lines/s); the full log is at %s",
                self.elided, self.limiter.rate, self.where,
            )
            self.total_elided += self.elided
            self.elided = 0

    def _upload_leftovers(self) -> None:
        assert self.archive is not None
        try:
            sent = self.archive.spool.flush()
        except Exception as exc:  # noqa: BLE001 - storage still away; the run spools as well
            self.log.warning("Spooled container logs in %s could not be uploaded yet: %s", self.archive.spool.root, exc)
            return
        self.log.info("Uploaded %d container-log objects spooled by earlier tasks on this worker", sent)

    def hand_over(self) -> None:
        """Leave the archive to the try that adopts the container: what was shipped is stored,
        nothing is sealed."""
        self._note_elided()
        if self.archive is not None:
            self.archive.hand_over()
            self.log.info("Container log archive at %s handed over to the next try", self.archive.url)

    def finish(self, **facts: Any) -> dict[str, Any]:
        """Seal the archive with its manifest; the keys this adds to the task's XCom."""
        out: dict[str, Any] = {
            "log_lines_elided": self.total_elided,
            "log_stream_resumes": self.resume.resumes,
            "log_archive": None,
            "log_manifest": None,
        }
        if self.archive is None:
            return out
        manifest = self.archive.finish(
            stream_resumes=self.resume.resumes, resumed_bytes_skipped=self.resume.skipped,
            lines_elided_in_task_log=out["log_lines_elided"], **facts,
        )
        out["log_archive"] = self.archive.url
        out["log_manifest"] = str(self.archive.base / MANIFEST_NAME)
        out["log_sha256"] = manifest["sha256"]
        out["log_archive_complete"] = not self.archive.lost
        if self.archive.lost:
            self.log.error(
                "Container log archive at %s is INCOMPLETE: %d of %d objects (%d bytes) were taken by "
                "neither storage nor this worker's spool (%s); the sha256 of the full output is %s.",
                self.archive.url, len(self.archive.lost), self.archive.chunks + 1, self.archive.lost_bytes,
                ", ".join(self.archive.lost[:5]) + (" …" if len(self.archive.lost) > 5 else ""), manifest["sha256"],
            )
            return out
        self.log.info(
            "Container log archived: %d lines, %d bytes at %s%s", manifest["lines"], manifest["bytes"],
            self.archive.url, f" ({self.archive.spooled} objects went through the spool)" if self.archive.spooled else "",
        )
        return out

