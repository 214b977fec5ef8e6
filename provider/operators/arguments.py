"""Every argument of :class:`~provider.operators.gpu_docker.GpuDockerOperator`, checked in one place.

An operator's arguments may be templates, so they are known only once Airflow has rendered
them, at the start of the run. :func:`check_arguments` is then the first thing the run does,
before any connection is looked up or any engine or agent is asked: a bad value fails with a
:class:`~provider.errors.SpecError` naming the argument and what it accepts, and nothing has been
reserved, pulled or started. Pure: no Airflow, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provider.errors import SpecError
from provider.operators.container_spec import ContainerSpec, build_spec
from provider.scheduling.arguments import number, placement_request, whole_number
from provider.scheduling.model import PlacementRequest
from provider.scheduling.policy_names import check_placement_policy

ARGUMENT_NAMES = (
    "image", "command", "entrypoint", "user", "working_dir", "environment", "private_environment", "mounts", "cpus",
    "mem_limit", "shm_size", "network_mode", "result_path", "gpus", "gpu_milli", "gpu_memory_mb", "gpu_model", "required_labels", "host",
    "gpu_pool", "placement_policy", "pull", "docker_conn_id", "pull_penalty_per_gb", "stop_grace_s", "log_archive",
    "log_archive_conn_id", "log_live_rate", "log_chunk_s", "log_chunk_bytes", "max_line_bytes", "tail_lines",
    "wait_for_resources", "deferrable", "wait_timeout", "poll_interval", "hold_after_s", "reattach", "gpu_queue",
)
"""The operator's arguments that :func:`check_arguments` reads, by their parameter names."""

PULL_POLICIES = ("missing", "always", "never")
MIN_LINE_BYTES = 4
"""The shortest line limit that can still hold one UTF-8 character whole."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How the container's output is shipped (docs/parameters.md, "Logs")."""

    archive: str | None
    archive_conn_id: str | None
    live_rate: float | None
    chunk_s: float
    chunk_bytes: int
    max_line_bytes: int
    tail_lines: int


@dataclass(frozen=True, slots=True)
class Arguments:
    """The operator's rendered arguments, checked: what to run, what to reserve, where, how to log."""

    spec: ContainerSpec
    request: PlacementRequest
    policy: str
    pool: str | tuple[str, ...]
    pull: str
    pull_penalty_per_gb: float
    stop_grace_s: int
    log: LogSettings
    wait_timeout_s: float
    poll_interval_s: float
    hold_after_s: float | None
    queue: str | None
    """The queue of the pool the task counts against (None: the pool's default, if it has queues)."""


def check_arguments(a: Mapping[str, Any]) -> Arguments:
    """Check the operator's rendered arguments ``a`` (by their parameter names) and return them
    in the forms the run uses; :class:`SpecError` names the first bad one and its fix."""
    spec = build_spec(
        image=a["image"], command=a["command"], entrypoint=a["entrypoint"], environment=_mapping("environment",
        a["environment"]), private_environment=_mapping("private_environment", a["private_environment"]),
        mounts=_strings("mounts", a["mounts"]), cpus=a["cpus"], mem_limit=a["mem_limit"],
        shm_size=a["shm_size"], network_mode=a["network_mode"], user=a["user"], working_dir=a["working_dir"],
        result_path=a["result_path"],
    )
    request = placement_request(
        gpus=a["gpus"], gpu_milli=a["gpu_milli"], gpu_memory_mb=a["gpu_memory_mb"], gpu_model=a["gpu_model"],
        required_labels=a["required_labels"], cpu_milli=round((spec.cpus or 0) * 1000),
        memory_mb=(spec.mem_limit or 0) // (1024 * 1024),
    )
    pull = a["pull"]
    if pull not in PULL_POLICIES:
        raise SpecError(f"pull={pull!r}; use one of {', '.join(PULL_POLICIES)}.")
    _optional_text("docker_conn_id", a["docker_conn_id"])
    for flag in ("wait_for_resources", "deferrable", "reattach"):
        if not isinstance(a[flag], bool):
            raise SpecError(f"{flag}={a[flag]!r} must be True or False.")
    return Arguments(
        spec=spec,
        request=request,
        policy=check_placement_policy(a["placement_policy"]),
        pool=_pool(a["host"], a["gpu_pool"]),
        pull=pull,
        pull_penalty_per_gb=number("pull_penalty_per_gb", a["pull_penalty_per_gb"], minimum=0.0),
        stop_grace_s=whole_number("stop_grace_s", a["stop_grace_s"]),
        log=_log_settings(a),
        wait_timeout_s=number("wait_timeout", a["wait_timeout"], minimum=0.0, above=True),
        poll_interval_s=number("poll_interval", a["poll_interval"], minimum=0.0, above=True),
        hold_after_s=None if a["hold_after_s"] is None else number("hold_after_s", a["hold_after_s"], minimum=0.0),
        queue=_queue(a["gpu_queue"], a["gpu_pool"]),
    )


