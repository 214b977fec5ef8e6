"""The operator's edge: which host paths, users and networks a task may ask for, the GPU variables
it may not set, and the secrets it passes (docs/security/edge.md). Pure rules, plain values."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

import pytest
from airflow.sdk import DAG, Connection
from airflow.sdk._shared.secrets_masker import redact

from provider.clients.hosts import HostConfig, TlsFiles, host_from_connection
from provider.errors import HostConfigError, SpecError
from provider.operators.container_spec import build_spec, create_body
from provider.operators.gpu_docker import GpuDockerOperator
from provider.operators.host_access import check_access, check_mounts, mount_policy, runs_as_root

LOCAL = HostConfig("local", "unix:///var/run/docker.sock")
TLS = TlsFiles("/etc/gpu/ca.pem", "/etc/gpu/cert.pem", "/etc/gpu/key.pem")
REMOTE = HostConfig("gpu-a", "tcp://gpu-a:2376", tls=TLS)
ODD_SOCKET = HostConfig("odd", "unix:///srv/engine/api.sock")


@pytest.mark.parametrize(
    ("setting", "mount", "refused"),
    [
        # What the administrator allows, matched by whole path components after normalising.
        pytest.param("", "/data:/data", "host path '/data' is not under [gpu_docker] allowed_mount_sources "
                     "(it allows nothing)", id="default-allows-no-host-path"),
        pytest.param("/data", "/data:/in", None, id="listed"),
        pytest.param("/data", "/data/imagenet:/in:ro", None, id="below-listed"),
        pytest.param("/data/", "//data//imagenet/./:/in", None, id="slashes-and-dots-normalised"),
        pytest.param("/data", "/database:/in", "host path '/database' is not under", id="prefix-is-not-a-component"),
        pytest.param("/data", "/dat:/in", "is not under", id="shorter"),
        pytest.param("/data, /scratch", "/scratch/run1:/out", None, id="second-entry"),
        pytest.param("/datasets:ro", "/datasets/x:/in", "allows '/datasets/x' read-only only; end the entry with "
                     "':ro'", id="read-only-entry-refuses-rw"),
        pytest.param("/datasets:ro", "/datasets/x:/in:ro", None, id="read-only-entry"),
        pytest.param("/datasets:ro,/datasets/rw", "/datasets/rw/x:/in", None, id="rw-entry-below-ro-entry"),
        pytest.param("", "models:/output", None, id="named-volume-is-no-host-path"),
        # The attacks: never allowed, whatever is listed.
        pytest.param("/var/run", "/var/run/docker.sock:/s", "the container engine's socket (/var/run/docker.sock)",
                     id="docker-socket"),
        pytest.param("/run", "/run/:/r", "socket (/run/docker.sock, /run/containerd/containerd.sock)",
                     id="directory-holding-the-socket"),
        pytest.param("/var", "/var/run:/r", "socket (/var/run/docker.sock)", id="var-run"),
        pytest.param("/home", "/home/u/.docker/run/docker.sock:/s", "socket (/home/u/.docker/run/docker.sock)",
                     id="rootless-socket-by-name"),
        pytest.param("/run", "/run/containerd/containerd.sock:/s", "engine's socket", id="containerd-socket"),
        pytest.param("/srv", "/srv/engine/api.sock:/s", "socket (/srv/engine/api.sock)", id="the-hosts-own-socket"),
        pytest.param("/srv", "/srv/engine:/s", "socket (/srv/engine/api.sock)", id="the-hosts-own-socket-dir"),
        pytest.param("/var/run", "//var//run//docker.sock/:/s", "engine's socket", id="socket-with-slashes"),
        pytest.param("/data", "/:/host", "the host's root directory", id="root"),
        pytest.param("/data", "//:/host", "the host's root directory", id="root-double-slash"),
        pytest.param("/data", "/data/../var/run/docker.sock:/s", "'..' in a host path is refused", id="dot-dot"),
        pytest.param("/data", "/data/..:/s", "'..' in a host path is refused", id="dot-dot-at-end"),
    ],
)
def test_bind_mount_sources(setting: str, mount: str, refused: str | None) -> None:
    hosts = [LOCAL, REMOTE, ODD_SOCKET]
    if refused is None:
        check_mounts([mount], mount_policy(setting), hosts)
        return
    with pytest.raises(SpecError, match=re.escape(refused)) as failed:
        check_mounts([mount], mount_policy(setting), hosts)
    assert f"mounts entry {mount!r}" in str(failed.value)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param("data", "entry 'data' must be an absolute host directory", id="relative"),
        pytest.param("/data:rw", "optionally followed by ':ro'", id="unknown-mode"),
        pytest.param("/", "would allow every host path", id="root"),
        pytest.param("//", "would allow every host path", id="root-slashes"),
        pytest.param("/data/../etc", "'..' in a host path is refused", id="dot-dot"),
    ],
)
def test_a_bad_setting_names_itself_and_the_fix(setting: str, message: str) -> None:
    with pytest.raises(HostConfigError, match=re.escape(message)) as failed:
        mount_policy(setting)
    assert "[gpu_docker] allowed_mount_sources" in str(failed.value)


@pytest.mark.parametrize(
    ("user", "root"),
    [
        *(pytest.param(u, True, id=f"root-{u}") for u in ("0", "root", "0:0", "root:root", "0:1000", "00", "+0")),
        *(pytest.param(u, False, id=f"user-{u}") for u in ("1000", "1000:0", "10", "rooter", "trainer:root")),
        pytest.param(None, False, id="image-user"),
    ],
)
def test_which_users_are_root(user: str | None, root: bool) -> None:
    assert runs_as_root(user) is root


def test_root_and_host_network_need_every_host_of_the_pool_to_allow_them() -> None:
    open_host = HostConfig("open", "tcp://open:2376", tls=TLS, allow_root_user=True, allow_host_network=True)
    as_root = build_spec(image="a:b", user=0)
    on_host = build_spec(image="a:b", network_mode="host")
    check_access(as_root, [open_host], "")
    check_access(on_host, [open_host], "")
    with pytest.raises(SpecError, match=re.escape("user='0' (root) is refused on host connection(s) 'gpu-a', 'local'")):
        check_access(as_root, [open_host, REMOTE, LOCAL], "")
    with pytest.raises(SpecError, match=re.escape("network_mode='host' is refused on host connection(s) 'gpu-a'")) \
            as failed:
        check_access(on_host, [open_host, REMOTE], "")
    assert '"allow_host_network": true' in str(failed.value)
    joined = build_spec(image="a:b", network_mode="container:agent")  # a host-network container's namespace
    with pytest.raises(SpecError, match=re.escape("network_mode='container:agent' is refused on host connection")):
        check_access(joined, [REMOTE], "")
    check_access(joined, [open_host], "")
    check_access(build_spec(image="a:b", user=1000, network_mode="none"), [REMOTE], "")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({}, (False, False), id="default-refuses"),
        pytest.param({"allow_root_user": None, "allow_host_network": None}, (False, False), id="null"),
        pytest.param({"allow_root_user": True, "allow_host_network": False}, (True, False), id="root-only"),
        pytest.param({"allow_root_user": "yes"}, "extra allow_root_user must be true or false", id="text"),
        pytest.param({"allow_host_network": 1}, "extra allow_host_network must be true or false", id="number"),
    ],
)
def test_host_permissions_are_read_strictly(extra: dict[str, Any], expected: tuple[bool, bool] | str) -> None:
    conn = Connection(conn_id="h", conn_type="gpu_docker_host", host="unix:///run/h/docker.sock", extra=json.dumps(extra))
    if isinstance(expected, str):
        with pytest.raises(HostConfigError, match=re.escape(expected)):
            host_from_connection(conn)
        return
    host = host_from_connection(conn)
    assert (host.allow_root_user, host.allow_host_network) == expected


def env_of(body: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in body["Env"])


def test_gpu_variables_come_from_the_placement_only() -> None:
    """Without GPUs the container gets ``void``, so an engine whose default runtime is nvidia
    shows it none (a CUDA image's own ENV says ``all``); with GPUs, the ones reserved."""
    spec = build_spec(image="a:b")
    assert env_of(create_body(spec))["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env_of(create_body(spec, gpu_ids=[2, 3]))["NVIDIA_VISIBLE_DEVICES"] == "2,3"
    assert env_of(create_body(spec, gpu_ids=[1], gpu_milli=250))["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"


@pytest.mark.parametrize("field", ["environment", "private_environment"])
@pytest.mark.parametrize("name", ["NVIDIA_VISIBLE_DEVICES", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"])
def test_environment_cannot_override_the_gpu_variables(field: str, name: str) -> None:
    """The attack: ``gpus=0`` with ``NVIDIA_VISIBLE_DEVICES=all``, or a 10% share that sets 100%."""
    with pytest.raises(SpecError, match=re.escape(f"{field} sets {name}, which the provider sets from the placement")):
        build_spec(image="a:b", **{field: {name: "all"}})


def test_private_environment_reaches_the_engine_only() -> None:
    spec = build_spec(image="a:b", environment={"EPOCHS": 3}, private_environment={"API_TOKEN": "tok-s3cret-1"})
    assert env_of(create_body(spec)) == {"EPOCHS": "3", "API_TOKEN": "tok-s3cret-1", "RESULT_PATH": "/output/result.json",
                                         "NVIDIA_VISIBLE_DEVICES": "void"}
    assert "tok-s3cret-1" not in repr(spec)
    with pytest.raises(SpecError, match="API_TOKEN given in both environment and private_environment"):
        build_spec(image="a:b", environment={"API_TOKEN": "x"}, private_environment={"API_TOKEN": "y"})


def test_a_bad_private_environment_does_not_print_its_values() -> None:
    op = GpuDockerOperator(task_id="t", image="a:b", private_environment=["API_TOKEN=tok-s3cret-2"])  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="private_environment=a list must be a mapping") as failed:
        op._checked()
    assert "tok-s3cret-2" not in str(failed.value)


def test_private_environment_is_not_templated_shown_or_serialized() -> None:
    """Not a template field (a template in it stays as written), absent from what the UI shows
    (the serialized DAG, the rendered fields), and masked in the task log once the run starts."""
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG(dag_id="secrets", schedule=None) as dag:
        op = GpuDockerOperator(task_id="t", image="a:b", environment={"SEEN": "{{ params.x }}"},
                               private_environment={"API_TOKEN": "tok-s3cret-3", "RAW": "{{ params.x }}"})
    assert "private_environment" not in op.template_fields
    op.render_template_fields({"params": {"x": "rendered"}})  # type: ignore[arg-type]
    assert op.environment == {"SEEN": "rendered"} and op.private_environment == {"API_TOKEN": "tok-s3cret-3",
                                                                                  "RAW": "{{ params.x }}"}
    assert "tok-s3cret-3" not in json.dumps(DagSerialization.to_dict(dag))
    assert "tok-s3cret-3" not in json.dumps({f: getattr(op, f) for f in op.template_fields}, default=str)
    assert redact("token tok-s3cret-4") == "token tok-s3cret-4"  # a value never given is shown
    GpuDockerOperator(task_id="u", image="a:b", private_environment={"K": "tok-s3cret-4"})._checked()
    assert redact("token tok-s3cret-4") == "token ***"


def test_frozen_specs_keep_private_values_out_of_their_repr() -> None:
    spec = build_spec(image="a:b", private_environment=MappingProxyType({"K": "tok-s3cret-5"}))
    assert "tok-s3cret-5" not in repr(spec) and spec.private_environment["K"] == "tok-s3cret-5"


def test_task_gpu_docker_takes_private_environment_the_same_way() -> None:
    from airflow.sdk import task
    from airflow.serialization.serialized_objects import DagSerialization

    from provider.decorators.gpu_docker import GpuDockerDecoratedOperator

    with DAG(dag_id="secrets_taskflow", schedule=None) as dag:
        @task.gpu_docker(image="a:b", private_environment={"API_TOKEN": "tok-s3cret-6"})  # type: ignore[attr-defined]
        def train() -> int:
            return 1

        train()
    op = dag.get_task("train")
    assert isinstance(op, GpuDockerDecoratedOperator) and "private_environment" not in op.template_fields
    assert dict(op._checked().spec.private_environment) == {"API_TOKEN": "tok-s3cret-6"}
    assert "tok-s3cret-6" not in json.dumps(DagSerialization.to_dict(dag))


FRAGMENTS = ("", "/", "//", ".", "..", "data", "database", "var", "run", "docker.sock", "containerd.sock", "srv",
             "engine", "api.sock", "x", " ", ":", "ro", "~", "-v")
SETTING = "/data, /srv/engine/x, /var/x:ro"
SOCKETS = [PurePosixPath(s) for s in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                                      "/srv/engine/api.sock")]


def pick(rng: random.Random, good: list[Any], bad: list[Any]) -> tuple[Any, bool]:
    """A good value four times in five (so that many inputs pass), and whether it is one."""
    ok = rng.random() < 0.8
    return rng.choice(good if ok else bad), ok


def oracle(source: str, target: str, mode: str) -> bool:
    """Whether the setting above allows the mount, judged apart from the code under test: by
    pathlib's path components."""
    if ":" in source or target != "/in" or mode not in ("", ":ro", ":rw"):
        return False
    if not source.startswith("/"):
        return re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", source) is not None  # a volume name
    path = PurePosixPath("/" + source.lstrip("/"))  # Linux reads a leading "//" as "/", pathlib does not
    if ".." in source.split("/") or path.name in ("docker.sock", "containerd.sock") or \
            any(s.parts[:len(path.parts)] == path.parts for s in SOCKETS):
        return False
    return any(path.parts[:len(PurePosixPath(a.prefix).parts)] == PurePosixPath(a.prefix).parts
               and (mode == ":ro" or not a.read_only) for a in mount_policy(SETTING))


def test_seeded_mounts_users_networks_and_environments_pass_as_the_rules_say_or_are_refused_by_name(
    report: Callable[[str], None],
) -> None:
    """A bounded, seeded fuzz of the edge: mount strings made of the fragments the attacks use,
    users, network modes and environments, on a pool with a ``unix://`` host. Each input passes
    exactly when an oracle written apart says it may, and is otherwise refused with a
    :class:`SpecError` naming the argument; nothing else escapes."""
    rng = random.Random(26)
    tried = passed = 0
    deadline = time.monotonic() + 5.0
    while tried < 20000 and time.monotonic() < deadline:
        tried += 1
        start = rng.choice(["/data", "/var/x", "/srv/engine/x", "/srv/engine", "/var/run", "/", "models"])
        source = "/".join([start, *(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 4)))])
        target, mode = rng.choice(["/in", "/in", "in", ""]), rng.choice(["", ":ro", ":rw", ":rx"])
        user, user_ok = pick(rng, [None, "1000"], [0, "0", "root", "00", "+0", "0:0", "root:x", "a b", -1])
        network, network_ok = pick(rng, ["none", "bridge"], ["host", "container:a", "wifi"])
        env, env_ok = pick(rng, [{}, {"EPOCHS": 3}], [{"NVIDIA_VISIBLE_DEVICES": "all"}, {"A=": "1"},
                                                      {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": 1}])
        mount = f"{source}:{target}{mode}"
        expected = user_ok and network_ok and env_ok and oracle(source, target, mode)
        try:
            spec = build_spec(image="a:b", mounts=[mount], user=user, network_mode=network, environment=env)
            check_access(spec, [ODD_SOCKET, REMOTE], SETTING)
        except SpecError as exc:
            assert not expected, f"{mount!r} user={user!r} network_mode={network!r} {env}: {exc}"
            assert re.search(r"\b(mounts|user|network_mode|environment)\b", str(exc)), exc
            continue
        assert expected, f"{mount!r} user={user!r} network_mode={network!r} {env} passed"
        passed += 1
    report(f"edge fuzz: {tried} argument sets tried, {passed} passed, {tried - passed} refused by name")
    assert tried >= 1000 and 0 < passed < tried
