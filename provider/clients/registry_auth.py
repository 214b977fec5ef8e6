"""Registry credentials from the stock ``docker`` connection type, and what a failed pull means.

Airflow users already keep registry logins as connections of the Docker provider's type
``docker`` (``docker_conn_id``): *Registry URL* in host (and port), *Username* in login, the
password, and optionally ``email`` in extra. The same connection works here unchanged. The
credential travels with one pull request to the engine of the host that pulls (the engine API's
``X-Registry-Auth`` header), so nothing is stored on any host, and it never appears in a task
log, an XCom, a placement record or the cluster page: Airflow masks a connection's password in
task logs once the connection is read, and this module never puts it into a message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from provider.errors import HostConfigError

DOCKER_CONN_TYPE = "docker"
DOCKER_HUB = "docker.io"


class RegistryConnection(Protocol):
    """The part of an Airflow ``docker`` connection this module reads."""

    conn_id: str
    conn_type: str | None
    host: str | None
    port: int | None
    login: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """A login to one registry, read from a ``docker`` connection."""

    conn_id: str
    registry: str
    username: str
    password: str = field(repr=False)
    email: str | None = None


def docker_connection(conn_id: str, get_connection: Callable[[str], RegistryConnection]) -> RegistryConnection:
    """The ``docker`` connection ``conn_id``, by ``get_connection`` (Airflow's
    ``BaseHook.get_connection`` finds it wherever connections are kept)."""
    try:
        conn = get_connection(conn_id)
    except Exception as exc:
        raise HostConfigError(
            f"docker_conn_id {conn_id!r} is not defined ({exc}). Create a connection of type 'Docker' with the "
            f"Registry URL, Username and Password (Admin > Connections), or set AIRFLOW_CONN_{conn_id.upper()}."
        ) from exc
    return conn


def registry_auth(conn: RegistryConnection) -> RegistryAuth:
    """Map a ``docker`` connection to a :class:`RegistryAuth`, checking every field."""
    if conn.conn_type not in (DOCKER_CONN_TYPE, None, ""):
        raise HostConfigError(
            f"Connection {conn.conn_id!r} has type {conn.conn_type!r}; docker_conn_id needs a connection of "
            f"type {DOCKER_CONN_TYPE!r} (Registry URL, Username, Password), as the Docker provider defines it."
        )
    registry = registry_address(conn.host or "", conn.port)
    if not registry:
        raise HostConfigError(
            f"Connection {conn.conn_id!r} names no registry: set its host (Registry URL) to e.g. "
            "registry.example.com or registry.example.com:5000."
        )
    if not conn.login or not conn.password:
        raise HostConfigError(
            f"Connection {conn.conn_id!r} for registry {registry} needs a login (Username) and a password."
        )
    email = conn.extra_dejson.get("email") or None
    return RegistryAuth(conn.conn_id, registry, conn.login, conn.password, str(email) if email else None)


def registry_address(host: str, port: int | None) -> str:
    """``host[:port]`` as the engine names a registry: no scheme, no path."""
    text = host.strip()
    if "://" in text:
        parts = urlsplit(text)
        text = parts.netloc or parts.path
    text = text.strip("/").split("/", 1)[0]
    if port and ":" not in text:
        text = f"{text}:{port}"
    return text


def image_registry(image: str) -> str:
    """The registry an image reference pulls from, by Docker's rule: the first path component
    when it has a dot or a colon or is ``localhost``, otherwise Docker Hub."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def check_matches(auth: RegistryAuth, image: str) -> None:
    """Refuse credentials for another registry than the image's: the engine would send them
    nowhere, and the pull would fail later with a less useful message."""
    wanted = image_registry(image)
    if wanted != auth.registry and not (wanted == DOCKER_HUB and auth.registry.endswith("docker.io")):
        raise HostConfigError(
            f"Image {image!r} is pulled from {wanted}, but docker_conn_id {auth.conn_id!r} logs in to "
            f"{auth.registry}. Name the image with its registry ({auth.registry}/...) or use the "
            f"connection of {wanted}."
        )


def auth_header(auth: RegistryAuth) -> str:
    """The ``X-Registry-Auth`` value: base64url of the credential's JSON, as the engine API takes it."""
    doc = {"username": auth.username, "password": auth.password, "serveraddress": auth.registry}
    if auth.email:
        doc["email"] = auth.email
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def pull_failure_fix(reason: str, image: str, auth: RegistryAuth | None) -> str:
    """What to do about a pull the engine reported as failed with ``reason``."""
    registry = image_registry(image)
    text = reason.lower()
    who = f"connection {auth.conn_id!r} (user {auth.username!r})" if auth else "no credentials (docker_conn_id unset)"
    if "unauthorized" in text or "authentication required" in text or "denied" in text or " 401" in text:
        return (f"Registry {registry} refused {who}: check the login and password of the connection "
                "(Admin > Connections), or that this user may pull the repository; give docker_conn_id for a "
                "private registry.")
    if "manifest unknown" in text or "not found" in text or "does not exist" in text or "name unknown" in text:
        return f"Registry {registry} has no {image!r}: check the repository name and tag, or push the image there."
    if "x509" in text or "certificate" in text:
        return (f"The host does not trust registry {registry}'s certificate: install its CA as "
                f"/etc/docker/certs.d/{registry}/ca.crt on the host.")
    return (f"Registry {registry} did not answer the host: check that it runs and that the host reaches it "
            "(address, port, firewall, proxy).")


class PullProgress:
    """A pull's progress as a few task-log lines, not one per chunk.

    The engine sends a status message for every chunk of every layer. This logs a line when a
    layer changes state ("Pulling fs layer", "Downloading", "Download complete", "Extracting",
    "Pull complete", ...) and, while bytes flow, a summary at most every ``interval_s`` seconds.
    """

    def __init__(self, log: Callable[[str], None], clock: Callable[[], float], interval_s: float = 5.0) -> None:
        self.log = log
        self.clock = clock
        self.interval_s = interval_s
        self._states: dict[str, str] = {}
        self._bytes: dict[str, tuple[int, int]] = {}
        self._last = clock()

    def __call__(self, message: Mapping[str, Any]) -> None:
        layer, status = str(message.get("id") or ""), str(message.get("status") or "")
        if not status:
            return
        detail = message.get("progressDetail") or {}
        if status == "Downloading" and isinstance(detail, Mapping) and detail.get("total"):
            self._bytes[layer] = (int(detail.get("current") or 0), int(detail["total"]))
        if not layer or status.startswith("Pulling from"):
            self.log(f"{status} ({layer})" if layer else status)
        elif self._states.get(layer) != status:
            self._states[layer] = status
            self.log(f"layer {layer}: {status}")
        elif self.clock() - self._last >= self.interval_s and self._bytes:
            done = sum(c for c, _ in self._bytes.values())
            total = sum(t for _, t in self._bytes.values())
            self.log(f"downloading: {done / 1e6:.0f} of {total / 1e6:.0f} MB in {len(self._bytes)} layers")
        else:
            return
        self._last = self.clock()
