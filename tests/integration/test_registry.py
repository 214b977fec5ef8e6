"""Trainer images from a private registry with a login, and placement that knows where images are.

One registry (Debian's Distribution, TLS, htpasswd logins, :mod:`tools.registry`) on an
address inside a network namespace of this test (:mod:`tools.netns`), whose certificate the
engines verify with the CA the test puts into ``/etc/docker/certs.d`` for that address, and three
private engines with simulated NVIDIA runtimes and node agents (two simulated GPUs each):
``img_a`` pushes the test image to the registry and so holds it; ``img_b`` and ``img_c`` start
every test without it. The operator pulls with a connection of the Docker provider's own type
``docker`` (``docker_conn_id``). Registries, engines and agents are stopped by pid, the
namespace and its veth pair removed by name; every pulled image and every container is removed
by id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import BaseHook

from provider.errors import HostConfigError, ImageMissing
from provider.clients.hosts import resolve_pool
from provider.operators.gpu_docker import GpuDockerOperator
from provider.labels import CLAIM_LABEL
from provider.scheduling.model import PlacementRequest
from tests.conftest import FakeTI, TaskLog, release_now, reserve_now, run_task
from tests.integration.agents import RunningAgent, gpus, start_agent, stop_agent
from tests.integration.conftest import define_host
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd, stop_engines
from tools.netns import Link, veth_namespace
from tools.registry import PrivateRegistry

pytestmark = pytest.mark.integration

HOSTS = ("img_a", "img_b", "img_c")
CONN = "team_registry"


@dataclass
class Site:
    link: Link
    registry: PrivateRegistry
    engines: dict[str, PrivateDockerd]
    agents: dict[str, RunningAgent]
    image: str
    """The test image as pushed: ``127.0.0.1:PORT/team/testbox:0.1``, held by ``img_a``."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("registry")
    engines: dict[str, PrivateDockerd] = {}
    agents: dict[str, RunningAgent] = {}
    with ExitStack() as stack:
        link = stack.enter_context(veth_namespace(f"t{os.getpid()}"))
        registry = stack.enter_context(PrivateRegistry(ip=link.peer_ip, netns=link.netns, trusted=True))
        stack.callback(_stop_all, engines, agents)
        for name in HOSTS:
            engines[name] = PrivateDockerd(name, simulated_gpus=True).start()
            agents[name] = start_agent(workdir, name, gpus(2, "A100-80GB", 81920))
        engines["img_a"].load(TESTBOX_IMAGE)
        yield Site(link, registry, engines, agents,
                   registry.push(engines["img_a"], TESTBOX_IMAGE, "team/testbox:0.1"))


def _stop_all(engines: dict[str, PrivateDockerd], agents: dict[str, RunningAgent]) -> None:
    for agent in agents.values():
        stop_agent(agent.process)
    stop_engines(engines.values())


def define_registry(monkeypatch: pytest.MonkeyPatch, conn_id: str, address: str, login: str, password: str) -> None:
    """A ``docker`` connection, defined as users define one."""
    conn = {"conn_type": "docker", "host": address, "login": login, "password": password}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@pytest.fixture(autouse=True)
