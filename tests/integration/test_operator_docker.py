"""GpuDockerOperator against a real Docker engine that the session fixture started."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest

from provider.hooks.docker_host import GpuDockerHook
from provider.task_instance import LABEL_PREFIX
from provider.operators.gpu_docker import GpuDockerOperator
from provider.errors import ContainerFailed, EngineRefused, ImageMissing
from provider.scheduling.no_fit import NoFit
from tests.conftest import FakeTI, TaskLog, run_task
from tests.integration.conftest import sh
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("it_host")]


def HostOperator(engine: PrivateDockerd, **kwargs: Any) -> GpuDockerOperator:  # noqa: N802
    """The operator aimed at the fixture's engine."""
    kwargs.setdefault("image", TESTBOX_IMAGE)
    kwargs.setdefault("pull", "never")
    return GpuDockerOperator(task_id="train", host="it_host", **kwargs)


def leftovers(engine: PrivateDockerd, ti: FakeTI) -> list[dict[str, Any]]:
    return engine.containers(f"{LABEL_PREFIX}.run_id={ti.run_id}")


def test_exit_zero_returns_result_and_removes_container(dockerd: PrivateDockerd, ti: FakeTI, task_log: TaskLog) -> None:
    op = HostOperator(
        dockerd,
        command=sh('echo "epoch 1"; echo "{\\"test_accuracy\\": 0.93}" > "$RESULT_PATH"'),
        environment={"X": "1"},
    )
    out = run_task(op, ti)
    assert out["exit_code"] == 0 and out["host"] == "it_host" and out["image"] == TESTBOX_IMAGE
    assert out["result"] == {"test_accuracy": 0.93} and out["gpus"] == [] and out["log_lines"] == 1
    assert out["duration_s"] >= 0 and out["started"] <= out["finished"]
    assert "epoch 1" in task_log.texts("stdout")
    assert leftovers(dockerd, ti) == []


def test_a_finished_container_stays_until_airflow_recorded_the_success(dockerd: PrivateDockerd, ti: FakeTI) -> None:
    """Until the success is recorded, a worker lost after the exit would leave the retry nothing
    to collect but to train again; so ``execute`` gives the claim back and keeps the container,
    and the success callback removes it."""
    op = HostOperator(dockerd, command=sh("echo done"))
    context: Any = {"ti": ti, "task": op}
    assert op.execute(context)["exit_code"] == 0
    left = leftovers(dockerd, ti)
    assert [c["State"] for c in left] == ["exited"]  # the container, and no claim
    for callback in op.on_success_callback:
        callback(context)
    assert leftovers(dockerd, ti) == []


def test_nonzero_exit_names_image_host_code_and_tail(dockerd: PrivateDockerd, ti: FakeTI) -> None:
    op = HostOperator(dockerd, command=sh('for i in $(seq 1 30); do echo "line $i"; done; sleep 0.3; echo boom >&2; exit 3'))
    with pytest.raises(ContainerFailed) as err:
        run_task(op, ti)
    text = str(err.value)
    assert f"'{TESTBOX_IMAGE}'" in text and "'it_host'" in text and "code 3" in text
    assert err.value.tail == [f"line {i}" for i in range(12, 31)] + ["[stderr] boom"]
    assert leftovers(dockerd, ti) == []


def test_stderr_lines_are_told_apart(dockerd: PrivateDockerd, ti: FakeTI, task_log: TaskLog) -> None:
    # Docker copies the two streams separately: only the order within a stream is kept.
    op = HostOperator(dockerd, command=sh("echo out1; echo err1 >&2; echo out2; echo err2 >&2"))
    run_task(op, ti)
    assert task_log.texts("stderr") == ["err1", "err2"]
    assert [t for t in task_log.texts("stdout") if t.startswith("out")] == ["out1", "out2"]


def test_100k_lines_arrive_complete_and_in_order(dockerd: PrivateDockerd, ti: FakeTI, task_log: TaskLog) -> None:
    op = HostOperator(dockerd, command=sh("seq 1 100000"))
    out = run_task(op, ti)
    numbers = [t for t in task_log.texts("stdout") if t.isdigit()]
    assert numbers == [str(i) for i in range(1, 100001)]
    assert out["log_lines"] == 100000


def test_lines_reach_the_log_while_the_container_runs(
    dockerd: PrivateDockerd, ti: FakeTI, task_log: TaskLog
) -> None:
    op = HostOperator(dockerd, command=sh("echo 'epoch 1'; sleep 3; echo 'epoch 2'"))
    worker = threading.Thread(target=run_task, args=(op, ti))
    worker.start()
    epoch1 = task_log.wait_for("epoch 1", timeout=30)
    status = [c["State"] for c in leftovers(dockerd, ti)]
    epoch2 = task_log.wait_for("epoch 2", timeout=30)
    worker.join(60)
    assert epoch1 is not None and status == ["running"]
    assert epoch2 is not None and epoch2 - epoch1 > 2.0


def test_kill_during_run_removes_the_container(
    dockerd: PrivateDockerd, ti: FakeTI, task_log: TaskLog, marked_failed: None
) -> None:
    op = HostOperator(dockerd, command=sh("echo started; sleep 600"))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_task(op, ti)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    task_log.wait_for("started", timeout=30)
    assert [c["State"] for c in leftovers(dockerd, ti)] == ["running"]
    op.on_kill()
    worker.join(30)
    assert not worker.is_alive()
    assert leftovers(dockerd, ti) == []
    assert errors and isinstance(errors[0], ContainerFailed)


