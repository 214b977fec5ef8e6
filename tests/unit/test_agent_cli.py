"""Command-line parsing of ``python -m provider.agent``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from provider.agent.__main__ import make_backend, parse_cpus, parse_engine, parse_listen
from provider.agent.gpu import NvmlBackend
from provider.agent.simulated import SimulatedBackend


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("127.0.0.1:9400", ("127.0.0.1", 9400), id="ipv4"),
        pytest.param("127.0.0.1:0", ("127.0.0.1", 0), id="any-port"),
        pytest.param("[::1]:9400", ("::1", 9400), id="ipv6"),
        pytest.param("localhost:80", ("localhost", 80), id="name"),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", [pytest.param("9400", id="port-only"), pytest.param(":9400", id="no-host"), pytest.param("h:x", id="bad-port")])
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
        parse_listen(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [pytest.param("0,1", [0, 1], id="two"), pytest.param("3", [3], id="one"), pytest.param("0,", [0], id="trailing-comma")],
)
def test_parse_cpus(value: str, expected: list[int]) -> None:
    assert parse_cpus(value) == expected


@pytest.mark.parametrize("value", ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375"])
def test_parse_engine(value: str) -> None:
    assert parse_engine(value) == value


@pytest.mark.parametrize("value", [pytest.param("/var/run/docker.sock", id="no-scheme"),
                                   pytest.param("unix://docker.sock", id="relative"),
                                   pytest.param("tcp://", id="no-host"), pytest.param("https://h:2376", id="https")])
def test_parse_engine_rejects(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="unix:///var/run/docker.sock"):
        parse_engine(value)


def test_make_backend(tmp_path: Path) -> None:
    inventory = tmp_path / "gpus.json"
    inventory.write_text(json.dumps([{"model": "T4", "memory_total_mb": 16384, "timeline": [[0, 0, 0]]}]))
    assert isinstance(make_backend("nvml", "h"), NvmlBackend)
    simulated = make_backend(f"simulated:{inventory}", "h")
    assert isinstance(simulated, SimulatedBackend)
    assert [g.uuid for g in simulated.read()] == ["GPU-SIM-h-0"]
    with pytest.raises(ValueError, match="nvml or simulated:FILE"):
        make_backend("simulated:", "h")
