"""Pure mapping from what a DAG author writes to what the Docker Engine API takes.

Kept free of I/O so every rule (validation, labels, GPU device requests) is tested with plain
values. :func:`create_body` returns the JSON body of ``POST /containers/create`` itself (API
1.41 field names) rather than a client library's keyword arguments, so what is tested is
exactly what the engine receives.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from provider.errors import SpecError
from provider.scheduling.model import MILLI_PER_GPU, is_share

RESULT_DIR = "/output"
DEFAULT_RESULT_PATH = f"{RESULT_DIR}/result.json"
MPS_SHARE_ENV = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
GPU_ENV = (VISIBLE_DEVICES_ENV, MPS_SHARE_ENV)
"""The variables through which the provider gives a container its GPUs and its share of one:
set from the placement, never from ``environment``. ``NVIDIA_VISIBLE_DEVICES`` is also what an
engine whose default runtime is ``nvidia`` reads, so a container without GPUs gets ``void``."""

# A Docker image reference: [registry[:port]/]name[/name...][:tag][@digest], lower-case names.
IMAGE_REF_PATTERN = (
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)
_IMAGE_RE = re.compile(IMAGE_REF_PATTERN)
_NETWORK_MODES = ("none", "host", "bridge")
# The sizes ``docker run --memory`` takes: bytes, or a number with a binary unit k, m or g
# (either case, optionally followed by b), e.g. "512m", "4g", "1.5g", "4GB".
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)b?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
# USER of a Dockerfile: a user name or uid, optionally with ":group" or ":gid".
_USER_RE = re.compile(r"[^:\s]+(?::[^:\s]+)?")
# A Docker volume name, as the engine accepts it.
_VOLUME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """A validated container request, independent of the host it will run on.

    ``command`` and ``entrypoint`` are argument vectors (a string was split as a shell would,
    but no shell runs it). ``entrypoint=None`` keeps the image's ENTRYPOINT, ``()`` resets it;
    ``user`` and ``working_dir`` of None keep the image's USER and WORKDIR.
    """

    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    private_environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    """Secrets: passed to the engine in ``Env`` and nowhere else (not templated, never shown)."""
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
    command: Sequence[Any] | str | None = None,
    entrypoint: Sequence[Any] | str | None = None,
    environment: Mapping[str, Any] | None = None,
    private_environment: Mapping[str, Any] | None = None,
    mounts: Sequence[str] = (),
    cpus: float | str | None = None,
    mem_limit: int | str | None = None,
    shm_size: int | str | None = None,
    network_mode: str = "none",
    user: str | int | None = None,
    working_dir: str | None = None,
    result_path: str = DEFAULT_RESULT_PATH,
) -> ContainerSpec:
    """Check every argument and return the spec; raise :class:`SpecError` naming the first bad one."""
    if not isinstance(image, str) or not _IMAGE_RE.match(image):
        raise SpecError(
            f"image={image!r} is not a Docker image reference; expected e.g. "
            "'gpu-docker-trainer:0.1' or 'registry.example.com/team/trainer:1.2'."
        )
    entry = _argv("entrypoint", entrypoint)
    if entry and not entry[0]:
        raise SpecError(
            f"entrypoint={entrypoint!r} names no program (its first item is empty); use [] or '' "
            "to reset the image's ENTRYPOINT, or None to keep it."
        )
    env = _environment("environment", environment)
    private = _environment("private_environment", private_environment)
    both = sorted(set(env) & set(private))
    if both:
        raise SpecError(
            f"{', '.join(both)} given in both environment and private_environment; keep each variable in one of "
            "them (private_environment for secrets)."
        )
    for m in mounts:
        parse_mount(m)
    cpu_value = None
    if cpus is not None:
        try:
            cpu_value = -1.0 if isinstance(cpus, bool) else float(cpus)  # True is no number of CPUs
        except (TypeError, ValueError):
            cpu_value = -1.0
        if not (cpu_value > 0 and math.isfinite(cpu_value)):
            raise SpecError(f"cpus={cpus!r} must be a positive number of CPUs, e.g. 2 or 0.5.")
    if not isinstance(network_mode, str) or (network_mode not in _NETWORK_MODES
                                             and not network_mode.startswith("container:")):
        raise SpecError(
            f"network_mode={network_mode!r}; use one of {', '.join(_NETWORK_MODES)} "
            "(training containers default to 'none')."
        )
    if not isinstance(result_path, str) or not result_path.startswith("/"):
        raise SpecError(f"result_path={result_path!r} must be an absolute path in the container.")
    return ContainerSpec(
        image=image,
        command=_argv("command", command),
        entrypoint=entry,
        environment=MappingProxyType(env),
        private_environment=MappingProxyType(private),
        mounts=tuple(mounts),
        cpus=cpu_value,
        mem_limit=_bytes("mem_limit", mem_limit),
        shm_size=_bytes("shm_size", shm_size),
        network_mode=network_mode,
        user=_user(user),
        working_dir=_working_dir(working_dir),
        result_path=result_path,
    )


def _argv(name: str, value: Sequence[Any] | str | None) -> tuple[str, ...] | None:
    """An argument vector: a string is split as a shell would (quotes group words), so
    ``"python train.py --name 'run 1'"`` is four arguments; a list is taken item by item."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise SpecError(
                f"{name}={value!r} cannot be split into arguments ({exc}); close the quote or "
                "pass a list of arguments instead."
            ) from exc
    if not isinstance(value, Sequence):
        raise SpecError(f"{name}={value!r} must be a list of arguments or a string.")
    return tuple(str(v) for v in value)


