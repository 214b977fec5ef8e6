"""The transport rules: a tcp:// engine only over verified TLS unless the connection says
insecure, strict TLS extras, and the node agent's start-up checks (token off loopback, TLS files)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection

from provider.agent.__main__ import build_parser, check_auth, is_loopback, parse_engine, positive, server_tls
from provider.clients.agent import read_agent
from provider.clients.hosts import HostConfig, TlsFiles, host_from_connection, resolve_pool
from provider.errors import HostConfigError

TLS = {"tls_ca_cert": "/etc/gpu-docker/ca.pem", "tls_client_cert": "/etc/gpu-docker/cert.pem",
       "tls_client_key": "/etc/gpu-docker/key.pem"}


def conn(host: str = "tcp://gpu-a:2376", conn_id: str = "gpu_a", **extra: Any) -> Connection:
    return Connection(conn_id=conn_id, conn_type="gpu_docker_host", host=host, password="tok", extra=json.dumps(extra))


@pytest.mark.parametrize(
    ("extra", "cause"),
    [
        pytest.param({}, "has no TLS files", id="plain-tcp"),
        pytest.param({**TLS, "tls_verify": False}, "tls_verify false", id="unverified-tls"),
        pytest.param({"insecure": False}, "has no TLS files", id="insecure-false"),
        pytest.param({"insecure": None}, "has no TLS files", id="insecure-empty-in-form"),
    ],
)
def test_tcp_without_verified_tls_is_refused_naming_risk_and_fix(extra: dict[str, Any], cause: str) -> None:
    with pytest.raises(HostConfigError, match=cause) as refused:
        host_from_connection(conn(**extra))
    message = str(refused.value)
    for part in ("'gpu_a'", "tcp://gpu-a:2376", "root on", "registry credentials", "tls_ca_cert",
                 "tls_client_cert", "tls_client_key", "docs/transport.md", '"insecure": true'):
        assert part in message


@pytest.mark.parametrize(
    ("host", "extra"),
    [
        pytest.param("tcp://gpu-a:2376", TLS, id="verified-tls"),
        pytest.param("tcp://gpu-a:2376", {"tls_ca_cert": "/ca.pem"}, id="server-tls-only"),
        pytest.param("tcp://gpu-a:2375", {"insecure": True}, id="insecure-said"),
        pytest.param("tcp://gpu-a:2376", {**TLS, "tls_verify": False, "insecure": True}, id="unverified-said"),
        pytest.param("unix:///var/run/docker.sock", {}, id="unix-socket"),
    ],
)
def test_verified_tls_unix_or_an_explicit_insecure_is_accepted(host: str, extra: dict[str, Any]) -> None:
    made = host_from_connection(conn(host, **extra))
    assert made.insecure is bool(extra.get("insecure"))


def test_every_way_of_making_a_host_is_checked() -> None:
    """Code that builds a host itself cannot skip the rule the connection has."""
    with pytest.raises(HostConfigError, match="has no TLS files"):
        HostConfig("gpu_a", "tcp://gpu-a:2375")
    with pytest.raises(HostConfigError, match="tls_verify false"):
        HostConfig("gpu_a", "tcp://gpu-a:2376", tls=TlsFiles("/ca.pem", verify=False))
    assert HostConfig("gpu_a", "tcp://gpu-a:2375", insecure=True).insecure


def test_docker_host_in_clear_is_refused_for_the_default_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.9:2375")

    def undefined(conn_id: str) -> Connection:
        raise KeyError(conn_id)

    with pytest.raises(HostConfigError, match="'gpu_docker_default'.*has no TLS files.*comes from DOCKER_HOST"):
        resolve_pool(None, undefined)


def test_a_refused_default_connection_is_an_error_not_the_local_engine() -> None:
    """Before, any error reading ``gpu_docker_default`` fell back to this machine's engine: a
    connection refused for its transport would silently run tasks elsewhere."""
    with pytest.raises(HostConfigError, match="'gpu_docker_default'.*has no TLS files"):
        resolve_pool(None, lambda conn_id: conn(conn_id=conn_id))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param({"insecure": "true"}, r"extra insecure must be true or false .*'true'", id="insecure-string"),
        pytest.param({**TLS, "tls_verify": "false"}, r"extra tls_verify must be true or false .*'false'",
                     id="verify-string"),
        pytest.param({"insecure": 1}, "extra insecure must be true or false", id="insecure-number"),
        pytest.param({"tls_ca_cert": "/ca.pem", "tls_client_cert": "/c.pem"}, "go together.*only tls_client_cert",
                     id="cert-without-key"),
        pytest.param({"tls_client_key": "/k.pem"}, "go together.*only tls_client_key", id="key-without-cert"),
        pytest.param({"tls_ca_cert": ["/ca.pem"]}, "extra tls_ca_cert must be the path of a PEM file",
                     id="ca-not-a-path"),
        pytest.param({**TLS, "agent_ca_cert": 7}, "extra agent_ca_cert must be the path", id="agent-ca-not-a-path"),
        pytest.param({**TLS, "agent_url": "gpu-a:9400"}, "extra agent_url must be the node agent's URL",
                     id="agent-url-no-scheme"),
        pytest.param({**TLS, "agent_url": 9400}, "extra agent_url must be", id="agent-url-number"),
    ],
)
def test_malformed_transport_extras_are_refused_naming_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(HostConfigError, match=message):
        host_from_connection(conn(**extra))


def test_an_https_agent_with_an_unreadable_ca_says_which_field(tmp_path: Path) -> None:
    import asyncio

    host = HostConfig("gpu_a", "unix:///run/a.sock", agent_url="https://127.0.0.1:1",
                      agent_ca_cert=str(tmp_path / "missing-ca.pem"))
    reading = asyncio.run(read_agent(host, 1.0))
    assert reading.doc is None and reading.unreachable is not None
    assert "agent_ca_cert" in reading.unreachable and "missing-ca.pem" in reading.unreachable


# -- the node agent's start-up checks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        pytest.param("127.0.0.1", True, id="v4"),
        pytest.param("127.0.0.2", True, id="v4-range"),
        pytest.param("::1", True, id="v6"),
        pytest.param("localhost", True, id="name"),
        pytest.param("0.0.0.0", False, id="every-v4-interface"),
        pytest.param("::", False, id="every-v6-interface"),
        pytest.param("10.1.2.3", False, id="lan"),
        pytest.param("no-such-host.invalid", False, id="unresolvable"),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        pytest.param(["--listen", "0.0.0.0:9400"], "not a loopback address, without a token", id="any-no-token"),
        pytest.param(["--listen", "10.1.2.3:9400"], "--token-file FILE", id="lan-no-token"),
        pytest.param(["--listen", "0.0.0.0:9400", "--no-auth", "--token-file", "t"], "contradict", id="both"),
        pytest.param(["--listen", "0.0.0.0:9400", "--token-file", "t"], None, id="any-with-token"),
        pytest.param(["--listen", "0.0.0.0:9400", "--no-auth"], None, id="any-no-auth"),
        pytest.param(["--listen", "127.0.0.1:9400"], None, id="loopback"),
        pytest.param(["--listen", "[::1]:9400"], None, id="loopback-v6"),
    ],
)
def test_agent_refuses_a_network_address_without_a_token(argv: list[str], problem: str | None) -> None:
    found = check_auth(args(*argv))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_agent_main_exits_2_without_a_token_on_every_interface(capsys: pytest.CaptureFixture[str]) -> None:
    from provider.agent.__main__ import main

    assert main(["--listen", "0.0.0.0:0", "--gpu-backend", "simulated:/nonexistent"]) == 2
    assert "listening on" not in capsys.readouterr().out


def test_agent_tls_files_go_together_and_must_load(tmp_path: Path) -> None:
    from tools.pki import make_pki

    pki = make_pki(tmp_path)
    assert server_tls(None, None) is None
    assert server_tls(pki.server_cert, pki.server_key) is not None
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        server_tls(pki.server_cert, None)
    with pytest.raises(ValueError, match="Cannot load --tls-cert .* key matching the certificate"):
        server_tls(pki.server_cert, pki.client_key)  # a key of another certificate


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "x", "1e400"])
def test_agent_limits_must_be_positive_and_finite(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="above zero"):
        positive(float)(value)


@pytest.mark.parametrize("value", ["tcp://10.0.0.2:2375", "tcp://0.0.0.0:2375", "tcp://gpu-b:2375"])
def test_agent_engine_in_clear_only_on_loopback(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="never across the network"):
        parse_engine(value)
