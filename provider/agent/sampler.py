"""One sample of a node, and the background thread that keeps the latest one.

Requests never measure anything: they serve the sample this thread took at most one interval
ago, already encoded as JSON. That keeps a request's cost independent of NVML (whose calls
take milliseconds per GPU) and makes many concurrent scrapes as cheap as one.

CPU utilisation is the busy share of each selected CPU between two samples (idle and iowait
count as not busy, as in ``top``); the first sample covers the time since boot. With a cgroup
(``--cgroup``, :mod:`provider.agent.cgroup_cpu`) capacity is the group's quota and utilisation
the group's CPU time over that quota between two samples: the host's own, not the machine's.
With ``--engine`` (:mod:`provider.agent.tasks`) the sample also says which task container holds
which GPU, read in the same pass, so a scrape never waits for the engine either.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psutil

from provider.agent.cgroup_cpu import CgroupCpu
from provider.agent.gpu import GpuBackend, GpuSample
from provider.agent.tasks import EngineTasks, GpuTask, QueueWaiting

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_DOCKER_ROOT = "/var/lib/docker"


@dataclass(frozen=True, slots=True)
class NodeSample:
    """Everything ``GET /v1/node`` reports, at one instant."""

    host: str
    sampled_at: datetime
    cpus: tuple[int, ...]
    cpu_pct: tuple[float, ...]
    load_avg: tuple[float, float, float]
    memory_total_bytes: int
    memory_available_bytes: int
    disk_path: str
    disk_requested_path: str
    disk_total_bytes: int
    disk_free_bytes: int
    gpu_backend: str
    gpus: tuple[GpuSample, ...]
    gpu_reason: str | None
    cgroup: str | None = None
    cgroup_capacity_milli: int | None = None
    cgroup_utilization_pct: float | None = None
    gpu_tasks: tuple[GpuTask, ...] = ()
    waiting: tuple[QueueWaiting, ...] = ()
    engine: str | None = None
    engine_reason: str | None = None

    @property
    def cpu_utilization_pct(self) -> float:
        """The group's busy share of its capacity under ``--cgroup``, else the mean busy share of
        the selected CPUs."""
        if self.cgroup_utilization_pct is not None:
            return self.cgroup_utilization_pct
        return sum(self.cpu_pct) / len(self.cpu_pct) if self.cpu_pct else 0.0

    @property
    def cpu_capacity_milli(self) -> int:
        """Milli-CPUs the host's containers may use: the group's quota, else 1000 per CPU."""
        if self.cgroup_capacity_milli is not None:
            return self.cgroup_capacity_milli
        return 1000 * len(self.cpus)

    def to_json(self) -> dict[str, Any]:
        """The documented ``/v1/node`` document (docs/agent.md)."""
        return {
            "schema": SCHEMA_VERSION,
            "host": self.host,
            "sampled_at": self.sampled_at.isoformat().replace("+00:00", "Z"),
            "cpu": {
                "count": len(self.cpus),
                "capacity_milli": self.cpu_capacity_milli,
                "cgroup": self.cgroup,
                "utilization_pct": round(self.cpu_utilization_pct, 2),
                "per_cpu": [
                    {"cpu": c, "utilization_pct": round(p, 2)} for c, p in zip(self.cpus, self.cpu_pct)
                ],
                "load_avg": {"1m": self.load_avg[0], "5m": self.load_avg[1], "15m": self.load_avg[2]},
            },
            "memory": {
                "total_bytes": self.memory_total_bytes,
                "available_bytes": self.memory_available_bytes,
            },
            "disk": {
                "path": self.disk_path,
                "requested_path": self.disk_requested_path,
                "total_bytes": self.disk_total_bytes,
                "free_bytes": self.disk_free_bytes,
            },
            "gpu_backend": self.gpu_backend,
            "gpu_reason": self.gpu_reason,
            "gpus": [
                {
                    "index": g.index,
                    "uuid": g.uuid,
                    "name": g.name,
                    "memory_total_mib": g.memory_total_mib,
                    "memory_used_mib": g.memory_used_mib,
                    "memory_reserved_mib": g.memory_reserved_mib,
                    "memory_free_mib": g.memory_free_mib,
                    "utilization_pct": g.utilization_pct,
                    "temperature_c": g.temperature_c,
                    "power_w": g.power_w,
                    "processes": [
                        {"pid": p.pid, "used_memory_mib": p.used_memory_mib} for p in g.processes
                    ],
                }
                for g in self.gpus
            ],
        }


def busy_pct(
    before: Sequence[float],
    after: Sequence[float],
    total_fields: Sequence[int],
    idle_fields: Sequence[int],
) -> float:
    """Busy share (0-100) of one CPU between two ``cpu_times`` tuples.

    ``total_fields`` are the positions that add up to elapsed time (Linux counts guest time
    inside user time too, so guest fields are left out); ``idle_fields`` those of idle and
    iowait.
    """
    total = sum(after[i] - before[i] for i in total_fields)
    if total <= 0:
        return 0.0
    idle = sum(after[i] - before[i] for i in idle_fields)
    return max(0.0, min(100.0, 100.0 * (total - idle) / total))


def docker_disk_path(requested: str) -> str:
    """The Docker data root when it exists, else ``/`` (a host without Docker data yet)."""
    return requested if os.path.isdir(requested) else "/"


class Sampler:
    """Takes a :class:`NodeSample` every ``interval_s`` on a daemon thread and caches it."""

    def __init__(
        self,
        host: str,
        backend: GpuBackend,
        cpus: Sequence[int] | None = None,
        docker_root: str = DEFAULT_DOCKER_ROOT,
        interval_s: float = 1.0,
        cgroup: CgroupCpu | None = None,
        tasks: EngineTasks | None = None,
    ) -> None:
        available = psutil.cpu_count() or 1
        self._cpus = tuple(cpus) if cpus else tuple(range(available))
        bad = [c for c in self._cpus if not 0 <= c < available]
        if bad:
            raise ValueError(f"--cpus {bad} do not exist: this host has CPUs 0..{available - 1}.")
        self._host = host
        self._backend = backend
        self._docker_root = docker_root
        self._interval_s = interval_s
        fields = psutil.cpu_times()._fields
        self._total_fields = tuple(i for i, f in enumerate(fields) if not f.startswith("guest"))
        self._idle_fields = tuple(fields.index(f) for f in ("idle", "iowait") if f in fields)
        self._last_times: list[tuple[float, ...]] | None = None
        self._cgroup = cgroup
        self._tasks = tasks
        self._last_usage = (cgroup.usage_s(), time.monotonic()) if cgroup else (0.0, 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: tuple[NodeSample, bytes, float] | None = None

    def sample(self) -> NodeSample:
        """Measure the node now (also used once before the thread starts); the sample's time is
        when measuring began, so nothing that changed before it is missing from it."""
        sampled_at = datetime.now(timezone.utc)
        times = [tuple(t) for t in psutil.cpu_times(percpu=True)]
        before = self._last_times or [(0.0,) * len(t) for t in times]
        self._last_times = times
        cpu_pct = tuple(busy_pct(before[c], times[c], self._total_fields, self._idle_fields) for c in self._cpus)
        memory = psutil.virtual_memory()
        disk_path = docker_disk_path(self._docker_root)
        disk = psutil.disk_usage(disk_path)
        load = os.getloadavg()
        gpus = tuple(self._backend.read())
        optional: dict[str, Any] = {}
        if self._cgroup is not None:
            optional.update(self._group_reading(self._cgroup))
        if self._tasks is not None:
            read = self._tasks.read(sampled_at.timestamp())
            optional.update(gpu_tasks=read.gpu_tasks if read else (), waiting=read.waiting if read else (),
                            engine=self._tasks.url, engine_reason=self._tasks.reason)
        return NodeSample(
            host=self._host,
            sampled_at=sampled_at,
            cpus=self._cpus,
            cpu_pct=cpu_pct,
            load_avg=(load[0], load[1], load[2]),
            memory_total_bytes=memory.total,
            memory_available_bytes=memory.available,
            disk_path=disk_path,
            disk_requested_path=self._docker_root,
            disk_total_bytes=disk.total,
            disk_free_bytes=disk.free,
            gpu_backend=self._backend.name,
            gpus=gpus,
            gpu_reason=self._backend.reason,
            **optional,
        )

    def _group_reading(self, cgroup: CgroupCpu) -> dict[str, Any]:
        """The group's capacity (its quota, or the selected CPUs without one) and its CPU time
        since the previous sample over that capacity."""
        usage, now = cgroup.usage_s(), time.monotonic()
        (last_usage, last_now), self._last_usage = self._last_usage, (usage, now)
        cores = cgroup.quota_cores() or float(len(self._cpus))
        elapsed = now - last_now
        pct = 100.0 * (usage - last_usage) / (elapsed * cores) if elapsed > 0 else 0.0
        return {"cgroup": cgroup.name, "cgroup_capacity_milli": round(cores * 1000),
                "cgroup_utilization_pct": max(0.0, min(100.0, pct))}

    def refresh(self) -> None:
        """Replace the cached sample; a failure keeps the previous one and is logged."""
        try:
            node = self.sample()
        except Exception:  # noqa: BLE001 - the agent must outlive one bad reading
            log.exception("Sampling %s failed; serving the previous sample", self._host)
            return
        body = json.dumps(node.to_json(), separators=(",", ":")).encode()
        self._latest = (node, body, time.monotonic())

    def latest(self) -> tuple[NodeSample, bytes, float] | None:
        """The cached sample, its JSON encoding and its monotonic time (None before start)."""
        return self._latest

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def start(self) -> None:
        """Take the first sample synchronously, then keep sampling on a daemon thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="agent-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self._interval_s))

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.refresh()
