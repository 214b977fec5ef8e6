"""A retry adopts the container of a try whose worker was lost, instead of training twice.

The first try runs in a process of its own that is killed with SIGKILL (nothing of it runs
after: no ``on_kill``, no ``finally``), as when a worker is OOM-killed or its machine is lost.
The next try runs here against the same private engine. What was created is counted from the
engine's event stream; the archive is checked against what the container printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from provider.errors import ReattachAmbiguous
from provider.operators.gpu_docker import GpuDockerOperator
from provider.task_instance import LABEL_PREFIX, TaskInstanceRef
from provider.labels import DEPLOYMENT_LABEL
from provider.reservations.deployment import current_deployment
from tests.conftest import FakeTI, TaskLog, eventually, run_task
from tests.integration.conftest import define_host
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd
from tools.local_airflow import REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("it_host")]

LINES = 160
COUNT = f"i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo $i; sleep 0.05; done"
EXPECTED = "".join(f"{i}\n" for i in range(1, LINES + 1)).encode()
HANDED_OVER = 3
FIRST_TRY = f"""
import signal, sys
import provider.operators.gpu_docker as module
from provider.errors import HandedOver
from tests.conftest import FakeTI
module.airflow_state = lambda identity: sys.argv[5]  # what the api-server would answer
op = module.GpuDockerOperator(task_id="train", host=sys.argv[4], image=sys.argv[1], pull="never",
                              command=["sh", "-c", sys.argv[2]], log_chunk_s=0.3)
signal.signal(signal.SIGTERM, lambda *_: op.on_kill())  # as Airflow's task runner does
try:
    op.execute({{"ti": FakeTI(run_id=sys.argv[3], try_number=1)}})
except HandedOver:
    sys.exit({HANDED_OVER})