def test_a_signal_from_inside_is_not_blamed_on_an_engine_restart(dockerd: PrivateDockerd, ti: FakeTI) -> None:
    op = HostOperator(dockerd, command=sh("echo going; sh -c 'kill -KILL $$'; exit $?"))
    with pytest.raises(ContainerFailed, match="exited with code 137 after") as failed:
        run_task(op, ti)
    assert "restarted" not in str(failed.value) and leftovers(dockerd, ti) == []


def test_out_of_memory_is_named(dockerd: PrivateDockerd, ti: FakeTI) -> None:
    op = HostOperator(dockerd, mem_limit="32m",
                      command=sh("echo filling; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo never"))
    with pytest.raises(ContainerFailed, match=r"killed for running out of memory: raise mem_limit"):
        run_task(op, ti)
    assert leftovers(dockerd, ti) == []


def test_oom_look_at_a_removed_container_is_no(dockerd: PrivateDockerd) -> None:
    """``on_kill`` may remove the container between its exit and the operator's OOM look."""
    with dockerd.client() as c:
        container = c.containers.create(TESTBOX_IMAGE, ["true"], network_mode="none")
        container.remove(force=True)
    assert GpuDockerHook("it_host").oom_killed(container.id) is False


@pytest.mark.parametrize(
    ("kwargs", "why", "fix"),
    [
        pytest.param({"command": ["no-such-program", "--epochs", "3"]}, "executable file not found",
                     "The command is not in the image", id="command-not-in-image"),
        pytest.param({"mounts": ["{tmp}/no-such-dir:/data"]}, "bind source path does not exist",
                     "Create that directory on the host", id="missing-bind-source"),
    ],
)
def test_an_engine_refusal_names_host_image_cause_and_fix(
    dockerd: PrivateDockerd, ti: FakeTI, tmp_path: Any, kwargs: dict[str, Any], why: str, fix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "mounts" in kwargs:
        monkeypatch.setenv("AIRFLOW__GPU_DOCKER__ALLOWED_MOUNT_SOURCES", str(tmp_path))
        kwargs = {"mounts": [m.format(tmp=tmp_path) for m in kwargs["mounts"]]}
    op = HostOperator(dockerd, **kwargs)
    with pytest.raises(EngineRefused, match=rf"host 'it_host' would not .* '{TESTBOX_IMAGE}': .*{why}") as err:
        run_task(op, ti)
    assert fix in str(err.value)
    assert leftovers(dockerd, ti) == []


def test_missing_image_is_named(dockerd: PrivateDockerd, ti: FakeTI) -> None:
    op = HostOperator(dockerd, image="no-such-trainer:9.9", pull="missing")
    with pytest.raises(ImageMissing, match="'no-such-trainer:9.9' is not on host 'it_host'"):
        run_task(op, ti)
    assert leftovers(dockerd, ti) == []


def test_gpus_on_a_host_without_agent_fail_before_creating(dockerd: PrivateDockerd, ti: FakeTI) -> None:
    """Without a node agent a host's GPUs are unknown: CPU work runs there, GPU work is refused."""
    before = {x["Id"] for x in dockerd.containers()}
    op = HostOperator(dockerd, gpus=1, command=sh("echo never"))
    with pytest.raises(NoFit, match="it_host: GPUs unknown: connection 'it_host' has no agent_url.*provider.agent"):
        run_task(op, ti)
    assert {x["Id"] for x in dockerd.containers()} == before
    assert ti.xcoms["placement"]["host"] is None and ti.xcoms["placement"]["never"] is True


def test_unreachable_host_is_named(ti: FakeTI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = {"conn_type": "gpu_docker_host", "host": f"unix://{tmp_path}/none.sock"}
    monkeypatch.setenv("AIRFLOW_CONN_GONE", json.dumps(gone))
    op = GpuDockerOperator(task_id="train", image=TESTBOX_IMAGE, host="gone")
    with pytest.raises(NoFit, match="gone: unreachable: Docker engine of host 'gone' at unix://.*did not answer.*"
                                    "start dockerd there.*No host of the pool could be read"):
        run_task(op, ti)


def test_no_gpus_means_none_visible_and_secrets_reach_only_the_container(
    dockerd: PrivateDockerd, ti: FakeTI, task_log: TaskLog
) -> None:
    """A CUDA image says ``NVIDIA_VISIBLE_DEVICES=all`` in its own ENV, which an engine whose
    default runtime is ``nvidia`` obeys: the container without GPUs must see ``void`` instead.
    ``private_environment`` reaches the container's environment, and neither the XCom nor the
    task log."""
    secret = "tok-s3cret-integration"
    tag = f"gpu-docker-test-cuda-env:{ti.run_id.rsplit('_', 1)[-1]}"
    dockerfile = f"FROM {TESTBOX_IMAGE}\nENV NVIDIA_VISIBLE_DEVICES=all\n".encode()
    with dockerd.client() as c:
        c.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, network_mode="none", rm=True)
    try:
        op = HostOperator(dockerd, image=tag, private_environment={"API_TOKEN": secret}, command=sh(
            'echo "visible=$NVIDIA_VISIBLE_DEVICES"; [ "$API_TOKEN" = "%s" ] && echo "token arrived"; '
            'echo "{\\"token_length\\": ${#API_TOKEN}}" > "$RESULT_PATH"' % secret))
        out = run_task(op, ti)
    finally:
        with dockerd.client() as c:
            c.images.remove(tag, force=True)
    assert "visible=void" in task_log.texts("stdout") and "token arrived" in task_log.texts("stdout")
    assert out["result"] == {"token_length": len(secret)}
    assert secret not in json.dumps(out) + json.dumps(ti.xcoms, default=str)
    assert not [e for e in task_log.events if secret in json.dumps(e, default=str)]
    assert leftovers(dockerd, ti) == []