def _log_settings(a: Mapping[str, Any]) -> LogSettings:
    archive = a["log_archive"]
    if archive is not None and (not isinstance(archive, str) or "://" not in archive):
        raise SpecError(f"log_archive={archive!r} is not a URL; use file:///absolute/dir or "
                        "s3://CONN_ID@bucket/prefix (or None for no archive).")
    rate = a["log_live_rate"]
    return LogSettings(
        archive=archive,
        archive_conn_id=_optional_text("log_archive_conn_id", a["log_archive_conn_id"]),
        live_rate=None if rate is None else number("log_live_rate", rate, minimum=0.0, above=True,
                                                   fix="lines per second, or None to show every line"),
        chunk_s=number("log_chunk_s", a["log_chunk_s"], minimum=0.0, above=True),
        chunk_bytes=whole_number("log_chunk_bytes", a["log_chunk_bytes"], minimum=1),
        max_line_bytes=whole_number("max_line_bytes", a["max_line_bytes"], minimum=MIN_LINE_BYTES),
        tail_lines=whole_number("tail_lines", a["tail_lines"]),
    )


def _pool(host: Any, gpu_pool: Any) -> str | tuple[str, ...]:
    """Where the task may run: ``gpu_pool`` (a connection id or a list of host connection ids),
    else ``host``, a pool of one. ``host`` is checked also when ``gpu_pool`` wins: a bad value
    there is a mistake in the DAG all the same."""
    if not isinstance(host, str) or not host:
        raise SpecError(f"host={host!r} must be the id of a 'GPU Docker host' connection.")
    if gpu_pool is None:
        return host
    if isinstance(gpu_pool, str) and gpu_pool:
        return gpu_pool
    if isinstance(gpu_pool, Sequence) and not isinstance(gpu_pool, str) and gpu_pool \
            and all(isinstance(i, str) and i for i in gpu_pool):
        return tuple(gpu_pool)
    raise SpecError(f"gpu_pool={gpu_pool!r} must be the id of a 'GPU Docker pool' connection or a non-empty list "
                    "of 'GPU Docker host' connection ids.")


def _queue(queue: Any, gpu_pool: Any) -> str | None:
    """The task's queue: a name, checked against the pool's queues once the pool is read."""
    if queue is None:
        return None
    if not isinstance(queue, str) or not queue:
        raise SpecError(f"gpu_queue={queue!r} must be the name of a queue of the pool (a non-empty string) or None.")
    if not isinstance(gpu_pool, str):
        raise SpecError(f"gpu_queue={queue!r} needs gpu_pool to be a 'GPU Docker pool' connection that declares "
                        "queues; a single host or a list of hosts has none.")
    return queue


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        shown = f"a {type(value).__name__}" if name == "private_environment" else repr(value)  # never a secret
        raise SpecError(f"{name}={shown} must be a mapping of names to values, e.g. {{'EPOCHS': '10'}}.")
    return value


def _strings(name: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{name}={value!r} must be a list of strings, e.g. ['/data:/data:ro'].")
    return list(value)


def _optional_text(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise SpecError(f"{name}={value!r} must be a connection id (a non-empty string) or None.")
    return value

