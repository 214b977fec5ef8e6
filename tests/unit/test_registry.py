"""Registry credentials from the stock ``docker`` connection, pull failures, pull progress."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from provider.errors import HostConfigError
from provider.clients.registry_auth import (
    PullProgress,
    RegistryAuth,
    auth_header,
    check_matches,
    image_registry,
    pull_failure_fix,
    registry_address,
    registry_auth,
)


@dataclass
class Conn:
    """The fields of an Airflow ``docker`` connection this provider reads."""

    conn_id: str = "registry"
    conn_type: str | None = "docker"
    host: str | None = "registry.example.com"
    port: int | None = None
    login: str | None = "trainer"
    password: str | None = "s3cret"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return self.extra


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [
        pytest.param("registry.example.com", None, "registry.example.com", id="name"),
        pytest.param("registry.example.com", 5000, "registry.example.com:5000", id="port-field"),
        pytest.param("https://registry.example.com:5000/", None, "registry.example.com:5000", id="url"),
        pytest.param("127.0.0.1:41234", None, "127.0.0.1:41234", id="address"),
    ],
)
def test_registry_address_is_what_the_engine_names(host: str, port: int | None, address: str) -> None:
    assert registry_address(host, port) == address


def test_a_docker_connection_maps_to_a_login_with_the_email_extra() -> None:
    auth = registry_auth(Conn(port=5000, extra={"email": "a@example.org", "reauth": False}))
    assert auth == RegistryAuth("registry", "registry.example.com:5000", "trainer", "s3cret", "a@example.org")
    assert "s3cret" not in repr(auth)


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        pytest.param(Conn(conn_type="gpu_docker_host"), "needs a connection of type 'docker'", id="wrong-type"),
        pytest.param(Conn(host=None), "names no registry", id="no-host"),
        pytest.param(Conn(login=None), "needs a login", id="no-login"),
        pytest.param(Conn(password=None), r"needs a login \(Username\) and a password", id="no-password"),
    ],
)
def test_incomplete_connections_are_refused_with_the_fix(conn: Conn, message: str) -> None:
    with pytest.raises(HostConfigError, match=message):
        registry_auth(conn)


def test_auth_header_is_the_engines_base64url_json() -> None:
    header = auth_header(RegistryAuth("r", "127.0.0.1:5000", "u", "p"))
    assert json.loads(base64.urlsafe_b64decode(header)) == {"username": "u", "password": "p",
                                                            "serveraddress": "127.0.0.1:5000"}


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        pytest.param("trainer:1", "docker.io", id="hub-short"),
        pytest.param("team/trainer:1", "docker.io", id="hub-org"),
        pytest.param("registry.example.com/team/trainer:1.2", "registry.example.com", id="dotted"),
        pytest.param("127.0.0.1:5000/trainer@sha256:" + "a" * 64, "127.0.0.1:5000", id="port-digest"),
        pytest.param("localhost/trainer", "localhost", id="localhost"),
    ],
)
def test_image_registry_follows_dockers_rule(image: str, registry: str) -> None:
    assert image_registry(image) == registry


def test_credentials_for_another_registry_are_refused() -> None:
    auth = RegistryAuth("registry", "registry.example.com", "u", "p")
    check_matches(auth, "registry.example.com/team/trainer:1.2")
    with pytest.raises(HostConfigError, match="pulled from other.example.com, but docker_conn_id 'registry'"):
        check_matches(auth, "other.example.com/team/trainer:1.2")


@pytest.mark.parametrize(
    ("reason", "fix"),
    [
        pytest.param("unauthorized: authentication required", "refused connection 'registry' (user 'u')",
                     id="wrong-password"),
        pytest.param("manifest unknown: manifest unknown", "has no 'r.example.com/t:1'", id="missing-tag"),
        pytest.param("x509: certificate signed by unknown authority", "certs.d/r.example.com/ca.crt", id="tls"),
        pytest.param("dial tcp 10.0.0.9:443: connect: connection refused", "did not answer the host", id="down"),
    ],
)
def test_pull_failures_say_what_to_do(reason: str, fix: str) -> None:
    assert fix in pull_failure_fix(reason, "r.example.com/t:1", RegistryAuth("registry", "r.example.com", "u", "p"))


def test_pull_progress_logs_state_changes_and_a_summary_every_interval() -> None:
    lines: list[str] = []
    now = [0.0]
    progress = PullProgress(lines.append, lambda: now[0], interval_s=5.0)
    progress({"status": "Pulling from team/trainer", "id": "1.2"})
    progress({"status": "Pulling fs layer", "id": "aaa"})
    for current in range(0, 100, 10):  # one message per chunk, a second apart
        now[0] += 1.0
        progress({"status": "Downloading", "id": "aaa", "progressDetail": {"current": current * 10**6,
                                                                          "total": 100 * 10**6}})
    progress({"status": "Pull complete", "id": "aaa"})
    progress({"status": "Digest: sha256:abc"})
    progress({"progressDetail": {}})
    assert lines == [
        "Pulling from team/trainer (1.2)",
        "layer aaa: Pulling fs layer",
        "layer aaa: Downloading",
        "downloading: 50 of 100 MB in 1 layers",
        "layer aaa: Pull complete",
        "Digest: sha256:abc",
    ]
