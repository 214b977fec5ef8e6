"""A GPU host whose Docker engine listens on tcp:// with mutual TLS, as remote hosts of a pool do.

The engine is a private dockerd (``--tlsverify``) on 127.0.0.1 with certificates from ``tools.pki``:
a CA, a server certificate for 127.0.0.1, a client certificate, and a second CA that the
engine does not trust. Everything the provider asks an engine (the pool read, the claims, the
operator's container) goes through its one engine client, over TLS.
The engine and the agent are stopped by pid, every container removed by id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import pytest

from provider.scheduling.no_fit import NoFit
from provider.operators.gpu_docker import GpuDockerOperator
from tests.conftest import FakeTI, TaskLog, run_task
from tests.integration.agents import RunningAgent, gpus, start_agent, stop_agent
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd
from tools.local_airflow import free_port
from tools.pki import Pki, make_pki

pytestmark = pytest.mark.integration


@dataclass
class TlsHost:
    pki: Pki
    engine: PrivateDockerd
    url: str
    agent: RunningAgent


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHost]:
    workdir = tmp_path_factory.mktemp("tls")
    pki = make_pki(workdir)
    url = f"tcp://127.0.0.1:{free_port()}"
    engine = PrivateDockerd("tls", simulated_gpus=True, extra_args=[
        f"--host={url}", "--tlsverify", f"--tlscacert={pki.ca}", f"--tlscert={pki.server_cert}",
        f"--tlskey={pki.server_key}",
    ])
    agent: RunningAgent | None = None
    try:
        engine.start()
        engine.load(TESTBOX_IMAGE)
        agent = start_agent(workdir, "tls_host", gpus(2, "A100-80GB", 81920))
        yield TlsHost(pki, engine, url, agent)
    finally:
        if agent is not None:
            stop_agent(agent.process)
        engine.stop()


def define(monkeypatch: pytest.MonkeyPatch, h: TlsHost, **tls: Any) -> None:
    """The ``tls_host`` connection: the engine's tcp:// URL, the agent, and the TLS files."""
    extra = {"agent_url": h.agent.url, "tls_ca_cert": str(h.pki.ca), "tls_client_cert": str(h.pki.client_cert),
             "tls_client_key": str(h.pki.client_key), **tls}
    conn = {"conn_type": "gpu_docker_host", "host": h.url, "extra": {k: v for k, v in extra.items() if v is not None}}
    monkeypatch.setenv("AIRFLOW_CONN_TLS_HOST", json.dumps(conn))


@pytest.fixture(autouse=True)
def nothing_left(tls_host: TlsHost, monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> Iterator[None]:
    # As on many company workers: a CA bundle for requests in the environment, which must not
    # replace the connection's own CA file.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    yield
    assert tls_host.engine.containers() == []


def run(ti: FakeTI, **kwargs: Any) -> dict[str, Any]:
    op = GpuDockerOperator(task_id="train", image=TESTBOX_IMAGE, pull="never", **kwargs)
    return run_task(op, ti)


def test_operator_runs_on_a_tls_engine(tls_host: TlsHost, monkeypatch: pytest.MonkeyPatch, ti: FakeTI,
                                       task_log: TaskLog) -> None:
    define(monkeypatch, tls_host)
    out = run(ti, host="tls_host", command=["sh", "-c", "echo over tls"])
    assert (out["host"], out["exit_code"]) == ("tls_host", 0)
    assert "over tls" in task_log.texts("stdout")


def test_placement_reads_and_claims_over_tls(tls_host: TlsHost, monkeypatch: pytest.MonkeyPatch, ti: FakeTI,
                                             task_log: TaskLog) -> None:
    define(monkeypatch, tls_host)
    out = run(ti, gpu_pool=["tls_host"], gpus=2, command=["sh", "-c", 'echo "visible=$NVIDIA_VISIBLE_DEVICES"'])
    assert (out["host"], out["gpus"], out["exit_code"]) == ("tls_host", [0, 1], 0)
    assert "visible=0,1" in task_log.texts("stdout")
    assert ti.xcoms["placement"]["scores"].keys() == {"tls_host"}


@pytest.mark.parametrize(
    ("tls", "why"),
    [
        pytest.param({"tls_ca_cert": "stranger"}, "certificate verify failed", id="engine-not-signed-by-our-ca"),
        pytest.param({"tls_client_cert": None, "tls_client_key": None}, "bad certificate|certificate required",
                     id="no-client-certificate"),  # the alert's name depends on the TLS version
    ],
)
def test_tls_failures_name_the_host_the_cause_and_what_to_check(
    tls_host: TlsHost, monkeypatch: pytest.MonkeyPatch, ti: FakeTI, tls: dict[str, Any], why: str
) -> None:
    if tls.get("tls_ca_cert") == "stranger":
        tls["tls_ca_cert"] = str(tls_host.pki.stranger_ca)
    fix = "The TLS handshake failed: check that tls_ca_cert of connection 'tls_host'"
    # Without an agent and with one, the engine is read through the one client the same way.
    define(monkeypatch, tls_host, agent_url=None, **tls)
    with pytest.raises(NoFit, match=r"host 'tls_host' at tcp://127\.0\.0\.1:\d+") as direct:
        run(ti, host="tls_host", command=["true"])
    assert re.search(why, str(direct.value)) and fix in str(direct.value)
    define(monkeypatch, tls_host, **tls)
    with pytest.raises(NoFit) as placed:
        run(ti, gpu_pool=["tls_host"], gpus=1, command=["true"])
    assert "tls_host: unreachable" in str(placed.value) and fix in str(placed.value)
    assert re.search(why, str(placed.value)), placed.value
