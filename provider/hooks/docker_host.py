"""The operator's view of one GPU host's Docker engine: the task container's whole life.

The hook is also the ``gpu_docker_host`` connection type's hook (the UI's Test button). It
connects to nothing until it is first used, speaks to the engine only through the one client
(:class:`~provider.clients.engine_sync.Engine`), and turns the engine's refusals into errors that name
the host and the fix, because a DAG author sees these in the task log with nothing else to go on.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from provider.errors import EngineError, EngineRefused, ImageMissing, NoGpuRuntime, ResultFileError
from provider.clients.engine_sync import Engine
from provider.clients.frames import Frames
from provider.clients.hosts import DEFAULT_HOST_CONN_ID, HOST_CONN_TYPE, HostConfig, resolve_pool
from provider.clients.registry_auth import PullProgress, RegistryAuth, auth_header, check_matches, pull_failure_fix

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024


class GpuDockerHook(BaseHook):
    """Docker engine of one GPU host, named by a ``gpu_docker_host`` connection.

    :param host: the host, or the id of its connection (default: the local engine).
    :param timeout: seconds for each API call other than the waits on a running container.
    """

    conn_name_attr = "gpu_docker_conn_id"
    default_conn_name = DEFAULT_HOST_CONN_ID
    conn_type = HOST_CONN_TYPE
    hook_name = "GPU Docker host"

    def __init__(self, host: HostConfig | str | None = None, timeout: float = 60.0) -> None:
        super().__init__()
        self._host_arg = host
        self.timeout = timeout

    @cached_property
    def host(self) -> HostConfig:
        if isinstance(self._host_arg, HostConfig):
            return self._host_arg
        return resolve_pool(self._host_arg or DEFAULT_HOST_CONN_ID, BaseHook.get_connection)[0]

    @cached_property
    def engine(self) -> Engine:
        return Engine(self.host, self.timeout)

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI's connection test: ping the engine and report its version and runtimes."""
        try:
            info = self.engine.info()
        except EngineError as exc:
            return False, str(exc)
        runtimes = ", ".join(sorted(info.get("Runtimes") or {}))
        return True, f"Docker {info.get('ServerVersion')} answers; runtimes: {runtimes}"

    def ensure_image(
        self, image: str, pull: str, auth: RegistryAuth | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        """Make ``image`` present: ``pull`` is "missing" (default), "always" or "never".

        ``auth`` logs in to the image's registry for this pull only; ``progress`` receives a
        few lines while it runs (:class:`~provider.clients.registry_auth.PullProgress`).
        """
        if auth is not None:
            check_matches(auth, image)
        present = self.engine.image(image) is not None
        if present and pull != "always":
            return
        if pull == "never":
            raise ImageMissing(
                f"Image {image!r} is not on host {self.host.name!r} ({self.host.docker_url}) and "
                "pull='never'. Build or load it there (`docker -H URL load`), or allow pulling."
            )
        watch = PullProgress(progress, time.monotonic) if progress is not None else None
        try:
            self.engine.pull(image, watch, auth_header(auth) if auth else None)
        except EngineRefused as exc:
            if present:
                log.warning("Pull of %s failed, using the image on the host: %s", image, exc)
                return
            raise ImageMissing(
                f"Image {image!r} is not on host {self.host.name!r} ({self.host.docker_url}) and pulling it "
                f"{f'with docker_conn_id {auth.conn_id!r}' if auth else 'without docker_conn_id'} failed: {exc}. "
                f"{pull_failure_fix(str(exc), image, auth)}"
            ) from exc

    def create(self, body: Mapping[str, Any]) -> str:
        """Create the task container from :func:`provider.operators.container_spec.create_body`."""
        image = body.get("Image")
        try:
            container_id = self.engine.create(body)
        except EngineRefused as exc:
            if exc.status == 404:
                raise ImageMissing(f"Image {image!r} is not on host {self.host.name!r}: {exc}") from exc
            raise self._refused("create a container from", image, exc) from exc
        assert container_id is not None  # unnamed: no name to be taken
        return container_id

    def start(self, container_id: str, image: str | None = None) -> None:
        try:
            self.engine.start(container_id)
        except EngineRefused as exc:
            raise self._refused("start the container of", image, exc) from exc

    def _refused(self, what: str, image: Any, exc: EngineRefused) -> EngineError:
        why = str(exc)
        where = f"Docker engine of host {self.host.name!r}"
        if 'could not select device driver "nvidia"' in why:
            return NoGpuRuntime(
                f"{where} has a runtime named nvidia but cannot start GPU containers ({why}). This is a "
                "problem of the host, not of the task: install the NVIDIA Container Toolkit there "
                "(nvidia-container-runtime-hook on dockerd's PATH), run `nvidia-ctk runtime configure "
                "--runtime=docker` and restart dockerd; until then, leave the host out of the pool."
            )
        if "no space left on device" in why.lower():
            fix = "Free disk space in the engine's data root on that host (docker system df, docker system prune)."
        elif "bind source path does not exist" in why:
            fix = "Create that directory on the host, or fix the operator's mounts."
        elif "exec:" in why and ("executable file not found" in why or "no such file or directory" in why):
            fix = "The command is not in the image: check the operator's command and the image's PATH."
        else:
            fix = "Check the operator's arguments (command, mounts, limits, devices) against this message."
        return EngineRefused(f"{where} would not {what} {image!r}: {why}. {fix}", exc.status)

    def attach_frames(self, container_id: str) -> Frames:
        """The container's stdout and stderr as ``(stream id, payload)`` frames; call before
        starting it: the engine attaches before this returns, so nothing printed is missed.
        The stream has no read timeout (a container may be silent for an hour) and ends when
        the container's output closes or the connection drops."""
        return Frames(self.engine.attach(container_id))

    def log_frames(self, container_id: str, follow: bool) -> Iterable[tuple[int, bytes]]:
        """The container's log from its start as frames (to resume); nothing once it is gone
        or being removed (the task was killed)."""
        try:
            return Frames(self.engine.logs(container_id, follow))
        except EngineRefused as exc:
            if exc.status in (404, 409):
                return iter(())
            raise

    def wait(self, container_id: str) -> int | None:
        """Block until the container exits; its exit code, None when it was removed meanwhile."""
        return self.engine.wait(container_id)

    def state(self, container_id: str) -> dict[str, Any] | None:
        """The container's ``State`` (running, exit code, OOM kill); None once it is gone: the
        task's ``on_kill`` may remove it at any moment after it exits."""
        doc = self.engine.inspect(container_id)
        return None if doc is None else dict(doc.get("State") or {})

    def stopped_by_restart(self, container_id: str, started: float) -> bool:
        """Whether a container that died of a signal was stopped by its engine going down: the
        engine, which restarted since, has no record of the death (its event log starts anew)."""
        try:
            return not self.engine.death_recorded(container_id, started - 1, time.time() + 1)
        except EngineError:
            return False  # cannot tell: the failure is reported without a guess

    def oom_killed(self, container_id: str) -> bool:
        """Whether the kernel's OOM killer ended the container (False once it is gone: killed)."""
        return bool((self.state(container_id) or {}).get("OOMKilled"))

    def read_json(self, container_id: str, path: str) -> dict[str, Any] | None:
        """The JSON document at ``path`` inside the (stopped) container, or None if absent."""
        try:
            tar_bytes = self.engine.archive(container_id, path, MAX_RESULT_BYTES)
        except ResultFileError as exc:
            raise ResultFileError(
                f"{exc}: a result file may hold at most {MAX_RESULT_BYTES} bytes. Write large artefacts "
                "to a mounted volume."
            ) from exc
        if tar_bytes is None:
            return None
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            member = tar.next()
            f = tar.extractfile(member) if member else None
            if f is None:
                return None
            try:
                value = json.loads(f.read())
            except ValueError as exc:
                raise ResultFileError(f"{path} in the container is not valid JSON: {exc}") from exc
        return value if isinstance(value, dict) else {"value": value}

    def put_files(self, container_id: str, directory: str, files: Mapping[str, bytes]) -> None:
        """Place ``files`` (name -> content) in ``directory`` of the created container, made if
        absent, readable by any user: the engine's archive API, so no shared filesystem and no
        environment variable carries them, whatever their size."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            folder = tarfile.TarInfo(directory.strip("/"))
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            tar.addfile(folder)
            for name, content in files.items():
                entry = tarfile.TarInfo(f"{folder.name}/{name}")
                entry.size, entry.mode, entry.mtime = len(content), 0o644, folder.mtime
                tar.addfile(entry, io.BytesIO(content))
        try:
            self.engine.put_archive(container_id, "/", buffer.getvalue())
        except EngineRefused as exc:
            raise self._refused(f"copy {directory} into container", container_id[:12], exc) from exc

    def stop_and_remove(self, container_id: str, grace_s: int = 2) -> None:
        """Stop (SIGTERM, then SIGKILL after ``grace_s``) and remove with its volumes."""
        try:
            self.engine.stop(container_id, grace_s)
        except EngineError as exc:
            log.debug("stop %s: %s", container_id, exc)
        self.remove(container_id)

    def remove(self, container_id: str) -> None:
        """Remove the container; a failure is logged, never raised (clean-up paths call this)."""
        try:
            self.engine.remove(container_id)
        except EngineError as exc:
            log.warning("Could not remove container %s on %s: %s", container_id, self.host.name, exc)
