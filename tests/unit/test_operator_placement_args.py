"""Every argument of GpuDockerOperator and GpuAvailableSensor, checked before anything is contacted.

Arguments may be templates, so they are checked when the task runs, after rendering, in one
place (provider/operators/arguments.py), before any connection, engine or agent is touched: a
bad value fails with a :class:`SpecError` naming it, never a ``ValueError`` or ``KeyError``, and
the listeners standing in for the host's engine and agent see no connection.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import BaseOperator

from provider.errors import GpuDockerError, SpecError
from provider.operators.arguments import ARGUMENT_NAMES
from provider.operators.gpu_docker import GpuDockerOperator
from provider.scheduling import POLICIES
from provider.scheduling.policy_names import check_placement_policy
from provider.sensors.gpu_available import GpuAvailableSensor
from tests.conftest import FakeTI

@dataclass
class FakeRun:
    """The part of a DAG run that templates read."""

    conf: dict[str, Any]

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
    """A Docker engine socket and a node agent port that never answer, so a test can tell
    afterwards whether anything tried to reach them. They leave connections waiting, or with
    :meth:`hang_up`, close each one at once."""

    def __init__(self, directory: Path) -> None:
        self._hung_up: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.engine.bind(str(directory / "engine.sock"))
        self.agent = socket.create_server(("127.0.0.1", 0))
        self.engine.listen()
        self.connection = {
            "conn_type": "gpu_docker_host",
            "host": f"unix://{directory / 'engine.sock'}",
            "extra": {"agent_url": f"http://127.0.0.1:{self.agent.getsockname()[1]}"},
        }

    def hang_up(self) -> None:
        """From now on close every connection as it comes (and note it): a caller fails at once
        instead of waiting out its timeout."""
        def serve(name: str, listener: socket.socket) -> None:
            listener.settimeout(0.05)
            while not self._stop.is_set():
                try:
                    listener.accept()[0].close()
                except TimeoutError:
                    continue
                self._hung_up.add(name)

        for name, listener in (("engine", self.engine), ("agent", self.agent)):
            self._threads.append(threading.Thread(target=serve, args=(name, listener)))
            self._threads[-1].start()

    def contacted(self) -> list[str]:
        """Names of the listeners that someone connected to."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        reached = []
        for name, listener in (("engine", self.engine), ("agent", self.agent)):
            listener.setblocking(False)
            try:
                listener.accept()[0].close()
                reached.append(name)
            except BlockingIOError:
                if name in self._hung_up:
                    reached.append(name)
        return reached

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
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


OPERATOR_BAD = [
    ("image", "Not An Image!"), ("command", 42), ("command", "python 'unclosed"), ("entrypoint", [""]),
    ("user", "a b"), ("working_dir", "relative"), ("environment", ["A=1"]), ("environment", {"": "x"}),
    ("environment", {"NVIDIA_VISIBLE_DEVICES": "all"}), ("private_environment", ["TOKEN=s3cret"]),
    ("private_environment", {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "100"}),
    ("mounts", "/data:/data"), ("mounts", ["no-colon"]), ("mounts", ["/a:/b:rx"]),
    ("mounts", ["/var/run/docker.sock:/sock"]), ("mounts", ["/:/host"]), ("mounts", ["/data:/data"]),
    ("user", 0), ("user", "root:root"), ("network_mode", "host"), ("cpus", -1), ("cpus", "many"),
    ("mem_limit", "lots"), ("shm_size", 0), ("network_mode", "overlay"), ("result_path", "out.json"),
    ("gpus", "two"), ("gpus", -1), ("gpus", 1.5), ("gpu_milli", 0), ("gpu_milli", 1500), ("gpu_milli", "half"),
    ("gpu_memory_mb", -5), ("gpu_model", 7), ("required_labels", {"zone": 1}), ("required_labels", ["zone"]),
    ("host", ""), ("gpu_pool", []), ("gpu_pool", [""]), ("placement_policy", "fastest"), ("pull", "sometimes"),
    ("docker_conn_id", ""), ("pull_penalty_per_gb", -1), ("pull_penalty_per_gb", float("nan")),
    ("stop_grace_s", -1), ("log_archive", "/tmp/logs"), ("log_archive_conn_id", 5), ("log_live_rate", 0),
    ("log_chunk_s", 0), ("log_chunk_bytes", 0), ("max_line_bytes", 2), ("tail_lines", -1),
    ("wait_for_resources", "yes"), ("deferrable", "no"), ("wait_timeout", 0), ("wait_timeout", "long"),
    ("poll_interval", -1), ("hold_after_s", -1), ("reattach", 1), ("gpu_queue", ""), ("gpu_queue", 3), ("gpu_queue", "vision"),
]
"""One or more bad values of every operator argument (the table below proves it covers them all)."""


def test_the_table_covers_every_argument_the_operator_checks() -> None:
    assert {name for name, _ in OPERATOR_BAD} == set(ARGUMENT_NAMES)


@pytest.mark.parametrize(("name", "value"), [pytest.param(n, v, id=f"{n}={v!r}") for n, v in OPERATOR_BAD])
def test_a_bad_operator_argument_fails_by_name_before_any_engine_is_asked(
    name: str, value: Any, listeners: Listeners
) -> None:
    op = GpuDockerOperator(task_id="t", **{"image": "x:1", "host": "engine", name: value})
    with pytest.raises(GpuDockerError) as failed:
        op.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert isinstance(failed.value, SpecError) and re.search(rf"\b{name}\b", str(failed.value)), failed.value
    assert listeners.contacted() == []


