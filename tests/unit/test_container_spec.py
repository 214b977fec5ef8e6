"""Mapping operator arguments to the Docker Engine API's container-create body."""

from __future__ import annotations

import re
from typing import Any

import pytest

from provider.errors import ContainerFailed, SpecError
from provider.operators.container_spec import IMAGE_REF_PATTERN, build_spec, create_body, gpu_count
from provider.operators.gpu_docker import GpuDockerOperator
from provider.task_instance import MANAGED_LABEL, TaskInstanceRef


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"image": "Not An Image"}, "not a Docker image reference", id="bad-image"),
        pytest.param({"image": ""}, "not a Docker image reference", id="empty-image"),
        pytest.param({"image": "a:b", "cpus": 0}, "cpus=0 must be a positive", id="zero-cpus"),
        pytest.param({"image": "a:b", "cpus": "many"}, "cpus='many'", id="text-cpus"),
        pytest.param({"image": "a:b", "cpus": "inf"}, "cpus='inf'", id="infinite-cpus"),
        pytest.param({"image": "a:b", "mem_limit": "lots"}, "mem_limit='lots'", id="bad-mem"),
        pytest.param({"image": "a:b", "mem_limit": "4t"}, "such as '4g'", id="unknown-unit"),
        pytest.param({"image": "a:b", "mem_limit": "0.5"}, "mem_limit='0.5'", id="under-a-byte"),
        pytest.param({"image": "a:b", "mem_limit": True}, "mem_limit=True", id="bool-mem"),
        pytest.param({"image": "a:b", "shm_size": -1}, "shm_size=-1", id="negative-shm"),
        pytest.param({"image": "a:b", "shm_size": "-1g"}, "shm_size='-1g'", id="negative-shm-text"),
        pytest.param({"image": "a:b", "command": "echo 'open"}, "close the quote", id="unclosed-quote"),
        pytest.param({"image": "a:b", "command": 3}, "list of arguments or a string", id="number-command"),
        pytest.param({"image": "a:b", "entrypoint": "sh -c 'x"}, "entrypoint=\"sh -c 'x\" cannot be split",
                     id="entrypoint-unclosed-quote"),
        pytest.param({"image": "a:b", "entrypoint": [""]}, "use [] or '' to reset", id="entrypoint-no-program"),
        pytest.param({"image": "a:b", "user": "a b"}, "user='a b' must be a user name or uid", id="user-space"),
        pytest.param({"image": "a:b", "user": "1:2:3"}, "'1000:1000'", id="user-two-colons"),
        pytest.param({"image": "a:b", "user": ":1000"}, "user=':1000'", id="user-no-name"),
        pytest.param({"image": "a:b", "user": -1}, "user=-1", id="negative-uid"),
        pytest.param({"image": "a:b", "working_dir": "work"}, "absolute path in the container", id="relative-workdir"),
        pytest.param({"image": "a:b", "mounts": ["/data"]}, "must read 'SOURCE", id="mount-no-target"),
        pytest.param({"image": "a:b", "mounts": ["/d:/in:rx"]}, "mode must be", id="mount-bad-mode"),
        pytest.param({"image": "a:b", "network_mode": "wifi"}, "network_mode='wifi'", id="bad-network"),
        pytest.param({"image": "a:b", "environment": {"A=B": "1"}}, "contains '='", id="bad-env"),
        pytest.param({"image": "a:b", "result_path": "out.json"}, "absolute path", id="relative-result"),
    ],
)
def test_build_spec_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        build_spec(**kwargs)