def connections(site: Site, monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> Iterator[None]:
    for name in HOSTS:
        define_host(monkeypatch, name, site.engines[name].url, site.agents[name].url)
    define_registry(monkeypatch, CONN, site.registry.address, site.registry.user, site.registry.password)
    yield
    for name in ("img_b", "img_c"):  # back to no image, and nothing left anywhere
        with site.engines[name].client() as c:
            for image in c.api.images():
                c.api.remove_image(image["Id"], force=True)
    for engine in site.engines.values():
        assert engine.containers() == [], "a test left a container (claim, lock or task) behind"


def train(site: Site, ti: FakeTI, pool: list[str], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("docker_conn_id", CONN)
    op = GpuDockerOperator(task_id="train", image=kwargs.pop("image", site.image), gpu_pool=pool, gpus=1,
                           command=["sh", "-c", "echo trained"], log_archive=None, **kwargs)
    return run_task(op, ti)


def test_the_operator_pulls_with_the_stock_docker_connection(site: Site, ti: FakeTI, task_log: TaskLog) -> None:
    out = train(site, ti, ["img_b"])
    assert (out["host"], out["exit_code"]) == ("img_b", 0) and "trained" in task_log.texts("stdout")
    text = "\n".join(task_log.texts())
    assert "Pulling from team/testbox (0.1)" in text and "Pull complete" in text
    assert text.count("Downloading") <= 2 * len([line for line in text.splitlines() if "Pulling fs layer" in line])
    secret = site.registry.password
    assert secret not in text and secret not in json.dumps(ti.xcoms) and secret not in json.dumps(out)


@pytest.mark.parametrize(
    ("login", "password", "image", "message"),
    [
        pytest.param(None, "not-the-password", None,
                     r"refused connection 'bad_registry' \(user 'trainer'\): check the login and password",
                     id="wrong-password"),
        pytest.param(None, None, "team/nothing:0.1", r"has no '[\d.]+:\d+/team/nothing:0\.1': check the repository",
                     id="unknown-repository"),
    ],
)
def test_a_refused_pull_names_the_registry_the_connection_and_the_fix(
    site: Site, ti: FakeTI, monkeypatch: pytest.MonkeyPatch, login: str | None, password: str | None,
    image: str | None, message: str,
) -> None:
    define_registry(monkeypatch, "bad_registry", site.registry.address, login or site.registry.user,
                    password or site.registry.password)
    ref = f"{site.registry.address}/{image}" if image else site.image
    with pytest.raises(ImageMissing, match=message) as err:
        train(site, ti, ["img_b"], image=ref, docker_conn_id="bad_registry")
    assert site.registry.password not in str(err.value)
    assert site.engines["img_b"].containers(f"{CLAIM_LABEL}=true") == []  # nothing was reserved


def test_a_registry_that_is_down_is_named(site: Site, ti: FakeTI, monkeypatch: pytest.MonkeyPatch) -> None:
    with PrivateRegistry() as gone:
        pass
    define_registry(monkeypatch, "gone_registry", gone.address, gone.user, gone.password)
    with pytest.raises(ImageMissing, match=rf"with docker_conn_id 'gone_registry' failed: .*connection refused.*"
                                           rf"Registry {gone.address} did not answer the host"):
        train(site, ti, ["img_b"], image=f"{gone.address}/team/testbox:0.1", docker_conn_id="gone_registry")


def test_an_untrusted_registry_certificate_is_named_with_the_fix(
    site: Site, ti: FakeTI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second registry in the namespace whose CA no engine was given: the engine refuses its
    certificate, and the task says where the registry's CA belongs."""
    with PrivateRegistry(ip=site.link.peer_ip, netns=site.link.netns) as stranger:
        define_registry(monkeypatch, "stranger", stranger.address, stranger.user, stranger.password)
        with pytest.raises(ImageMissing, match=rf"x509.*does not trust registry {stranger.address}'s certificate: "
                                               rf"install its CA as /etc/docker/certs.d/{stranger.address}/ca.crt"):
            train(site, ti, ["img_b"], image=f"{stranger.address}/team/testbox:0.1", docker_conn_id="stranger")


def test_a_pull_that_fails_half_way_leaves_no_claim(site: Site, ti: FakeTI) -> None:
    broken = site.registry.push(site.engines["img_a"], TESTBOX_IMAGE, "team/broken:0.1")
    site.registry.lose_blobs("team/broken")
    with pytest.raises(ImageMissing, match="unknown blob"):
        train(site, ti, ["img_b"], image=broken)
    assert site.engines["img_b"].containers(f"{CLAIM_LABEL}=true") == []


def test_credentials_for_another_registry_are_refused_before_any_host_is_asked(site: Site, ti: FakeTI) -> None:
    with pytest.raises(HostConfigError, match=f"pulled from docker.io, but docker_conn_id '{CONN}' logs in to"):
        train(site, ti, ["img_b"], image="team/testbox:0.1")


def test_placement_goes_where_the_image_is_and_pulls_when_that_host_is_full(
    site: Site, ti: FakeTI, task_log: TaskLog
) -> None:
    # The test image is a few MB: a penalty per GB that makes its pull worth 20 points, so that it
    # and not the agents' CPU readings (each sampled at its own moment) decides between the hosts.
    penalty = 20 / (site_image_bytes(site) / 1e9)
    out = train(site, ti, list(HOSTS), pull_penalty_per_gb=penalty)
    record = ti.xcoms["placement"]
    assert out["host"] == "img_a" and record["host"] == "img_a"
    size = record["pull_bytes"]["img_b"]
    assert record["pull_bytes"] == {"img_a": 0, "img_b": size, "img_c": size} and size > 0
    assert record["scores"]["img_a"] > max(record["scores"]["img_b"], record["scores"]["img_c"])
    assert "Pulling from" not in "\n".join(task_log.texts())
    # With img_a's GPUs taken, the task goes to another host and pulls there.
    hosts = resolve_pool(["img_a"], BaseHook.get_connection)
    full = reserve_now(hosts, PlacementRequest(gpus=2), image=site.image)
    try:
        out = train(site, ti, list(HOSTS), pull_penalty_per_gb=penalty)
    finally:
        release_now(full)
    assert out["host"] in ("img_b", "img_c") and "Pulling from team/testbox" in "\n".join(task_log.texts())
    assert "img_a" in ti.xcoms["placement"]["rejections"]


def site_image_bytes(site: Site) -> int:
    with site.engines["img_a"].client() as c:
        return int(c.api.inspect_image(site.image)["Size"])