def test_a_share_of_several_gpus_is_refused_naming_both() -> None:
    op = GpuDockerOperator(task_id="t", image="x:1", host="engine", gpus=2, gpu_milli=500)
    with pytest.raises(SpecError, match=r"gpu_milli=500 is a share of one GPU: it needs gpus=1, got gpus=2"):
        op.execute({"ti": FakeTI()})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conf_mount", "refused"),
    [
        pytest.param("/var/run/docker.sock:/var/run/docker.sock", "the container engine's socket", id="docker-sock"),
        pytest.param("//var//run/:/r", "the container engine's socket (/var/run/docker.sock)", id="its-directory"),
        pytest.param("{tmp}/engine.sock:/e", "the container engine's socket", id="the-hosts-own-engine-socket"),
        pytest.param("{tmp}/x/../engine.sock:/e", "'..' in a host path is refused", id="dot-dot"),
        pytest.param("/:/host", "the host's root directory", id="root"),
        pytest.param("/etc:/etc", "is not under [gpu_docker] allowed_mount_sources", id="not-listed"),
        pytest.param("{tmp}/data:/data:ro", None, id="listed-goes-on-to-the-engine"),
    ],
)
def test_a_dag_that_mounts_from_conf_cannot_reach_the_engine(
    conf_mount: str, refused: str | None, listeners: Listeners, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a DAG that takes its mounts from ``dag_run.conf`` lets a REST caller name the
    engine's socket. Even with the socket's directory listed by the administrator, the
    rendered mount is refused before any engine or agent is asked, naming the rule."""
    monkeypatch.setenv("AIRFLOW__GPU_DOCKER__ALLOWED_MOUNT_SOURCES", f"/var/run, {tmp_path}")
    op = GpuDockerOperator(task_id="t", image="x:1", host="engine", mounts=["{{ dag_run.conf['mount'] }}"])
    op.render_template_fields({"dag_run": FakeRun(conf={"mount": conf_mount.format(tmp=tmp_path)})})  # type: ignore[arg-type]
    if refused is None:  # the setting is read: a listed directory passes, and the run goes on to the host
        listeners.hang_up()
        with pytest.raises(GpuDockerError) as failed:
            op.execute({"ti": FakeTI()})  # type: ignore[arg-type]
        assert not isinstance(failed.value, SpecError) and listeners.contacted() != [], failed.value
        return
    with pytest.raises(SpecError, match=re.escape(refused)):
        op.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert listeners.contacted() == []


@pytest.mark.parametrize(
    ("extra", "allowed"),
    [
        pytest.param({}, False, id="default-refuses"),
        pytest.param({"allow_root_user": True, "allow_host_network": True}, True, id="host-allows"),
    ],
)
def test_root_and_the_host_network_need_the_hosts_permission(
    extra: dict[str, bool], allowed: bool, listeners: Listeners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``user`` from a param: root reaches the engine only where the host connection allows it."""
    monkeypatch.setenv("AIRFLOW_CONN_ENGINE", json.dumps({**listeners.connection,
                                                          "extra": {**listeners.connection["extra"], **extra}}))
    op = GpuDockerOperator(task_id="t", image="x:1", host="engine", user="{{ params.uid }}", network_mode="host",
                           log_archive=None)
    op.render_template_fields({"params": {"uid": "0:0"}})  # type: ignore[arg-type]
    listeners.hang_up()
    with pytest.raises(GpuDockerError) as failed:
        op.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    if allowed:
        assert listeners.contacted() != [], failed.value
    else:
        assert "user='0:0' (root) is refused on host connection(s) 'engine'" in str(failed.value)
        assert listeners.contacted() == []


def test_good_arguments_do_reach_the_engine(listeners: Listeners) -> None:
    """The other side of the table: with every argument fine, the run goes on to the host, so
    the listeners would have seen a bad argument slip through."""
    op = GpuDockerOperator(task_id="t", image="x:1", host="engine", gpus=1, gpu_milli=500, log_archive=None)
    listeners.hang_up()
    with pytest.raises(GpuDockerError):
        op.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert listeners.contacted() != []


SENSOR_BAD = [("gpus", "-1"), ("gpu_milli", 2000), ("gpu_memory_mb", "x"), ("gpu_model", ""),
              ("required_labels", {"a": 1}), ("placement_policy", "fastest"), ("agent_timeout", 0)]


@pytest.mark.parametrize(("name", "value"), [pytest.param(n, v, id=f"{n}={v!r}") for n, v in SENSOR_BAD])
@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_a_bad_sensor_argument_fails_by_name_before_the_pool_is_read(
    name: str, value: Any, deferrable: bool, listeners: Listeners
) -> None:
    sensor = GpuAvailableSensor(task_id="t", gpu_pool=["engine"], deferrable=deferrable, **{name: value})
    with pytest.raises(SpecError, match=f"{name}="):
        sensor.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert listeners.contacted() == []


def test_gpu_pool_leaves_airflows_own_pool_alone() -> None:
    op = GpuDockerOperator(task_id="t", image="x:1", gpu_pool=["a", "b"], pool="training_slots")
    assert op.gpu_pool == ["a", "b"] and op.pool == "training_slots"
