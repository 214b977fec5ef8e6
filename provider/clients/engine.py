"""The one Docker Engine API client: an asyncio core and a synchronous face with the same verbs.

Placement reads every engine of a pool on every decision, and a waiting task's trigger does so
on every poll inside the triggerer's shared event loop, where a blocking client would stall
every other trigger; so the core is :class:`AsyncEngine`, on ``unix://`` sockets or ``tcp://``
with the connection's TLS files: JSON calls through the hand-written reader
(:mod:`provider.clients.http11`) over connections kept alive per event loop
(:mod:`provider.clients.connections`); streams (attach, logs, pull, events, wait) and archives
through aiohttp, each over a connection of its own (:mod:`provider.clients.streams`). The operator's worker
code is synchronous: :class:`~provider.clients.engine_sync.Engine` runs the same coroutines and has the
same method names and the same exceptions, as Kubernetes' ``PodManager`` and
``AsyncPodManager`` do. Claims, holds, locks,
listing, reclaiming and the task container's whole life (create, attach, start, logs, wait,
result file, stop, remove, pull) go through it.

Failures are typed once, here: :class:`~provider.errors.HostUnreachable` when the engine does
not answer (refused, timed out, TLS), :class:`~provider.errors.EngineRefused` when it answers
no, each naming the host and what to do.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from provider.errors import EngineRefused, HostUnreachable, ProtocolError, ResultFileError
from provider.clients.hosts import HostConfig, TlsFiles, tls_failure_fix
from provider.clients.connections import Endpoint, pool, within
from provider.clients.http11 import MAX_RESPONSE_BYTES, decode_json
from provider.clients.streams import StreamAnswer, open_stream
from provider.limits import ENGINE_TIMEOUT_S

PULL_IDLE_S = 300.0
"""How long a pull may send no progress at all before it counts as stalled."""
TAR_OVERHEAD_BYTES = 64 * 1024
"""Room for the tar headers around a file copied out of a container."""
API = "/v1.41"
"""Docker 20.10's API version: device requests (GPUs by id) need 1.40 or later."""


def split_reference(image: str) -> tuple[str, str]:
    """``repo[:tag][@digest]`` as the pull endpoint takes it: ``(fromImage, tag)``.

    Without a tag the engine would pull *every* tag of the repository, so "latest" is implied,
    as ``docker pull`` does. A digest travels as the tag.
    """
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    repo, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return repo, tag
    return image, "latest"


