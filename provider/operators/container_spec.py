"""Pure mapping from what a DAG author writes to what the Docker API takes.

Kept free of I/O so every rule (validation, labels, GPU device requests) is tested with plain
values, the way docker-py maps ``containers.run`` keyword arguments in one pure function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from docker.types import DeviceRequest, HostConfig, Mount
from docker.utils import parse_bytes

from provider.errors import SpecError

RESULT_DIR = "/output"
DEFAULT_RESULT_PATH = f"{RESULT_DIR}/result.json"

# A Docker image reference: [registry[:port]/]name[/name...][:tag][@digest], lower-case names.
IMAGE_REF_PATTERN = (
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)
_IMAGE_RE = re.compile(IMAGE_REF_PATTERN)
_NETWORK_MODES = ("none", "host", "bridge")


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """A validated container request, independent of the host it will run on."""

    image: str
    command: tuple[str, ...] | str | None = None
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    mounts: tuple[str, ...] = ()
    cpus: float | None = None
    mem_limit: int | None = None
    shm_size: int | None = None
    network_mode: str = "none"
    user: str | None = None
    working_dir: str | None = None
    result_path: str = DEFAULT_RESULT_PATH


def build_spec(
    *,
    image: str,
    command: Sequence[str] | str | None = None,
    environment: Mapping[str, Any] | None = None,
    mounts: Sequence[str] = (),
    cpus: float | str | None = None,
    mem_limit: int | str | None = None,
    shm_size: int | str | None = None,
    network_mode: str = "none",
    user: str | None = None,
    working_dir: str | None = None,
    result_path: str = DEFAULT_RESULT_PATH,
) -> ContainerSpec:
    """Check every argument and return the spec; raise :class:`SpecError` naming the first bad one."""
    if not isinstance(image, str) or not _IMAGE_RE.match(image):
        raise SpecError(
            f"image={image!r} is not a Docker image reference; expected e.g. "
            "'gpu-docker-trainer:0.1' or 'registry.example.com/team/trainer:1.2'."
        )
    if command is not None and not isinstance(command, str):
        command = tuple(str(c) for c in command)
    env = {str(k): str(v) for k, v in (environment or {}).items()}
    for key in env:
        if not key or "=" in key:
            raise SpecError(f"environment variable name {key!r} is empty or contains '='.")
    for m in mounts:
        _parse_mount(m)
    cpu_value = None
    if cpus is not None:
        try:
            cpu_value = float(cpus)
        except (TypeError, ValueError):
            cpu_value = -1.0
        if not cpu_value > 0:
            raise SpecError(f"cpus={cpus!r} must be a positive number of CPUs, e.g. 2 or 0.5.")
    if network_mode not in _NETWORK_MODES and not network_mode.startswith("container:"):
        raise SpecError(
            f"network_mode={network_mode!r}; use one of {', '.join(_NETWORK_MODES)} "
            "(training containers default to 'none')."
        )
    if not result_path.startswith("/"):
        raise SpecError(f"result_path={result_path!r} must be an absolute path in the container.")
    return ContainerSpec(
        image=image,
        command=command,
        environment=MappingProxyType(env),
        mounts=tuple(mounts),
        cpus=cpu_value,
        mem_limit=_bytes("mem_limit", mem_limit),
        shm_size=_bytes("shm_size", shm_size),
        network_mode=network_mode,
        user=user,
        working_dir=working_dir,
        result_path=result_path,
    )


def _bytes(name: str, value: int | str | None) -> int | None:
    if value is None:
        return None
    try:
        parsed = int(parse_bytes(value))
    except Exception:  # noqa: BLE001 - docker-py raises its own error types for bad units
        parsed = -1
    if parsed <= 0:
        raise SpecError(f"{name}={value!r} must be a positive size such as '4g', '512m' or 1073741824.")
    return parsed


def _parse_mount(text: str) -> Mount:
    """``SRC:DST[:ro|rw]``: SRC an absolute host path (bind) or a volume name."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise SpecError(
            f"mount {text!r} must read 'SOURCE:/container/path[:ro]' with SOURCE an absolute host "
            "path or a volume name."
        )
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise SpecError(f"mount {text!r}: mode must be 'ro' or 'rw', got {mode!r}.")
    kind = "bind" if parts[0].startswith("/") else "volume"
    return Mount(target=parts[1], source=parts[0], type=kind, read_only=mode == "ro")


def create_kwargs(
    spec: ContainerSpec,
    *,
    api_version: str,
    gpu_ids: Sequence[int] = (),
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_container``.

    GPUs are requested by explicit device id, never as a count, so the container gets exactly
    the GPUs placement chose. An anonymous volume at the result directory lets the operator
    read the result file back after exit on any host, with no shared filesystem.
    """
    mounts = [_parse_mount(m) for m in spec.mounts]
    if not any(m["Target"] == _dirname(spec.result_path) for m in mounts):
        mounts.append(Mount(target=_dirname(spec.result_path), source=None, type="volume"))
    host_config = HostConfig(
        version=api_version,
        network_mode=spec.network_mode,
        mounts=mounts,
        nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
        mem_limit=spec.mem_limit,
        shm_size=spec.shm_size,
        device_requests=[
            DeviceRequest(
                driver="nvidia",
                device_ids=[str(i) for i in gpu_ids],
                capabilities=[["gpu"]],
            )
        ]
        if gpu_ids
        else None,
    )
    env = dict(spec.environment)
    env.setdefault("RESULT_PATH", spec.result_path)
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command) if isinstance(spec.command, tuple) else spec.command,
        "environment": env,
        "labels": dict(labels or {}),
        "host_config": host_config,
        "detach": True,
        "tty": False,
        "stdin_open": False,
    }
    if spec.user:
        kwargs["user"] = spec.user
    if spec.working_dir:
        kwargs["working_dir"] = spec.working_dir
    return kwargs


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"
