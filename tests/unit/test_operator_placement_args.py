"""Placement arguments of GpuDockerOperator and GpuAvailableSensor.

``placement_policy`` is a template field, so it is checked when the task runs, after
rendering, and before anything is contacted; ``pull`` is not, so it is checked at parse time.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import BaseOperator

from provider.errors import SpecError
from provider.operators.gpu_docker import GpuDockerOperator
from provider.scheduling import POLICIES
from provider.scheduling.policy_names import check_placement_policy
from provider.sensors.gpu_available import GpuAvailableSensor
from tests.conftest import FakeTI

POLICY_TEMPLATE = "{{ params.policy }}"

TASKS = [
    pytest.param(
        lambda policy: GpuDockerOperator(task_id="t", image="x:1", host="engine", placement_policy=policy),
        id="operator",
    ),
    pytest.param(
        lambda policy: GpuAvailableSensor(task_id="t", gpu_pool=["engine"], placement_policy=policy),
        id="sensor",
    ),
]


class Listeners:
    """A Docker engine socket and a node agent port that accept connections and never answer,
    so a test can tell afterwards whether anything tried to reach them."""

    def __init__(self, directory: Path) -> None:
        self.engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.engine.bind(str(directory / "engine.sock"))
        self.agent = socket.create_server(("127.0.0.1", 0))
        self.engine.listen()
        self.connection = {
            "conn_type": "gpu_docker_host",
            "host": f"unix://{directory / 'engine.sock'}",
            "extra": {"agent_url": f"http://127.0.0.1:{self.agent.getsockname()[1]}"},
        }

    def contacted(self) -> list[str]:
        """Names of the listeners that someone connected to."""
        reached = []
        for name, listener in (("engine", self.engine), ("agent", self.agent)):
            listener.setblocking(False)
            try:
                listener.accept()[0].close()
                reached.append(name)
            except BlockingIOError:
                pass
        return reached

    def close(self) -> None:
        self.engine.close()
        self.agent.close()


@pytest.fixture
def listeners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listeners]:
    """The ``engine`` host connection, aimed at listeners that record every contact."""
    found = Listeners(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_ENGINE", json.dumps(found.connection))
    try:
        yield found
    finally:
        found.close()


@pytest.mark.parametrize(
    "name, ok",
    [pytest.param(name, True, id=name) for name in sorted(POLICIES)]
    + [
        pytest.param("fastest", False, id="unknown"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="none"),
        pytest.param(POLICY_TEMPLATE, False, id="unrendered-template"),
    ],
)
def test_check_placement_policy(name: Any, ok: bool) -> None:
    if ok:
        assert check_placement_policy(name) == name
    else:
        with pytest.raises(SpecError, match=rf"placement_policy={re.escape(repr(name))}; use one of best_fit, "):
            check_placement_policy(name)


@pytest.mark.parametrize("make", TASKS)
def test_templated_policy_is_rendered_at_run_time(make: Callable[[str], BaseOperator]) -> None:
    task = make(POLICY_TEMPLATE)  # parses: the template is not checked as a policy name
    task.render_template_fields({"params": {"policy": "best_fit"}})  # type: ignore[arg-type]
    assert task.placement_policy == "best_fit"  # type: ignore[attr-defined]


@pytest.mark.parametrize("make", TASKS)
def test_bad_rendered_policy_fails_before_anything_is_contacted(
    make: Callable[[str], BaseOperator], listeners: Listeners
) -> None:
    task = make(POLICY_TEMPLATE)
    task.render_template_fields({"params": {"policy": "fastest"}})  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"placement_policy='fastest'; use one of best_fit, .*least_loaded"):
        task.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert listeners.contacted() == []


def test_unknown_pull_fails_at_parse_time() -> None:
    with pytest.raises(SpecError, match=r"pull='sometimes'; use one of missing, always, never"):
        GpuDockerOperator(task_id="t", image="x:1", pull="sometimes")


def test_gpu_pool_leaves_airflows_own_pool_alone() -> None:
    op = GpuDockerOperator(task_id="t", image="x:1", gpu_pool=["a", "b"], pool="training_slots")
    assert op.gpu_pool == ["a", "b"] and op.pool == "training_slots"
