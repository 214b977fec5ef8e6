"""Shared fixtures: private Docker engines, captured task logs, a stand-in task instance; and
:func:`eventually`, the one way a test waits for a condition."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
import structlog

from tools.dockerd import REPO, TESTBOX_IMAGE, PrivateDockerd
from tools.polling import NotWithin, eventually

__all__ = ["NotWithin", "eventually"]

if TYPE_CHECKING:
    from provider.clients.hosts import HostConfig
    from provider.operators.gpu_docker import GpuDockerOperator
    from provider.reservations.placement import Reserved
    from provider.scheduling.model import PlacementRequest

T = TypeVar("T")


@pytest.fixture(scope="session")
def dockerd() -> Iterator[PrivateDockerd]:
    """One private engine for the session, with the test image loaded."""
    engine = PrivateDockerd("it").start()
    try:
        engine.load(TESTBOX_IMAGE)
        yield engine
    finally:
        engine.stop()


class TaskLog:
    """Task-log events captured with structlog's own testing API, readable while written."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def texts(self, stream: str | None = None) -> list[str]:
        return [
            str(e["event"]) for e in list(self.events)
            if stream is None or e.get("stream", "stdout") == stream
        ]

    def wait_for(self, text: str, timeout: float) -> float:
        """Wait until ``text`` is logged; return the monotonic time it was seen (AssertionError
        naming the last lines logged when it was not, within ``timeout`` seconds)."""
        def look() -> tuple[bool, list[str]]:
            texts = self.texts()
            return text in texts, texts[-5:]  # the last lines, for the message when it never came

        eventually(look, timeout, interval_s=0.02, what=f"task-log line {text!r}", until=lambda seen: seen[0])
        return time.monotonic()


@pytest.fixture
def task_log() -> Iterator[TaskLog]:
    with structlog.testing.capture_logs() as events:
        yield TaskLog(events)


@dataclass
class FakeTI:
    """The fields a task instance gives the operator (no Airflow needed)."""

    dag_id: str = "it_dag"
    task_id: str = "train"
    run_id: str = field(default_factory=lambda: f"test__{uuid.uuid4().hex[:8]}")
    try_number: int = 1
    map_index: int = -1
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def run_task(op: GpuDockerOperator, ti: FakeTI, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``op`` as Airflow's task runner does: ``execute`` (``execute_complete`` with a
    trigger's ``event``), then, once it returned, the success callbacks, where the operator
    removes the container that exited 0 (provider/operators/gpu_docker.py)."""
    context: Any = {"ti": ti, "task": op}
    out = op.execute(context) if event is None else op.execute_complete(context, event)
    for callback in op.on_success_callback:
        callback(context)
    return out


def settled(look: Callable[[], list[T]], timeout_s: float = 15.0) -> list[T]:
    """What ``look`` lists once it lists nothing, or after ``timeout_s``. A task's container is
    removed after Airflow has recorded the task's success, so it may outlive by a moment the run
    that Airflow already reports a success."""
    try:
        return eventually(look, timeout_s, what="nothing left", until=lambda found: not found)
    except NotWithin as late:
        return cast("list[T]", late.last)


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a measured figure past pytest's capture, so that it stands in every run's output
    (CI's included), not only when the test fails."""

    def say(text: str) -> None:
        with capsys.disabled():
            print(f"\n{text}")

    return say


@pytest.fixture
def ti() -> FakeTI:
    return FakeTI()


@pytest.fixture
def marked_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``on_kill`` called here, outside a task process, hears what the api-server says of a task
    somebody marked failed: a kill (provider/operators/interrupt.py; the real answer is in the
    system tests)."""
    monkeypatch.setattr("provider.operators.gpu_docker.airflow_state", lambda task: "failed")


def archived_stdout(objects: dict[str, bytes]) -> list[bytes]:
    """The stdout lines held by an archive's chunks (``{key: bytes}`` of one attempt's prefix),
    in order; see provider/logs/archive.py for the record format."""
    chunks = [v for k, v in sorted(objects.items()) if k.rsplit("/", 1)[-1].startswith("chunk-")]
    return [r.split(b" ", 2)[2] for r in b"".join(chunks).splitlines() if r.split(b" ", 2)[1] == b"stdout"]


def reserve_now(hosts: Sequence[HostConfig], request: PlacementRequest, policy: str = "least_loaded",
                **kwargs: Any) -> Reserved:
    """:func:`provider.reservations.placement.place_and_reserve` from a test's synchronous code,
    through the one synchronous boundary the operator uses too."""
    from provider.clients.engine_sync import run_sync
    from provider.reservations.placement import place_and_reserve

    return run_sync(place_and_reserve(hosts, request, policy, **kwargs))


def release_now(reserved: Reserved) -> None:
    """:func:`provider.reservations.placement.release` from a test's synchronous code."""
    from provider.clients.engine_sync import run_sync
    from provider.reservations.placement import release

    run_sync(release(reserved))


def run_bench(name: str, *args: str, tmp_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``python -m bench.<name> *args --json FILE`` from the repository as a user does and
    return the JSON it wrote. A bench exits 1 when a bar it checks is not met on this machine,
    which a smoke run does not judge; a crash (a traceback) or no JSON fails."""
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", *args, "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s)
    said = f"bench/{name}.py exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode in (0, 1) and "Traceback (most recent call last)" not in proc.stderr, said
    assert out.exists(), said
    return dict(json.loads(out.read_text()))
