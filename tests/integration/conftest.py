"""Fixtures and helpers shared by the integration tests; the private engine itself (``dockerd``)
is in tests/conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.dockerd import PrivateDockerd


def define_host(monkeypatch: pytest.MonkeyPatch, name: str, docker_url: str, agent_url: str | None = None) -> None:
    """The "GPU Docker host" connection ``name``, defined as users can: an ``AIRFLOW_CONN_``
    variable, with the node agent's URL when there is one."""
    conn: dict[str, object] = {"conn_type": "gpu_docker_host", "host": docker_url}
    if agent_url:
        conn["extra"] = {"agent_url": agent_url}
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(conn))


@pytest.fixture
def airflow_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """AIRFLOW_HOME in the test's own directory, so the default log archive (under it) is the
    test's own. The test and the tasks it starts in processes of their own are one deployment:
    its id is set, as it is wherever the database URL is not the same on every component."""
    home = tmp_path / "airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.setenv("AIRFLOW__GPU_DOCKER__DEPLOYMENT_ID", "integration-tests")
    return home


@pytest.fixture
def it_host(dockerd: PrivateDockerd, airflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's engine as the ``it_host`` connection; a module asks for it with
    ``pytest.mark.usefixtures("it_host")``."""
    define_host(monkeypatch, "it_host", dockerd.url)


def sh(script: str) -> list[str]:
    """A container command that runs ``script`` in the image's shell."""
    return ["sh", "-c", script]