@pytest.mark.parametrize(
    "image, ok",
    [
        pytest.param("gpu-docker-trainer:0.1", True, id="name-tag"),
        pytest.param("registry.example.com:5000/team/trainer:1.2", True, id="registry-port"),
        pytest.param("trainer@sha256:" + "a" * 64, True, id="digest"),
        pytest.param("UPPER:case", False, id="upper-case"),
        pytest.param("trainer:", False, id="empty-tag"),
        pytest.param("a b", False, id="space"),
    ],
)
def test_image_reference_pattern(image: str, ok: bool) -> None:
    assert bool(re.match(IMAGE_REF_PATTERN, image)) is ok


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param(1073741824, 1 << 30, id="int-bytes"),
        pytest.param(1.9, 1, id="float-bytes-truncated"),
        pytest.param("1024", 1024, id="text-bytes"),
        pytest.param("1024b", 1024, id="b-suffix"),
        pytest.param("64k", 64 << 10, id="kibibytes"),
        pytest.param("512m", 512 << 20, id="mebibytes"),
        pytest.param("4g", 4 << 30, id="gibibytes"),
        pytest.param("4G", 4 << 30, id="upper-case-unit"),
        pytest.param("4gb", 4 << 30, id="gb-suffix"),
        pytest.param("4 GB", 4 << 30, id="space-before-unit"),
        pytest.param("1.5g", 3 << 29, id="fraction"),
        pytest.param(".5m", 1 << 19, id="leading-point"),
    ],
)
def test_sizes_read_as_docker_run_reads_them(value: Any, expected: int) -> None:
    assert build_spec(image="a:b", mem_limit=value).mem_limit == expected


def test_create_body_defaults() -> None:
    spec = build_spec(image="trainer:1", command=["--epochs", 3], environment={"SEED": 1})
    assert create_body(spec, labels={"k": "v"}) == {
        "Image": "trainer:1",
        "Cmd": ["--epochs", "3"],
        "Env": ["SEED=1", "RESULT_PATH=/output/result.json", "NVIDIA_VISIBLE_DEVICES=void"],
        "Labels": {"k": "v"},
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "OpenStdin": False,
        # The anonymous volume (no Source) that keeps the result file readable after exit.
        "HostConfig": {"NetworkMode": "none", "Mounts": [{"Type": "volume", "Target": "/output", "ReadOnly": False}]},
    }


def test_create_body_gpus_limits_and_mounts() -> None:
    spec = build_spec(
        image="trainer:1", cpus="1.5", mem_limit="2g", shm_size="1g",
        mounts=["/data/digits:/data:ro", "models:/output"], network_mode="host",
    )
    assert create_body(spec, gpu_ids=[2, 3])["HostConfig"] == {
        "NetworkMode": "host",
        # The user's volume at /output replaces the anonymous result volume.
        "Mounts": [
            {"Type": "bind", "Source": "/data/digits", "Target": "/data", "ReadOnly": True},
            {"Type": "volume", "Source": "models", "Target": "/output", "ReadOnly": False},
        ],
        "NanoCpus": 1_500_000_000,
        "Memory": 2 << 30,
        "ShmSize": 1 << 30,
        "DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["2", "3"], "Capabilities": [["gpu"]]}],
    }


