"""Which Airflow task holds which GPU of this host, read from the host's Docker engine.

A platform team asks "which DAG is this busy (or idle) GPU working for?". The operator labels
every task container with its task instance (:mod:`provider.task_instance`) and requests its
GPUs by device id (``HostConfig.DeviceRequests``); the agent started with ``--engine`` reads
those back on every sample, so the GPU series of ``/metrics`` name the task that holds the GPU
(docs/metrics.md).

Only containers that run (or are paused) hold a GPU: a container that exited is left out at the
next sample even while it waits to be removed, so a finished task's labels leave the series
within one sample. The engine's container list carries the labels but not the device requests,
so each task container is inspected once, when first seen, and its requests kept while it
exists (they cannot change). An engine that does not answer costs attribution, never the sample:
:meth:`EngineTasks.read` returns None and says why in :attr:`EngineTasks.reason`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provider.clients.engine_sync import Engine
from provider.clients.hosts import HostConfig
from provider.errors import EngineError
from provider.labels import OWNER_LABEL, WAIT_LABEL, WAIT_LEASE_LABEL, WAIT_POOL_LABEL, WAIT_QUEUE_LABEL
from provider.task_instance import (
    DAG_ID_LABEL,
    GPU_QUEUE_LABEL,
    MANAGED_LABEL,
    MAP_INDEX_LABEL,
    RUN_ID_LABEL,
    TASK_ID_LABEL,
)

log = logging.getLogger(__name__)

ENGINE_READ_TIMEOUT_S = 2.0
"""Bound on one read of the engine, so a hung engine delays a sample by this much at most."""
HOLDING_STATES = ("running", "paused")
"""Container states in which a container still has its GPUs."""
ALL_GPUS = "all"


@dataclass(frozen=True, slots=True)
class GpuTask:
    """A task container that holds GPUs: its task instance (label values as the operator wrote
    them; ``queue`` empty on a pool without queues) and the device ids it requested, as indexes
    or UUIDs, or ``("all",)``."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: str
    queue: str
    devices: tuple[str, ...]

    def holds(self, index: int, uuid: str | None) -> bool:
        """Whether this task's container was given the GPU with ``index`` (and ``uuid``)."""
        return ALL_GPUS in self.devices or str(index) in self.devices or (uuid is not None and uuid in self.devices)


def requested_devices(device_requests: Sequence[Mapping[str, Any]] | None) -> tuple[str, ...]:
    """The GPUs a container's ``HostConfig.DeviceRequests`` ask for: their ids, ``("all",)`` for
    a count of -1, and ``0..N-1`` for a count of N without ids, which is what Docker's NVIDIA
    device driver hands out."""
    devices: list[str] = []
    for request in device_requests or ():
        if request.get("Driver") not in ("nvidia", "", None) or not _asks_gpu(request):
            continue
        ids = [str(i) for i in request.get("DeviceIDs") or ()]
        count = int(request.get("Count") or 0)
        devices += ids or ([ALL_GPUS] if count < 0 else [str(i) for i in range(count)])
    return tuple(devices)


def _asks_gpu(request: Mapping[str, Any]) -> bool:
    capabilities = request.get("Capabilities") or [["gpu"]]
    return request.get("Driver") == "nvidia" or any("gpu" in group for group in capabilities)


def task_of(labels: Mapping[str, str], devices: tuple[str, ...]) -> GpuTask | None:
    """The task a container's labels name, holding ``devices``; None for a container that is no
    task container of the provider or holds no GPU."""
    try:
        names = (labels[DAG_ID_LABEL], labels[TASK_ID_LABEL], labels[RUN_ID_LABEL], labels[MAP_INDEX_LABEL])
    except KeyError:
        return None
    if not devices:
        return None
    return GpuTask(*names, queue=labels.get(GPU_QUEUE_LABEL, ""), devices=devices)


@dataclass(frozen=True, slots=True)
class QueueWaiting:
    """How many tasks wait in line for ``queue`` of ``pool`` with their place kept on this host."""

    pool: str
    queue: str
    tasks: int


def waiting_in_line(listed: Sequence[Mapping[str, Any]], now: float) -> tuple[QueueWaiting, ...]:
    """The places in line among an engine's containers (``docs/queues.md``), counted by pool and
    queue: each waiting task once, and only while its place's lease runs (a place whose task is
    gone lapses, and stops counting, before anyone removes it). The lease runs from the engine's
    ``Created``; ``now`` is this host's clock, which the engine's is."""
    owners: dict[tuple[str, str], set[str]] = {}
    for container in listed:
        labels = container.get("Labels") or {}
        if labels.get(WAIT_LABEL) != "true":
            continue
        try:
            expires = float(container["Created"]) + float(labels[WAIT_LEASE_LABEL])
            key, owner = (str(labels[WAIT_POOL_LABEL]), str(labels[WAIT_QUEUE_LABEL])), str(labels[OWNER_LABEL])
        except (KeyError, ValueError, TypeError):
            continue  # not a place the provider made
        if math.isfinite(expires) and expires > now:
            owners.setdefault(key, set()).add(owner)
    return tuple(QueueWaiting(pool, queue, len(found)) for (pool, queue), found in sorted(owners.items()))


@dataclass(frozen=True, slots=True)
class EngineRead:
    """One read of the engine: the task containers that hold GPUs, and the tasks whose place in
    line this host keeps."""

    gpu_tasks: tuple[GpuTask, ...]
    waiting: tuple[QueueWaiting, ...]


class EngineTasks:
    """Reads the task containers of one engine (``unix://``, or ``tcp://`` on loopback without
    TLS: the agent's own host, as ``--engine`` admits). ``reason`` is None while the engine
    answers, else why it did not."""

    def __init__(self, url: str, timeout: float = ENGINE_READ_TIMEOUT_S) -> None:
        self.url = url
        self._engine = Engine(HostConfig(name="--engine", docker_url=url, insecure=True), timeout)
        self._devices: dict[str, tuple[str, ...]] = {}
        self.reason: str | None = None

    def read(self, now: float) -> EngineRead | None:
        """The task containers that hold GPUs now and the places in line whose lease runs at
        ``now`` (Unix time); None when the engine could not be read."""
        try:
            tasks = self._read(now)
        except EngineError as exc:
            if self.reason is None:
                log.error("Cannot read the task containers from the Docker engine at %s (%s); GPU series are "
                          "served without task labels until it answers. Start dockerd or fix --engine.",
                          self.url, exc)
            self.reason = f"the Docker engine at {self.url} could not be read ({exc})"
            return None
        if self.reason is not None:
            log.info("The Docker engine at %s answers again; GPU series carry task labels again", self.url)
            self.reason = None
        return tasks

    def _read(self, now: float) -> EngineRead:
        listed = self._engine.containers([f"{MANAGED_LABEL}=true", DAG_ID_LABEL])  # places in line too
        holding = [c for c in listed if c.get("State") in HOLDING_STATES]
        self._devices = {cid: self._devices[cid] for cid in (str(c["Id"]) for c in holding) if cid in self._devices}
        found = []
        for container in holding:
            cid = str(container["Id"])
            if cid not in self._devices:
                described = self._engine.inspect(cid)
                if described is None:
                    continue  # removed since it was listed
                self._devices[cid] = requested_devices((described.get("HostConfig") or {}).get("DeviceRequests"))
            task = task_of(container.get("Labels") or {}, self._devices[cid])
            if task is not None:
                found.append(task)
        return EngineRead(tuple(sorted(found, key=lambda t: (t.dag_id, t.task_id, t.run_id, t.map_index))),
                          waiting_in_line(listed, now))
