"""Prometheus exposition of the cached sample.

A custom collector turns the sampler's latest :class:`NodeSample` into metric families on each
scrape, so Prometheus and ``GET /v1/node`` always agree and a scrape measures nothing itself.

Names are chosen to sit beside other exporters on one Prometheus (docs/metrics.md):

* GPU series that mean what a field of NVIDIA's DCGM exporter means carry that field's name, unit
  and labels (``DCGM_FI_DEV_GPU_UTIL`` in percent, memory in MiB, ``gpu``, ``UUID``, ``device``,
  ``modelName``, ``Hostname``), so dashboards and alerts written for DCGM work on these hosts;
* everything else starts with :data:`PREFIX`, so no name is also one of the node exporter's,
  whose ``node_*`` series the same Prometheus often scrapes from the same hosts.

With ``--engine``, each GPU series also names the task that holds the GPU (``dag_id``,
``task_id``, ``run_id``, ``map_index``, ``queue``): one series per task, so a GPU shared by two
tasks appears twice, and a GPU nobody holds once with those labels empty, which PromQL treats as
absent. A field the GPU cannot report is left out rather than exported as a fake zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from provider.agent.gpu import GpuSample
from provider.agent.sampler import NodeSample, Sampler
from provider.agent.tasks import GpuTask

PREFIX = "gpu_docker_"
GPU_LABELS = ("gpu", "UUID", "device", "modelName", "Hostname")
"""The DCGM exporter's labels of a GPU: index, UUID, device file name, model, host."""
TASK_LABELS = ("dag_id", "task_id", "run_id", "map_index", "queue")
NO_TASK = ("",) * len(TASK_LABELS)

DCGM_FIELDS: tuple[tuple[str, str, Callable[[GpuSample], float | None]], ...] = (
    # (name, help, the GPU's value in the field's unit, None where the GPU cannot report it)
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda g: g.utilization_pct),
    ("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).", lambda g: g.memory_total_mib),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB); includes the driver's reserved memory only where "
     "DCGM_FI_DEV_FB_RESERVED is absent (drivers without NVML memory v2).", lambda g: g.memory_used_mib),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", lambda g: g.memory_free_mib),
    ("DCGM_FI_DEV_FB_RESERVED", "Framebuffer memory the driver reserves for itself (in MiB).",
     lambda g: g.memory_reserved_mib),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda g: g.temperature_c),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda g: g.power_w),
    (f"{PREFIX}gpu_processes", "Compute processes on the GPU.", lambda g: len(g.processes)),
)


class SampleCollector(Collector):
    """Exports the sampler's cached sample; nothing before the first sample."""

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler

    def collect(self) -> Iterator[Metric]:
        latest = self._sampler.latest()
        if latest is None:
            return
        node = latest[0]
        yield from _agent_families(node)
        yield from _node_families(node)
        yield from _gpu_families(node)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}{name}", help_text, value=value)


def _agent_families(node: NodeSample) -> Iterator[Metric]:
    info = GaugeMetricFamily(f"{PREFIX}agent_info", "Node agent identity and GPU backend.",
                             labels=["host", "gpu_backend"])
    info.add_metric([node.host, node.gpu_backend], 1)
    yield info
    yield _gauge("agent_sample_timestamp_seconds", "Unix time of the sample being served.",
                 node.sampled_at.timestamp())
    if node.engine is not None:
        yield _gauge("agent_engine_up", "1 when the last sample read the task containers from the Docker engine "
                     "(--engine), 0 when it could not: GPU series then carry no task labels.",
                     1 if node.engine_reason is None else 0)
        waiting = GaugeMetricFamily(
            f"{PREFIX}tasks_waiting", "Tasks waiting in line for room in a queue of a pool, whose place in line "
            "this host keeps (the pool's first host that answers): sum by pool and queue over the agents.",
            labels=["pool", "queue"])
        for line in node.waiting:
            waiting.add_metric([line.pool, line.queue], line.tasks)
        yield waiting


def _node_families(node: NodeSample) -> Iterator[Metric]:
    yield _gauge("node_cpu_count", "CPUs this agent reports on (--cpus).", len(node.cpus))
    yield _gauge("node_cpu_capacity_cores", "CPU capacity placement counts: the --cgroup quota, else the reported "
                 "CPUs.", node.cpu_capacity_milli / 1000)
    yield _gauge("node_cpu_utilization_ratio", "Busy share of the reported CPUs, or of the --cgroup quota, since "
                 "the previous sample.", node.cpu_utilization_pct / 100.0)
    per_cpu = GaugeMetricFamily(f"{PREFIX}node_cpu_core_utilization_ratio",
                                "Busy share of one CPU since the previous sample.", labels=["cpu"])
    for cpu, pct in zip(node.cpus, node.cpu_pct):
        per_cpu.add_metric([str(cpu)], pct / 100.0)
    yield per_cpu
    for minutes, value in zip((1, 5, 15), node.load_avg):
        yield _gauge(f"node_load{minutes}", f"{minutes}-minute load average.", value)
    yield _gauge("node_memory_total_bytes", "Physical memory.", node.memory_total_bytes)
    yield _gauge("node_memory_available_bytes", "Memory available to new processes without swapping.",
                 node.memory_available_bytes)
    for name, help_text, value in (
        ("node_docker_root_size_bytes", "Size of the filesystem holding the Docker data root.", node.disk_total_bytes),
        ("node_docker_root_free_bytes", "Free space on the filesystem holding the Docker data root.",
         node.disk_free_bytes),
    ):
        disk = GaugeMetricFamily(f"{PREFIX}{name}", help_text, labels=["path"])
        disk.add_metric([node.disk_path], value)
        yield disk
    yield _gauge("node_gpu_count", "GPUs the backend reports.", len(node.gpus))


def _gpu_families(node: NodeSample) -> Iterator[Metric]:
    labels = [*GPU_LABELS, *TASK_LABELS]
    families = [(GaugeMetricFamily(name, help_text, labels=labels), read) for name, help_text, read in DCGM_FIELDS]
    for gpu in node.gpus:
        identity = [str(gpu.index), gpu.uuid or "", f"nvidia{gpu.index}", gpu.name or "", node.host]
        holders = [_task_labels(t) for t in node.gpu_tasks if t.holds(gpu.index, gpu.uuid)] or [NO_TASK]
        for family, read in families:
            value = read(gpu)
            if value is not None:
                for task in holders:
                    family.add_metric([*identity, *task], value)
    yield from (family for family, _ in families)


def _task_labels(task: GpuTask) -> tuple[str, ...]:
    return task.dag_id, task.task_id, task.run_id, task.map_index, task.queue


def make_registry(sampler: Sampler) -> CollectorRegistry:
    """A registry holding only this agent's collector (no process or platform defaults)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SampleCollector(sampler))
    return registry
