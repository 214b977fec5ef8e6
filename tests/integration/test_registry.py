"""Pulls from a private registry that asks for a login, through the raw Engine API.

One registry (TLS, htpasswd logins) and two private engines: ``pusher`` pushes the test image,
and ``puller``, which starts every test with no image, pulls it with ``POST /images/create`` and
an ``X-Registry-Auth`` header, as a client of the Engine API does. The failure tests pin down
what the engine answers (status and message) for each cause, since that is all a caller has
to tell a wrong password from a missing image or a registry that is down.

The registry is on loopback, which dockerd always treats as an insecure registry (see
:mod:`tools.registry`): where its HTTPS attempt fails (registry down, no login), the answer
comes from its retry over plain HTTP. The registry and the engines are stopped by pid; pulled
images are removed by id.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd
from tools.registry import PrivateRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry() -> Iterator[PrivateRegistry]:
    r = PrivateRegistry()
    try:
        yield r.start()
    finally:
        r.stop()


@pytest.fixture(scope="module")
def pusher() -> Iterator[PrivateDockerd]:
    engine = PrivateDockerd("push")
    try:
        engine.start()
        engine.load(TESTBOX_IMAGE)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def puller() -> Iterator[PrivateDockerd]:
    engine = PrivateDockerd("pull")
    try:
        yield engine.start()
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def pushed(registry: PrivateRegistry, pusher: PrivateDockerd) -> str:
    return registry.push(pusher, TESTBOX_IMAGE, "team/testbox:0.1")


@pytest.fixture(autouse=True)
def puller_starts_empty(puller: PrivateDockerd) -> Iterator[None]:
    with puller.client() as c:
        assert c.api.images() == []
    yield
    with puller.client() as c:
        for image in c.api.images():
            c.api.remove_image(image["Id"], force=True)
    assert puller.containers() == []


class UnixConnection(http.client.HTTPConnection):
    """HTTP over an engine's unix socket."""

    def __init__(self, socket_path: str, timeout: float = 120) -> None:
        super().__init__("docker", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


@dataclass(frozen=True)
class Answer:
    """The engine's answer to a pull: HTTP status and every JSON document of the body."""

    status: int
    docs: list[dict[str, Any]]

    @property
    def message(self) -> str:
        """The refusal's ``message`` (a status other than 200) or the stream's ``error`` lines."""
        return "\n".join(str(d.get("message") or d.get("error")) for d in self.docs if "message" in d or "error" in d)


def registry_auth(login: dict[str, str]) -> str:
    """The ``X-Registry-Auth`` header: the login as JSON, base64url-encoded."""
    return base64.urlsafe_b64encode(json.dumps(login).encode()).decode()


def pull(engine: PrivateDockerd, reference: str, login: dict[str, str] | None) -> Answer:
    repo, _, tag = reference.rpartition(":")
    headers = {"X-Registry-Auth": registry_auth(login)} if login is not None else {}
    conn = UnixConnection(str(engine.socket))
    try:
        conn.request("POST", "/v1.41/images/create?" + urlencode({"fromImage": repo, "tag": tag}), headers=headers)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return Answer(response.status, [json.loads(line) for line in body.splitlines() if line.strip()])


def test_a_login_pulls_the_pushed_image(registry: PrivateRegistry, puller: PrivateDockerd, pushed: str) -> None:
    answer = pull(puller, pushed, registry.credentials)
    assert answer.status == 200 and answer.message == ""
    assert answer.docs[-1] == {"status": f"Status: Downloaded newer image for {pushed}"}
    with puller.client() as c:
        assert c.api.inspect_image(pushed)["RepoTags"] == [pushed]


def test_wrong_password(registry: PrivateRegistry, puller: PrivateDockerd, pushed: str) -> None:
    answer = pull(puller, pushed, {**registry.credentials, "password": "not-the-password"})
    assert (answer.status, answer.message) == (500, "unauthorized: authentication required")


def test_repository_that_does_not_exist(registry: PrivateRegistry, puller: PrivateDockerd, pushed: str) -> None:
    missing = f"{registry.address}/team/nothing:0.1"
    answer = pull(puller, missing, registry.credentials)
    assert answer.status == 404
    assert answer.message == f"manifest for {missing} not found: manifest unknown: manifest unknown"


def test_registry_stopped(puller: PrivateDockerd) -> None:
    with PrivateRegistry() as gone:
        login = gone.credentials
    answer = pull(puller, f"{gone.address}/team/testbox:0.1", login)
    assert answer.status == 500
    assert answer.message == (
        f'Get "http://{gone.address}/v2/": dial tcp {gone.address}: connect: connection refused'
    )


def test_no_login(puller: PrivateDockerd, pushed: str) -> None:
    # Refused over HTTPS without a login, the engine retries over plain HTTP (loopback is an
    # insecure registry) and reports the registry's answer to that.
    answer = pull(puller, pushed, None)
    assert answer.status == 500
    assert "Client sent an HTTP request to an HTTPS server." in answer.message


def test_blobs_lost_by_the_registry_fail_inside_the_stream(
    registry: PrivateRegistry, pusher: PrivateDockerd, puller: PrivateDockerd
) -> None:
    broken = registry.push(pusher, TESTBOX_IMAGE, "team/broken:0.1")
    registry.lose_blobs("team/broken")
    answer = pull(puller, broken, registry.credentials)
    # The manifest was found, so the engine had begun its 200 answer; the error is a line in it.
    assert answer.status == 200
    assert answer.docs[0] == {"status": "Pulling from team/broken", "id": "0.1"}
    assert answer.message.startswith("error pulling image configuration: ") and "unknown blob" in answer.message