"""


def archive_dir(ti: FakeTI, attempt: int) -> Path:
    return (Path(os.environ["AIRFLOW_HOME"]) / "container_logs" / f"dag_id={ti.dag_id}" / f"run_id={ti.run_id}"
            / f"task_id={ti.task_id}" / f"attempt={attempt}")


def archived(ti: FakeTI, attempt: int) -> tuple[bytes, dict[str, Any]]:
    """The archived stdout, joined as the container printed it, and the manifest."""
    base = archive_dir(ti, attempt)
    records = b"".join(p.read_bytes() for p in sorted(base.glob("chunk-*.log")))
    stdout = b"".join(r.split(b" ", 2)[2] + b"\n" for r in records.splitlines() if r.split(b" ", 2)[1] == b"stdout")
    return stdout, json.loads((base / "manifest.json").read_text())


def first_try_ended(engine: PrivateDockerd, ti: FakeTI, host: str = "it_host", script: str = COUNT,
                    sig: int = signal.SIGKILL, airflow_says: str = "running") -> tuple[str, int]:
    """Run try 1 in a process of its own and send it ``sig`` once part of the output is
    archived (``airflow_says``: the task state the api-server would report to its ``on_kill``);
    returns the id of the container it left and the process's exit code."""
    proc = subprocess.Popen([sys.executable, "-c", FIRST_TRY, TESTBOX_IMAGE, script, ti.run_id, host, airflow_says],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:

        def chunks() -> list[Path]:
            assert proc.poll() is None, "the first try ended by itself"
            return list(archive_dir(ti, 1).glob("chunk-*.log"))

        eventually(chunks, 60, interval_s=0.1, what="a chunk archived by the first try")
        [left] = engine.containers(f"{LABEL_PREFIX}.run_id={ti.run_id}", f"{LABEL_PREFIX}.try_number=1",
                                   f"{LABEL_PREFIX}.managed=true")
    finally:
        proc.send_signal(sig)
        code = proc.wait(60)
    return str(left["Id"]), code


def first_try_killed(engine: PrivateDockerd, ti: FakeTI, host: str = "it_host", script: str = COUNT) -> str:
    """Try 1 killed with SIGKILL (a lost worker); the id of the container it left running."""
    return first_try_ended(engine, ti, host, script)[0]


def created(engine: PrivateDockerd, ti: FakeTI, since: float) -> int:
    """Task containers the engine created for ``ti`` since ``since`` (claims are not counted)."""
    with engine.client() as c:
        events = c.api.events(since=int(since), until=int(time.time()) + 1, decode=True,
                              filters={"type": "container", "event": "create",
                                       "label": [f"{LABEL_PREFIX}.run_id={ti.run_id}"]})
        return sum(1 for e in events
                   if e["timeNano"] >= since * 1e9 and f"{LABEL_PREFIX}.reservation" not in e["Actor"]["Attributes"])


def second_try(ti: FakeTI, host: str = "it_host", **kwargs: Any) -> dict[str, Any]:
    op = GpuDockerOperator(task_id="train", host=host, image=TESTBOX_IMAGE, pull="never",
                           command=["sh", "-c", COUNT], log_chunk_s=0.3, **kwargs)
    again = FakeTI(run_id=ti.run_id, try_number=2)
    return run_task(op, again)


@pytest.mark.parametrize("exited_first", [False, True], ids=["still-running", "exited-while-nobody-watched"])
def test_a_retry_adopts_the_lost_tries_container_and_completes_its_archive(
    dockerd: PrivateDockerd, ti: FakeTI, task_log: TaskLog, exited_first: bool
) -> None:
    since = time.time()
    left = first_try_killed(dockerd, ti)
    if exited_first:
        with dockerd.client() as c:
            assert c.api.wait(left, timeout=60)["StatusCode"] == 0
    out = second_try(ti)
    assert out["reattached"] is True and out["started_by_try"] == 1 and out["container_id"] == left
    stdout, manifest = archived(ti, 1)
    assert stdout == EXPECTED and manifest["sha256"] == hashlib.sha256(EXPECTED).hexdigest()
    assert manifest["reattached"] is True and manifest["started_by_try"] == 1 and manifest["exit_code"] == 0
    shown = [int(t) for t in task_log.texts("stdout") if t.isdigit()]  # this try: the rest, in order, once
    assert shown == list(range(LINES - len(shown) + 1, LINES + 1)) and 0 < len(shown) < LINES
    assert created(dockerd, ti, since) == 1
    assert dockerd.containers(f"{LABEL_PREFIX}.run_id={ti.run_id}") == []  # removed, claims too


def test_sigterm_while_airflow_counts_the_try_running_hands_the_container_to_the_retry(
    dockerd: PrivateDockerd, ti: FakeTI, task_log: TaskLog
) -> None:
    """A worker going away (its supervisor passes SIGTERM on) is not a kill: the container goes
    on with its claim, the archive is stored but not sealed, and the retry adopts it."""
    since = time.time()
    left, code = first_try_ended(dockerd, ti, sig=signal.SIGTERM, airflow_says="running")
    assert code == HANDED_OVER
    with dockerd.client() as c:
        assert c.api.inspect_container(left)["State"]["Running"]
    assert not (archive_dir(ti, 1) / "manifest.json").exists()
    out = second_try(ti)
    assert out["reattached"] is True and out["started_by_try"] == 1 and out["container_id"] == left
    stdout, manifest = archived(ti, 1)
    assert stdout == EXPECTED and manifest["sha256"] == hashlib.sha256(EXPECTED).hexdigest()
    assert created(dockerd, ti, since) == 1
    assert dockerd.containers(f"{LABEL_PREFIX}.run_id={ti.run_id}") == []


@pytest.mark.parametrize("state", ["failed", "restarting", ""], ids=["marked-failed", "cleared-running", "cleared"])
def test_sigterm_after_airflow_ended_the_try_is_a_kill(dockerd: PrivateDockerd, ti: FakeTI, state: str) -> None:
    left, code = first_try_ended(dockerd, ti, sig=signal.SIGTERM, airflow_says=state)
    assert code not in (0, HANDED_OVER)
    with dockerd.client() as c:
        assert left not in {x["Id"] for x in c.api.containers(all=True)}
    assert dockerd.containers(f"{LABEL_PREFIX}.run_id={ti.run_id}") == []  # its claim released too


def test_reattach_false_removes_the_lost_tries_container_and_trains_afresh(
    dockerd: PrivateDockerd, ti: FakeTI
) -> None:
    since = time.time()
    left = first_try_killed(dockerd, ti)
    out = second_try(ti, reattach=False)
    assert out["reattached"] is False and out["started_by_try"] == 2 and out["container_id"] != left
    assert archived(ti, 2)[0] == EXPECTED
    assert created(dockerd, ti, since) == 2
    assert dockerd.containers(f"{LABEL_PREFIX}.run_id={ti.run_id}") == []


def test_a_container_its_engine_killed_on_restart_is_not_adopted_the_retry_trains_afresh(
    ti: FakeTI, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PrivateDockerd("rr") as engine:  # no live-restore: a restart stops its containers
        engine.load(TESTBOX_IMAGE)
        define_host(monkeypatch, "rr_host", engine.url)
        left = first_try_killed(engine, ti, host="rr_host", script="trap 'exit 143' TERM; " + COUNT.replace(
            f"-lt {LINES}", "-lt 100000"))  # still running when the engine stops it
        engine.restart()  # its event history goes with it: count what is created from here on
        since = time.time()
        with engine.client() as c:
            assert c.api.inspect_container(left)["State"]["ExitCode"] >= 128
        out = second_try(ti, host="rr_host")
        assert out["reattached"] is False and out["started_by_try"] == 2 and out["container_id"] != left
        assert archived(ti, 2)[0] == EXPECTED
        assert created(engine, ti, since) == 1
        assert engine.containers(f"{LABEL_PREFIX}.run_id={ti.run_id}") == []  # the killed one and all claims


def test_two_earlier_containers_fail_the_retry_naming_both_and_start_nothing(
    dockerd: PrivateDockerd, ti: FakeTI
) -> None:
    labels = {**TaskInstanceRef(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, 1).to_labels(),
              DEPLOYMENT_LABEL: current_deployment()}  # this deployment's: another's would not be its earlier tries
    with dockerd.client() as c:
        ids = [c.api.create_container(TESTBOX_IMAGE, ["sleep", "60"], labels=labels)["Id"] for _ in range(2)]
    try:
        since = time.time()
        with pytest.raises(ReattachAmbiguous) as failed:
            second_try(ti)
        assert all(i[:12] in str(failed.value) for i in ids) and "reattach=False" in str(failed.value)
        assert created(dockerd, ti, since) == 0
        assert {c["Id"] for c in dockerd.containers(f"{LABEL_PREFIX}.run_id={ti.run_id}")} == set(ids)
    finally:
        with dockerd.client() as c:
            for i in ids:
                c.api.remove_container(i, force=True)