def test_a_gpu_share_is_passed_to_the_container_as_its_mps_percentage() -> None:
    def env(body: dict[str, Any]) -> dict[str, str]:
        return dict(e.split("=", 1) for e in body["Env"])

    spec = build_spec(image="a:b")
    assert env(create_body(spec, gpu_ids=[1], gpu_milli=500))["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    assert env(create_body(spec, gpu_ids=[1], gpu_milli=1))["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "1"
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env(create_body(spec, gpu_ids=[1]))
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env(create_body(spec, gpu_milli=500))  # no GPU, no share


def test_create_body_keeps_environment_result_path_and_moves_the_result_volume() -> None:
    spec = build_spec(image="a:b", environment={"RESULT_PATH": "/mine"}, result_path="/results/metrics.json")
    body = create_body(spec)
    assert body["Env"] == ["RESULT_PATH=/mine", "NVIDIA_VISIBLE_DEVICES=void"]
    assert body["HostConfig"]["Mounts"] == [{"Type": "volume", "Target": "/results", "ReadOnly": False}]


@pytest.mark.parametrize(
    "kwargs, fields",
    [
        pytest.param({}, {}, id="image-defaults-kept"),
        pytest.param({"command": "python train.py --name 'run 1'"},
                     {"Cmd": ["python", "train.py", "--name", "run 1"]}, id="command-string-split"),
        pytest.param({"command": []}, {"Cmd": []}, id="command-empty-list"),
        pytest.param({"entrypoint": ["python3", "-u"]}, {"Entrypoint": ["python3", "-u"]}, id="entrypoint-list"),
        pytest.param({"entrypoint": "python3 -m trainer"}, {"Entrypoint": ["python3", "-m", "trainer"]},
                     id="entrypoint-string-split"),
        pytest.param({"entrypoint": []}, {"Entrypoint": []}, id="entrypoint-reset-list"),
        pytest.param({"entrypoint": ""}, {"Entrypoint": []}, id="entrypoint-reset-string"),
        pytest.param({"entrypoint": ["sh", "-c"], "command": ["echo $HOME"]},
                     {"Entrypoint": ["sh", "-c"], "Cmd": ["echo $HOME"]}, id="entrypoint-and-command"),
        pytest.param({"user": "trainer"}, {"User": "trainer"}, id="user-name"),
        pytest.param({"user": "1000:1000"}, {"User": "1000:1000"}, id="user-uid-gid"),
        pytest.param({"user": "trainer:video"}, {"User": "trainer:video"}, id="user-name-group"),
        pytest.param({"user": 0}, {"User": "0"}, id="user-int-uid"),
        pytest.param({"user": ""}, {}, id="user-empty-keeps-image"),
        pytest.param({"working_dir": "/workspace/run"}, {"WorkingDir": "/workspace/run"}, id="working-dir"),
        pytest.param({"working_dir": ""}, {}, id="working-dir-empty-keeps-image"),
    ],
)
def test_create_body_process_fields(kwargs: dict[str, Any], fields: dict[str, Any]) -> None:
    """Fields left out of the body keep the image's ENTRYPOINT, CMD, USER and WORKDIR."""
    body = create_body(build_spec(image="a:b", **kwargs))
    process = {k: body[k] for k in ("Cmd", "Entrypoint", "User", "WorkingDir") if k in body}
    assert process == fields


@pytest.mark.parametrize(
    "params, expected",
    [
        pytest.param(
            {"ep": "python3 -u", "uid": "1000:1000", "run": "r1"},
            {"Entrypoint": ["python3", "-u"], "Cmd": ["train.py", "--run", "r1"], "User": "1000:1000",
             "WorkingDir": "/runs/r1"},
            id="rendered",
        ),
        pytest.param({"ep": "", "uid": "", "run": "r1"}, {"Entrypoint": [], "Cmd": ["train.py", "--run", "r1"],
                      "WorkingDir": "/runs/r1"}, id="rendered-empty-resets-entrypoint-keeps-user"),
        pytest.param({"ep": "sh", "uid": "a b", "run": "r1"}, "user='a b'", id="rendered-bad-user"),
    ],
)
def test_operator_process_arguments_are_templated_and_checked_when_run(
    params: dict[str, str], expected: dict[str, Any] | str
) -> None:
    op = GpuDockerOperator(
        task_id="t", image="trainer:1", entrypoint="{{ params.ep }}", command=["train.py", "--run", "{{ params.run }}"],
        user="{{ params.uid }}", working_dir="/runs/{{ params.run }}",
    )
    op.render_template_fields({"params": params})  # type: ignore[arg-type]
    if isinstance(expected, str):
        with pytest.raises(SpecError, match=re.escape(expected)):
            op._checked().spec
        return
    body = create_body(op._checked().spec)
    assert {k: body[k] for k in ("Entrypoint", "Cmd", "User", "WorkingDir") if k in body} == expected


def test_task_labels_identify_the_task_instance() -> None:
    labels = TaskInstanceRef("dag", "train", "manual__1", -1, 2).to_labels()
    assert labels[MANAGED_LABEL] == "true"
    assert {k.rsplit(".", 1)[1]: v for k, v in labels.items()} == {
        "managed": "true", "dag_id": "dag", "task_id": "train", "run_id": "manual__1",
        "try_number": "2", "map_index": "-1",
    }


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param(0, 0, id="zero"),
        pytest.param("2", 2, id="rendered-template"),
        pytest.param(-1, None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("x", None, id="text"),
    ],
)
def test_gpu_count(value: Any, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(SpecError, match="whole number"):
            gpu_count(value)
    else:
        assert gpu_count(value) == expected


def test_container_failed_names_everything_needed() -> None:
    tail = [f"line {i}" for i in range(20)]
    err = ContainerFailed(
        image="trainer:1", host="gpu-a", container_id="0123456789abcdef", exit_code=3,
        duration_s=12.34, tail=tail, oom_killed=True,
    )
    text = str(err)
    assert "0123456789ab" in text and "'trainer:1'" in text and "'gpu-a'" in text
    assert "code 3" in text and "out of memory" in text and "12.3 s" in text
    assert text.endswith("  line 19") and "Last 20 lines" in text