class AsyncEngine:
    """One host's Docker engine, for coroutines.

    :param host: where the engine answers, with its TLS files.
    :param timeout: seconds for a JSON call in all, and for each phase of a stream's opening
        (connecting, the answer's head), except the waits that last as long as a container runs
        (:meth:`wait`, :meth:`attach`, :meth:`logs`) and a pull, which may last as long as it
        makes progress.
    """

    def __init__(self, host: HostConfig, timeout: float = ENGINE_TIMEOUT_S) -> None:
        self.host = host
        self.timeout = timeout

    @property
    def what(self) -> str:
        return f"Docker engine of host {self.host.name!r} at {self.host.docker_url}"

    # -- transport ---------------------------------------------------------------------------

    async def _open(
        self, method: str, path: str, body: Any = None, timeout: float | None = None,
        headers: Mapping[str, str] | None = None, data: bytes | None = None,
    ) -> StreamAnswer:
        """A connection of its own for one answer read as it comes (a stream, a wait, an
        archive; :mod:`provider.clients.streams`); return once the head of the answer is read."""
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(
                open_stream(self._endpoint, method, API + path, what=self.what, headers=headers, body=body, data=data),
                limit,
            )
        except (asyncio.TimeoutError, OSError, ProtocolError) as exc:
            raise self._unreachable(exc, limit) from exc

    def _unreachable(self, exc: BaseException, limit: float) -> HostUnreachable:
        """The engine did not answer, or not as an engine does: why, and what to do."""
        if isinstance(exc, asyncio.TimeoutError):
            return HostUnreachable(
                f"{self.what} did not answer within {limit:g} s; check that dockerd runs there and is not overloaded"
            )
        if isinstance(exc, ssl.SSLError):
            return HostUnreachable(f"{self.what} refused the TLS connection ({exc}). {tls_failure_fix(self.host)}")
        return HostUnreachable(
            f"{self.what} did not answer ({exc}); start dockerd there or fix the Docker URL of connection "
            f"{self.host.name!r}"
        )

    async def call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> tuple[int, Any]:
        """One API call answered with JSON (or nothing): ``(status, decoded body or None)``, within
        ``timeout`` seconds in all, over a connection kept alive for the next call
        (:mod:`provider.clients.connections`)."""
        limit = self.timeout if timeout is None else timeout
        try:
            endpoint = self._endpoint  # loading the TLS files may fail as well
            kept = await pool()
            answer = await within(
                kept.request(endpoint, method, API + path, host="docker", body=body, what=self.what), limit
            )
        except (asyncio.TimeoutError, OSError, ProtocolError) as exc:
            raise self._unreachable(exc, limit) from exc
        return answer.status, self._decode(answer.body)

    async def _body(self, response: StreamAnswer, limit: float | None, size: int = MAX_RESPONSE_BYTES) -> bytes:
        """The rest of an answer (within ``limit`` seconds, None: no limit), the stream closed;
        a broken or slow answer is the engine not answering."""
        try:
            return await asyncio.wait_for(response.body(size), limit)
        except asyncio.TimeoutError:
            raise HostUnreachable(f"{self.what} did not finish its answer within {limit:g} s") from None
        except (OSError, ProtocolError) as exc:
            raise HostUnreachable(f"{self.what} broke off its answer ({exc})") from exc
        finally:
            response.close()

    def _decode(self, content: bytes) -> Any:
        """JSON as the engine sends it; anything else means the URL does not lead to an engine."""
        try:
            return decode_json(content, self.what) if content.strip() else None
        except ProtocolError as exc:
            raise HostUnreachable(
                f"{exc}: this is not the Docker Engine API; fix the Docker URL of connection {self.host.name!r}"
            ) from exc

    def refused(self, action: str, status: int, doc: Any) -> EngineRefused:
        """The engine's own reason for a refusal, with the host."""
        return EngineRefused(f"{self.what} would not {action}: HTTP {status}: {_reason(doc)}", status)

    @functools.cached_property
    def _endpoint(self) -> Endpoint:
        parts = urlsplit(self.host.docker_url)
        if parts.scheme == "unix":
            return Endpoint(unix=parts.path)
        if parts.scheme == "tcp" and parts.hostname:
            tls = None if self.host.tls is None else _tls_context(self.host.tls)
            return Endpoint(parts.hostname, parts.port or 2375, tls)
        raise HostUnreachable(
            f"{self.host.docker_url}: engines are reached over unix:// or tcp:// (with TLS files); "
            f"change the Docker URL of connection {self.host.name!r}"
        )

    # -- the engine --------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        """``docker info``: version, runtimes, data root."""
        status, doc = await self.call("GET", "/info")
        if status != 200 or not isinstance(doc, dict):
            raise self.refused("describe itself", status, doc)
        return doc

    async def containers(self, labels: Sequence[str]) -> list[dict[str, Any]]:
        """Every container (running or not) carrying all ``labels`` (``key`` or ``key=value``)."""
        filters = quote(json.dumps({"label": list(labels)}))
        status, doc = await self.call("GET", f"/containers/json?all=1&filters={filters}")
        if status != 200 or not isinstance(doc, list):
            raise self.refused("list containers", status, doc)
        return doc

    async def create(self, body: Mapping[str, Any], name: str | None = None) -> str | None:
        """Create a container; its id, or None when ``name`` is already taken (HTTP 409).

        The engine's name rule is atomic, which is what makes a named container a lock.
        """
        path = "/containers/create" + (f"?name={quote(name)}" if name else "")
        status, doc = await self.call("POST", path, dict(body))
        if status == 409 and name:
            return None
        if status != 201 or not isinstance(doc, dict):
            raise self.refused(f"create a container from {body.get('Image')!r}", status, doc)
        return str(doc["Id"])

    async def create_idle(self, name: str, image: str, labels: Mapping[str, str]) -> str | None:
        """Create, never start, a container by name; None when the name is already taken.

        Such a container holds state on the host at no cost (docs/reservations.md). It needs an
        image only to exist: when ``image`` is not on the host, any image there will do.
        """
        body = {"Image": image, "Cmd": ["true"], "Labels": dict(labels), "NetworkDisabled": True,
                "HostConfig": {"NetworkMode": "none"}}
        try:
            return await self.create(body, name)
        except EngineRefused:
            if await self.image(image) is not None:
                raise
        status, images = await self.call("GET", "/images/json")
        if status != 200 or not images:
            raise EngineRefused(f"{self.what} has no image at all to create {name} from; load any image there")
        return await self.create({**body, "Image": images[0]["Id"]}, name)

    async def start(self, container_id: str) -> None:
        status, doc = await self.call("POST", f"/containers/{quote(container_id)}/start")
        if status not in (204, 304):
            raise self.refused(f"start container {container_id[:12]}", status, doc)

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The container's description; None once it is gone."""
        return await self._described(f"/containers/{quote(container_id)}/json", f"container {container_id[:12]}")

    async def _described(self, path: str, what: str) -> dict[str, Any] | None:
        """A ``GET .../json`` description; None when the engine has no such thing (404)."""
        status, doc = await self.call("GET", path)
        if status == 404:
            return None
        if status != 200 or not isinstance(doc, dict):
            raise self.refused(f"describe {what}", status, doc)
        return doc

    async def stop(self, container_id: str, grace_s: int) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; a stopped or missing container is fine."""
        status, doc = await self.call(
            "POST", f"/containers/{quote(container_id)}/stop?t={int(grace_s)}", timeout=self.timeout + grace_s
        )
        if status not in (204, 304, 404):
            raise self.refused(f"stop container {container_id[:12]}", status, doc)

    async def remove(self, container_id: str) -> None:
        """Remove a container with its anonymous volumes; one that is already gone is fine, and
        so is one that another caller is removing at this moment (HTTP 409, "already in
        progress"): a task's ``on_kill`` and the orphan sweep, or two api-servers' sweeps, may
        remove the same container at once."""
        status, doc = await self.call("DELETE", f"/containers/{quote(container_id)}?force=1&v=1")
        if status == 409 and "already in progress" in _reason(doc):
            return
        if status not in (204, 404):
            raise self.refused(f"remove container {container_id[:12]}", status, doc)

    async def wait(self, container_id: str) -> int | None:
        """Block until the container exits (no time limit: training runs for hours); its exit
        code, or None when the container is gone (removed: the task was killed)."""
        response = await self._open("POST", f"/containers/{quote(container_id)}/wait")
        doc = self._decode(await self._body(response, None))
        if response.status == 404:
            return None
        if response.status != 200 or not isinstance(doc, dict) or "StatusCode" not in doc:
            raise self.refused(f"wait for container {container_id[:12]}", response.status, doc)
        return int(doc["StatusCode"])

    async def death_recorded(self, container_id: str, since: float, until: float) -> bool:
        """Whether the engine's event log holds a death of the container between ``since`` and
        ``until`` (epoch seconds, ``until`` not far past the engine's now: the answer waits for
        it). An engine keeps its events in memory, so one that restarted since has no record of
        the containers it stopped while going down."""
        filters = json.dumps({"type": ["container"], "container": [container_id], "event": ["die"]})
        query = urlencode({"since": f"{since:.0f}", "until": f"{until:.0f}", "filters": filters})
        response = await self._open("GET", f"/events?{query}", None, self.timeout)
        body = await self._body(response, self.timeout + max(0.0, until - since))
        if response.status != 200:
            raise self.refused("list its events", response.status, _maybe_json(body))
        return b'"die"' in body

    async def image(self, reference: str) -> dict[str, Any] | None:
        """The image's description (id, size, digests); None when the host does not have it."""
        return await self._described(f"/images/{quote(reference, safe='/:@')}/json", f"image {reference!r}")

    async def pull(
        self, reference: str, progress: Callable[[dict[str, Any]], None] | None = None, auth: str | None = None
    ) -> None:
        """Pull ``reference``; ``progress`` sees each status message. ``auth`` is the registry
        credential as the engine takes it (``X-Registry-Auth``, see
        :func:`provider.clients.registry_auth.auth_header`): it goes with this request only, and nothing
        is stored on the host. A failed pull raises :class:`EngineRefused` with the registry's
        reason."""
        repo, tag = split_reference(reference)
        response = await self._open("POST", "/images/create?" + urlencode({"fromImage": repo, "tag": tag}),
                                    headers={"X-Registry-Auth": auth} if auth else None)
        if response.status != 200:
            raise self.refused(f"pull {reference!r}", response.status,
                               _maybe_json(await self._body(response, self.timeout)))
        try:
            error = await _follow_progress(response, progress)
        except asyncio.TimeoutError:
            raise HostUnreachable(
                f"{self.what} sent no progress of the pull of {reference!r} for {PULL_IDLE_S:g} s: the registry "
                "or the engine stalled; try again, or check the host's link to the registry"
            ) from None
        except (OSError, ProtocolError) as exc:
            raise HostUnreachable(f"{self.what} broke off the pull of {reference!r} ({exc})") from exc
        finally:
            response.close()
        if error:
            raise EngineRefused(f"{self.what} could not pull {reference!r}: {error}")

    async def archive(self, container_id: str, path: str, limit: int) -> bytes | None:
        """A tar of ``path`` in the container (running or not); None when it does not exist.

        Raises :class:`ResultFileError` naming the size when the file is larger than ``limit`` bytes; the
        engine says the size before sending anything, so nothing more is read.
        """
        response = await self._open("GET", f"/containers/{quote(container_id)}/archive?path={quote(path)}")
        size = int(_path_stat(response.headers).get("size") or 0)
        if response.status == 404 or (response.status == 200 and size > limit):
            response.close()
            if response.status == 404:
                return None
            raise ResultFileError(f"{path} in container {container_id[:12]} is {size} bytes, more than {limit}")
        content = await self._body(response, self.timeout, limit + TAR_OVERHEAD_BYTES)
        if response.status != 200:
            raise self.refused(f"copy {path} out of container {container_id[:12]}", response.status,
                               _maybe_json(content))
        return content

    async def put_archive(self, container_id: str, path: str, tar: bytes) -> None:
        """Unpack ``tar`` at ``path`` (a directory that exists) in the container, as ``docker cp``
        does; on a created container this places files before its first process runs."""
        response = await self._open(
            "PUT", f"/containers/{quote(container_id)}/archive?path={quote(path)}",
            headers={"Content-Type": "application/x-tar"}, data=tar,
        )
        content = await self._body(response, self.timeout)
        if response.status != 200:
            raise self.refused(f"copy files into container {container_id[:12]} at {path}", response.status,
                               _maybe_json(content))

    async def attach(self, container_id: str) -> StreamAnswer:
        """The container's stdout and stderr from now on, as multiplexed frames; call before
        ``start`` so nothing it prints is missed (the engine attaches before answering)."""
        response = await self._open("POST", f"/containers/{quote(container_id)}/attach?stream=1&stdout=1&stderr=1")
        return await self._streaming(response, f"attach to container {container_id[:12]}")

    async def logs(self, container_id: str, follow: bool) -> StreamAnswer:
        """The container's output from its start, as multiplexed frames (to resume a stream)."""
        response = await self._open(
            "GET", f"/containers/{quote(container_id)}/logs?stdout=1&stderr=1&follow={int(follow)}"
        )
        return await self._streaming(response, f"read the log of container {container_id[:12]}")

    async def _streaming(self, response: StreamAnswer, action: str) -> StreamAnswer:
        if response.status in (101, 200):
            return response
        raise self.refused(action, response.status, _maybe_json(await self._body(response, self.timeout)))


@functools.lru_cache(maxsize=256)
def _tls_context(t: TlsFiles) -> ssl.SSLContext:
    """The connection's TLS files, and only those: no environment variable replaces the CA.

    Built once per set of files: loading a CA store reads files synchronously (about 18 ms for
    the system store), which a poll of a pool inside the triggerer's event loop must not repeat.
    A certificate replaced on disk under the same path takes effect when the process restarts."""
    ctx = ssl.create_default_context(cafile=t.ca_cert)
    if not t.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if t.client_cert and t.client_key:
        ctx.load_cert_chain(t.client_cert, t.client_key)
    return ctx


async def _follow_progress(response: StreamAnswer, progress: Callable[[dict[str, Any]], None] | None) -> str | None:
    """Read a pull's JSON lines to the end; the error it reported, if any. Silence longer than
    ``PULL_IDLE_S`` raises ``TimeoutError``: a pull may take an hour, but not in silence."""
    buffer, error = b"", None
    while chunk := await asyncio.wait_for(response.read(), PULL_IDLE_S):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            doc = _maybe_json(line)
            if not isinstance(doc, dict):
                continue
            if doc.get("error"):
                error = str(doc.get("error"))
            elif progress is not None:
                progress(doc)
    return error


def _path_stat(headers: Mapping[str, str]) -> dict[str, Any]:
    """The engine's ``X-Docker-Container-Path-Stat`` header (base64 JSON: name, size, mode)."""
    try:
        doc = json.loads(base64.b64decode(headers.get("x-docker-container-path-stat", "")) or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _maybe_json(content: bytes) -> Any:
    try:
        return json.loads(content) if content.strip() else None
    except ValueError:
        return content[:500].decode("utf-8", "replace")


def _reason(doc: Any) -> str:
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    return repr(doc)
