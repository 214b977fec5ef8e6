"""A lost worker on a real Airflow (LocalExecutor): the task process is killed with SIGKILL
mid-run, as an out-of-memory kill or a lost machine ends it, and the retry adopts the
container instead of training again. Counted from the engine's event stream; the archive is
checked against what the container printed."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from datetime import datetime
from pathlib import Path

from provider.task_instance import LABEL_PREFIX
from tests.conftest import archived_stdout, eventually, settled
from tests.system.conftest import containers_of_run
from tests.system.dags.counter import LINES
from tools.dockerd import PrivateDockerd
from tools.local_airflow import LocalAirflow

DAG_ID = "gpu_docker_counter"
TASKS = ("while_running", "after_exit")
EXPECTED = "".join(f"{i}\n" for i in range(1, LINES + 1)).encode()


def archive_dir(airflow: LocalAirflow, run_id: str, task_id: str) -> Path:
    return airflow.home / "container_logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}" / "attempt=1"


def stdout_in(base: Path) -> bytes:
    """The container's stdout as the archive under ``base`` holds it, each line with its newline."""
    lines = archived_stdout({p.name: p.read_bytes() for p in base.glob("chunk-*.log")})
    return b"".join(line + b"\n" for line in lines)


def test_a_task_process_killed_mid_run_is_retried_by_reattaching(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd
) -> None:
    since = time.time()
    run_id = airflow_stack.trigger(DAG_ID, {})
    killed: dict[str, int] = {}

    def kill_each_mid_run() -> dict[str, int]:
        for task_id in TASKS:
            ti = airflow_stack.task_instance(DAG_ID, run_id, task_id)
            chunks = list(archive_dir(airflow_stack, run_id, task_id).glob("chunk-*.log"))
            if task_id not in killed and ti["state"] == "running" and ti.get("pid") and chunks:
                os.kill(int(ti["pid"]), signal.SIGKILL)  # the task process, as the kernel's OOM killer would
                killed[task_id] = int(ti["pid"])
        return killed

    eventually(kill_each_mid_run, 180, what="both tasks killed mid-run", until=lambda k: set(k) == set(TASKS))

    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=300) == "success"
    with system_engine.client() as c:
        events = [e for e in c.api.events(since=int(since), until=int(time.time()) + 1, decode=True, filters={
            "type": "container", "event": ["create", "die"], "label": [f"{LABEL_PREFIX}.run_id={run_id}"]})
            if f"{LABEL_PREFIX}.reservation" not in e["Actor"]["Attributes"]]
    task_of = {e["id"]: e["Actor"]["Attributes"][f"{LABEL_PREFIX}.task_id"] for e in events}
    created = [task_of[e["id"]] for e in events if e["Action"] == "create"]
    assert sorted(created) == sorted(TASKS)  # one container per task, ever
    died = {task_of[e["id"]]: e["timeNano"] / 1e9 for e in events if e["Action"] == "die"}
    retried = datetime.fromisoformat(airflow_stack.task_instance(DAG_ID, run_id, "after_exit")["start_date"])
    assert died["after_exit"] < retried.timestamp()  # it finished while no try watched: collected
    for task_id in TASKS:
        ti = airflow_stack.task_instance(DAG_ID, run_id, task_id)
        out = airflow_stack.xcom(DAG_ID, run_id, task_id)
        assert ti["try_number"] == 2 and out["reattached"] is True and out["started_by_try"] == 1, out
        stdout = stdout_in(archive_dir(airflow_stack, run_id, task_id))
        assert stdout == EXPECTED, task_id
        assert out["log_sha256"] == hashlib.sha256(EXPECTED).hexdigest()
        shown = [line for line in airflow_stack.task_log_text(DAG_ID, run_id, task_id, try_number=2).splitlines()
                 if '"event":"' in line]
        numbers = [int(x) for line in shown for x in [line.split('"event":"', 1)[1].split('"', 1)[0]] if x.isdigit()]
        assert numbers == list(range(numbers[0], LINES + 1)), task_id  # the rest, once each, in order
    assert settled(lambda: containers_of_run(system_engine, run_id)) == []


def test_a_worker_shutting_down_hands_its_container_to_the_retry(
    airflow_stack: LocalAirflow, system_engine: PrivateDockerd
) -> None:
    """The task's supervisor gets SIGTERM (its worker is being stopped) and passes it on to the
    task: Airflow still counts the try as running, so this is not a kill. The container goes on,
    and the retry adopts it."""
    since = time.time()
    run_id = airflow_stack.trigger(DAG_ID, {})
    task_id = "while_running"

    def stop_supervisor_mid_run() -> int:
        ti = airflow_stack.task_instance(DAG_ID, run_id, task_id)
        if ti["state"] == "running" and ti.get("pid") and list(archive_dir(airflow_stack, run_id, task_id).glob("chunk-*")):
            supervisor = int(Path(f"/proc/{ti['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
            os.kill(supervisor, signal.SIGTERM)
            return supervisor
        return 0

    eventually(stop_supervisor_mid_run, 180, what="the task running, its supervisor sent SIGTERM")
    assert airflow_stack.wait_for_run(DAG_ID, run_id, timeout=300) == "success"
    assert "worker is shutting down" in airflow_stack.task_log_text(DAG_ID, run_id, task_id, try_number=1)
    out = airflow_stack.xcom(DAG_ID, run_id, task_id)
    assert out["reattached"] is True and out["started_by_try"] == 1, out
    assert stdout_in(archive_dir(airflow_stack, run_id, task_id)) == EXPECTED
    assert out["log_sha256"] == hashlib.sha256(EXPECTED).hexdigest()
    with system_engine.client() as c:
        created = [e for e in c.api.events(since=int(since), until=int(time.time()) + 1, decode=True, filters={
            "type": "container", "event": "create", "label": [f"{LABEL_PREFIX}.task_id={task_id}",
                                                               f"{LABEL_PREFIX}.run_id={run_id}"]})
            if f"{LABEL_PREFIX}.reservation" not in e["Actor"]["Attributes"]]
    assert len(created) == 1
    assert settled(lambda: containers_of_run(system_engine, run_id)) == []
