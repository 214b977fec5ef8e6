"""All talk with one GPU host's Docker engine.

The hook connects to nothing until it is first used (the client is a cached property), and it
turns the engine's failures into errors that name the host and the fix, because a DAG author
sees these in the task log with nothing else to go on.
"""

from __future__ import annotations

import io
import json
import logging
import ssl
import tarfile
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import docker
import requests
from airflow.sdk import BaseHook
from docker import APIClient
from docker.errors import APIError, ImageNotFound, NotFound
from docker.tls import TLSConfig

from provider.errors import EngineRefused, HostUnreachable, ImageMissing, NoGpuRuntime
from provider.hooks.hosts import (
    DEFAULT_HOST_CONN_ID,
    HOST_CONN_TYPE,
    HostConfig,
    resolve_pool,
    tls_failure_fix,
)
from provider.logs.lines import dechunk, parse_frames

log = logging.getLogger(__name__)

NVIDIA_RUNTIME = "nvidia"
MAX_RESULT_BYTES = 1024 * 1024


def _caused_by_tls(exc: BaseException | None) -> bool:
    """Whether a TLS failure is somewhere in ``exc``'s chain (docker-py wraps requests' errors)."""
    while exc is not None:
        if isinstance(exc, (ssl.SSLError, requests.exceptions.SSLError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class _TlsFromConnection(APIClient):
    """An engine client that verifies the engine with the connection's CA file, whatever the
    environment says.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace a session's CA file on every
    request, so on a worker with a company-wide bundle in its environment the engine's own CA
    would be ignored and every call fail with "unable to get local issuer certificate".
    """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged["verify"] = self.verify
        return merged


class GpuDockerHook(BaseHook):
    """Docker engine of one GPU host, named by a ``gpu_docker_host`` connection.

    :param host: the host, or the id of its connection (default: the local engine).
    :param timeout: seconds for each API call other than the log stream.
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
    def api(self) -> APIClient:
        tls: TLSConfig | bool = False
        if self.host.tls is not None:
            t = self.host.tls
            cert = (t.client_cert, t.client_key) if t.client_cert and t.client_key else None
            tls = TLSConfig(client_cert=cert, ca_cert=t.ca_cert, verify=t.verify)
        url = self.host.docker_url
        if url.startswith("tcp://") and tls:
            url = "https://" + url[len("tcp://") :]
        try:
            api = _TlsFromConnection(base_url=url, version="auto", timeout=self.timeout, tls=tls) if tls \
                else APIClient(base_url=url, version="auto", timeout=self.timeout)
        except docker.errors.DockerException as exc:
            raise self._unreachable(exc) from exc
        return api

    def _unreachable(self, exc: BaseException) -> HostUnreachable:
        fix = "Check that dockerd runs there and that the connection's Docker URL is right."
        if _caused_by_tls(exc):
            fix = tls_failure_fix(self.host)
        where = f"Docker engine of host {self.host.name!r} at {self.host.docker_url}"
        return HostUnreachable(f"{where} did not answer: {exc}. {fix}")

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI's connection test: ping the engine and report its version and runtimes."""
        try:
            info = self.info()
        except HostUnreachable as exc:
            return False, str(exc)
        runtimes = ", ".join(sorted(info.get("Runtimes", {})))
        return True, f"Docker {info.get('ServerVersion')} answers; runtimes: {runtimes}"

    def info(self) -> dict[str, Any]:
        try:
            return dict(self.api.info())
        except (requests.exceptions.RequestException, APIError) as exc:
            raise self._unreachable(exc) from exc

    def check_gpu_runtime(self, gpus: int) -> None:
        """Refuse GPUs before anything is created when the engine cannot hand them out."""
        if gpus <= 0:
            return
        runtimes = self.info().get("Runtimes") or {}
        if NVIDIA_RUNTIME not in runtimes:
            raise NoGpuRuntime(
                f"Host {self.host.name!r} ({self.host.docker_url}) has no NVIDIA runtime "
                f"(runtimes: {', '.join(sorted(runtimes)) or 'none'}), so gpus={gpus} cannot be "
                "given to a container. Install the NVIDIA Container Toolkit there and run "
                "`nvidia-ctk runtime configure --runtime=docker`, then restart dockerd; or run "
                "with gpus=0."
            )

    def ensure_image(self, image: str, pull: str) -> None:
        """Make ``image`` present: ``pull`` is "missing" (default), "always" or "never"."""
        present = self._has_image(image)
        if present and pull != "always":
            return
        if pull == "never":
            raise ImageMissing(
                f"Image {image!r} is not on host {self.host.name!r} ({self.host.docker_url}) and "
                "pull='never'. Build or load it there (`docker -H URL load`), or allow pulling."
            )
        try:
            self.api.pull(image)
        except (APIError, requests.exceptions.RequestException) as exc:
            if present:
                log.warning("Pull of %s failed, using the image on the host: %s", image, exc)
                return
            raise ImageMissing(
                f"Image {image!r} is not on host {self.host.name!r} ({self.host.docker_url}) "
                f"and pulling it failed: {_explain(exc)}. Check the image name and tag, push it "
                "to a registry the host can reach, or build it on the host (images/build.sh)."
            ) from exc

    def _has_image(self, image: str) -> bool:
        try:
            self.api.inspect_image(image)
            return True
        except ImageNotFound:
            return False
        except (APIError, requests.exceptions.RequestException) as exc:
            raise self._unreachable(exc) from exc

    def create(self, body: Mapping[str, Any]) -> str:
        """Create a container from the ``POST /containers/create`` body that
        :func:`provider.operators.container_spec.create_body` built."""
        try:
            return str(self.api.create_container_from_config(dict(body))["Id"])
        except ImageNotFound as exc:
            raise ImageMissing(
                f"Image {body.get('Image')!r} is not on host {self.host.name!r}: "
                f"{_explain(exc)}"
            ) from exc
        except APIError as exc:
            raise self._refused("create a container from", body.get("Image"), exc) from exc

    def start(self, container_id: str, image: str | None = None) -> None:
        try:
            self.api.start(container_id)
        except APIError as exc:
            raise self._refused("start the container of", image, exc) from exc

    def _refused(self, what: str, image: Any, exc: APIError) -> EngineRefused:
        why = _explain(exc)
        if "no space left on device" in why.lower():
            fix = "Free disk space in the engine's data root on that host (docker system df, docker system prune)."
        elif "bind source path does not exist" in why:
            fix = "Create that directory on the host, or fix the operator's mounts."
        elif "exec:" in why and ("executable file not found" in why or "no such file or directory" in why):
            fix = "The command is not in the image: check the operator's command and the image's PATH."
        else:
            fix = "Check the operator's arguments (command, mounts, limits, devices) against this message."
        return EngineRefused(f"Docker engine of host {self.host.name!r} would not {what} {image!r}: {why}. {fix}")

    def attach_frames(self, container_id: str) -> Iterator[tuple[int, bytes]]:
        """Attach to the container's stdout and stderr; call before starting it.

        The connection is made here, not on first iteration, so nothing the container prints
        after ``start`` is missed. The stream has no read timeout (a container may be silent
        for an hour) and ends when the container's output closes or the connection drops.
        """
        params = {"stdout": 1, "stderr": 1, "stream": 1}
        url = self.api._url("/containers/{0}/attach", container_id)
        res = self.api._post(url, params=params, stream=True, headers={"Connection": "Upgrade", "Upgrade": "tcp"})
        self.api._raise_for_status(res)
        sock = self.api._get_raw_response_socket(res)
        self.api._disable_socket_timeout(sock)
        return _closing(parse_frames(_socket_reads(res)), res)

    def log_frames(self, container_id: str, follow: bool) -> Iterator[tuple[int, bytes]]:
        """The container's log from its start as ``(stream id, payload)`` frames (to resume)."""
        params: dict[str, Any] = {"follow": int(follow), "stdout": 1, "stderr": 1}
        url = self.api._url("/containers/{0}/logs", container_id)
        res = self.api._get(url, params=params, stream=True)
        self.api._raise_for_status(res)
        self.api._disable_socket_timeout(self.api._get_raw_response_socket(res))
        chunked = res.headers.get("Transfer-Encoding", "").lower() == "chunked"
        return _closing(parse_frames(dechunk(_socket_reads(res)) if chunked else _chunks(res)), res)

    def wait(self, container_id: str) -> int:
        """Block until the container exits; return its exit code."""
        self.api.timeout = None  # training runs for hours; the stream has ended already
        try:
            return int(self.api.wait(container_id)["StatusCode"])
        finally:
            self.api.timeout = self.timeout

    def state(self, container_id: str) -> dict[str, Any] | None:
        """The container's ``State`` (running, exit code, OOM kill); None once it is gone: the
        task's ``on_kill`` may remove it at any moment after it exits."""
        try:
            return dict(self.api.inspect_container(container_id)["State"])
        except NotFound:
            return None

    def oom_killed(self, container_id: str) -> bool:
        """Whether the kernel's OOM killer ended the container (False once it is gone: killed)."""
        return bool((self.state(container_id) or {}).get("OOMKilled"))

    def read_json(self, container_id: str, path: str) -> dict[str, Any] | None:
        """The JSON document at ``path`` inside the (stopped) container, or None if absent."""
        try:
            stream, stat = self.api.get_archive(container_id, path)
        except NotFound:
            return None
        if stat.get("size", 0) > MAX_RESULT_BYTES:
            raise ValueError(
                f"{path} in the container is {stat['size']} bytes; a result file may hold at "
                f"most {MAX_RESULT_BYTES} bytes. Write large artefacts to a mounted volume."
            )
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            f = tar.extractfile(member) if member else None
            if f is None:
                return None
            try:
                value = json.loads(f.read())
            except ValueError as exc:
                raise ValueError(f"{path} in the container is not valid JSON: {exc}") from exc
        return value if isinstance(value, dict) else {"value": value}

    def stop_and_remove(self, container_id: str, grace_s: int = 2) -> None:
        """Stop (SIGTERM, then SIGKILL after ``grace_s``) and remove with its volumes."""
        try:
            self.api.stop(container_id, timeout=grace_s)
        except (NotFound, APIError, requests.exceptions.RequestException) as exc:
            log.debug("stop %s: %s", container_id, exc)
        self.remove(container_id)

    def remove(self, container_id: str) -> None:
        try:
            self.api.remove_container(container_id, v=True, force=True)
        except NotFound:
            pass
        except (APIError, requests.exceptions.RequestException) as exc:
            log.warning("Could not remove container %s on %s: %s", container_id, self.host.name, exc)

    def containers(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Containers (running or not) carrying all ``labels``."""
        flt = [f"{k}={v}" for k, v in labels.items()]
        return list(self.api.containers(all=True, filters={"label": flt}))


def _closing(frames: Iterator[tuple[int, bytes]], res: requests.Response) -> Iterator[tuple[int, bytes]]:
    try:
        yield from frames
    finally:
        res.close()


def _chunks(res: requests.Response) -> Iterator[bytes]:
    """Bytes as the engine sends them, without waiting to fill a buffer (live output)."""
    raw = res.raw
    while True:
        chunk = raw.read1(65536)
        if not chunk:
            return
        yield chunk


def _socket_reads(res: requests.Response) -> Iterator[bytes]:
    """The body's bytes as they come off the socket (for the logs endpoint still in HTTP
    chunked coding, which :func:`dechunk` decodes; the attach stream is raw after the upgrade).

    Reads the buffered socket file under http.client directly: nothing of the body has been
    read through it yet with ``stream=True``.
    """
    fp = res.raw._fp.fp  # http.client.HTTPResponse's socket file
    while True:
        data = fp.read1(65536)
        if not data:
            return
        yield data


def _explain(exc: BaseException) -> str:
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)