def _environment(name: str, value: Mapping[str, Any] | None) -> dict[str, str]:
    """Variables as the engine takes them (values turned into strings); names that are empty,
    hold ``=`` or are the provider's GPU variables are refused."""
    env = {str(k): str(v) for k, v in (value or {}).items()}
    for key in env:
        if not key or "=" in key:
            raise SpecError(f"{name} variable name {key!r} is empty or contains '='.")
        if key in GPU_ENV:
            raise SpecError(
                f"{name} sets {key}, which the provider sets from the placement: a container gets the GPUs (and "
                "the share of one) it reserved, no more. Remove it; ask for GPUs with gpus and gpu_milli."
            )
    return env


def _bytes(name: str, value: int | float | str | None) -> int | None:
    if value is None:
        return None
    parsed = -1
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if match:
            parsed = int(float(match[1]) * _SIZE_UNITS[match[2].lower()])
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        parsed = int(value)
    if parsed <= 0:
        raise SpecError(f"{name}={value!r} must be a positive size such as '4g', '512m' or 1073741824.")
    return parsed


def _user(value: str | int | None) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and _USER_RE.fullmatch(value):
        return value
    raise SpecError(
        f"user={value!r} must be a user name or uid, optionally with a group name or gid, e.g. "
        "'1000', '1000:1000' or 'trainer'; None keeps the image's USER."
    )


def _working_dir(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise SpecError(
            f"working_dir={value!r} must be an absolute path in the container, e.g. '/workspace' "
            "(the engine creates it if the image lacks it); None keeps the image's WORKDIR."
        )
    return value


def parse_mount(text: str) -> dict[str, Any]:
    """``SRC:DST[:ro|rw]`` as an Engine API mount: SRC an absolute host path (bind) or a volume
    name. Which host paths a task may bind is the host's administrator's call
    (:mod:`provider.operators.host_access`)."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise SpecError(
            f"mounts entry {text!r} must read 'SOURCE:/container/path[:ro]' with SOURCE an absolute host "
            "path or a volume name."
        )
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise SpecError(f"mounts entry {text!r}: mode must be 'ro' or 'rw', got {mode!r}.")
    kind = "bind" if parts[0].startswith("/") else "volume"
    if kind == "volume" and not _VOLUME_RE.fullmatch(parts[0]):
        raise SpecError(
            f"mounts entry {text!r}: {parts[0]!r} is neither an absolute host path nor a volume name (letters, "
            "digits, '_', '.', '-'); write host paths in full, e.g. '/data/imagenet:/data:ro'."
        )
    return {"Type": kind, "Source": parts[0], "Target": parts[1], "ReadOnly": mode == "ro"}


def create_body(
    spec: ContainerSpec,
    *,
    gpu_ids: Sequence[int] = (),
    gpu_milli: int = MILLI_PER_GPU,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /containers/create`` (Engine API 1.41) for ``spec``.

    GPUs are requested by explicit device id, never as a count, so the container gets exactly
    the GPUs placement chose. An anonymous volume at the result directory (a mount with no
    ``Source``) lets the operator read the result file back after exit on any host, with no
    shared filesystem; a mount of the user's at that directory replaces it. Fields left out
    keep the image's settings (ENTRYPOINT, CMD, USER, WORKDIR).

    A share of a GPU (``gpu_milli`` < 1000) is passed on as
    ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``, which caps the container's compute share where the
    host runs the CUDA MPS daemon and is ignored elsewhere; it also tells anyone inspecting
    the container which share it was given. ``NVIDIA_VISIBLE_DEVICES`` names the same GPUs as
    the device request, or ``void`` without GPUs: an engine whose default runtime is ``nvidia``
    would otherwise give every GPU to a CUDA image (whose own ENV says ``all``).
    ``private_environment`` joins ``Env`` here and only here.
    """
    mounts = [parse_mount(m) for m in spec.mounts]
    result_dir = _dirname(spec.result_path)
    if not any(m["Target"] == result_dir for m in mounts):
        mounts.append({"Type": "volume", "Target": result_dir, "ReadOnly": False})
    host_config: dict[str, Any] = {"NetworkMode": spec.network_mode, "Mounts": mounts}
    if spec.cpus:
        host_config["NanoCpus"] = round(spec.cpus * 1e9)
    if spec.mem_limit:
        host_config["Memory"] = spec.mem_limit
    if spec.shm_size:
        host_config["ShmSize"] = spec.shm_size
    if gpu_ids:
        host_config["DeviceRequests"] = [
            {"Driver": "nvidia", "DeviceIDs": [str(i) for i in gpu_ids], "Capabilities": [["gpu"]]}
        ]
    env = {**spec.environment, **spec.private_environment}
    env.setdefault("RESULT_PATH", spec.result_path)
    env[VISIBLE_DEVICES_ENV] = ",".join(str(i) for i in gpu_ids) or "void"
    if is_share(len(gpu_ids), gpu_milli):
        env[MPS_SHARE_ENV] = str(max(1, math.ceil(gpu_milli / 10)))
    body: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": dict(labels or {}),
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "OpenStdin": False,
        "HostConfig": host_config,
    }
    if spec.command is not None:
        body["Cmd"] = list(spec.command)
    if spec.entrypoint is not None:
        body["Entrypoint"] = list(spec.entrypoint)
    if spec.user:
        body["User"] = spec.user
    if spec.working_dir:
        body["WorkingDir"] = spec.working_dir
    return body


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def gpu_count(value: Any) -> int:
    """``gpus`` as rendered (a template may render ``"2"``): a whole number >= 0, or a :class:`SpecError`."""
    try:
        gpus = int(value)
    except (TypeError, ValueError):
        gpus = -1
    if gpus < 0 or str(value).strip() != str(gpus):
        raise SpecError(f"gpus={value!r} must be a whole number >= 0.")
    return gpus
