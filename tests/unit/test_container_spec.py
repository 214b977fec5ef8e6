"""Mapping operator arguments to Docker API arguments."""

from __future__ import annotations

import re
from typing import Any

import pytest

from provider.errors import ContainerFailed, SpecError
from provider.operators.container_spec import IMAGE_REF_PATTERN, build_spec, create_kwargs
from provider.operators.gpu_docker import _gpu_count
from provider.reservations.labels import MANAGED_LABEL, task_labels


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"image": "Not An Image"}, "not a Docker image reference", id="bad-image"),
        pytest.param({"image": ""}, "not a Docker image reference", id="empty-image"),
        pytest.param({"image": "a:b", "cpus": 0}, "cpus=0 must be a positive", id="zero-cpus"),
        pytest.param({"image": "a:b", "cpus": "many"}, "cpus='many'", id="text-cpus"),
        pytest.param({"image": "a:b", "mem_limit": "lots"}, "mem_limit='lots'", id="bad-mem"),
        pytest.param({"image": "a:b", "shm_size": -1}, "shm_size=-1", id="negative-shm"),
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


def test_create_kwargs_defaults() -> None:
    spec = build_spec(image="trainer:1", command=["--epochs", 3], environment={"SEED": 1})
    kw = create_kwargs(spec, api_version="1.41", labels={"k": "v"})
    hc = kw["host_config"]
    assert kw["command"] == ["--epochs", "3"]
    assert kw["environment"] == {"SEED": "1", "RESULT_PATH": "/output/result.json"}
    assert kw["tty"] is False and kw["labels"] == {"k": "v"}
    assert hc["NetworkMode"] == "none"
    assert "DeviceRequests" not in hc
    assert [(m["Target"], m["Type"], m["Source"]) for m in hc["Mounts"]] == [("/output", "volume", None)]


def test_create_kwargs_gpus_limits_and_mounts() -> None:
    spec = build_spec(
        image="trainer:1", cpus="1.5", mem_limit="2g", shm_size="1g",
        mounts=["/data/digits:/data:ro", "models:/output"], network_mode="host",
    )
    hc = create_kwargs(spec, api_version="1.41", gpu_ids=[2, 3])["host_config"]
    assert hc["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["2", "3"], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert hc["NanoCpus"] == 1_500_000_000
    assert hc["Memory"] == 2 << 30 and hc["ShmSize"] == 1 << 30
    assert hc["NetworkMode"] == "host"
    mounts = [(m["Source"], m["Target"], m["Type"], m["ReadOnly"]) for m in hc["Mounts"]]
    # The user's volume at /output replaces the anonymous result volume.
    assert mounts == [("/data/digits", "/data", "bind", True), ("models", "/output", "volume", False)]


def test_task_labels_identify_the_task_instance() -> None:
    labels = task_labels("dag", "train", "manual__1", 2, -1)
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
            _gpu_count(value)
    else:
        assert _gpu_count(value) == expected


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
