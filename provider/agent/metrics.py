"""Prometheus exposition of the cached sample.

A custom collector turns the sampler's latest :class:`NodeSample` into metric families on each
scrape, so Prometheus and ``GET /v1/node`` always agree and a scrape measures nothing itself.
Names follow Prometheus conventions (base units, ``_ratio`` for 0-1 shares); GPU series carry
``gpu`` (index) and ``uuid`` labels, and ``gpu_info`` adds the model. A field the GPU cannot
report is left out rather than exported as a fake zero.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from provider.agent.gpu import MIB, GpuSample
from provider.agent.sampler import Sampler


class SampleCollector(Collector):
    """Exports the sampler's cached sample; nothing before the first sample."""

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler

    def collect(self) -> Iterator[Metric]:
        latest = self._sampler.latest()
        if latest is None:
            return
        node = latest[0]
        info = GaugeMetricFamily(
            "agent_info", "Node agent identity and GPU backend.", labels=["host", "gpu_backend"]
        )
        info.add_metric([node.host, node.gpu_backend], 1)
        yield info
        yield GaugeMetricFamily(
            "agent_sample_timestamp_seconds",
            "Unix time of the sample being served.",
            value=node.sampled_at.timestamp(),
        )
        yield GaugeMetricFamily("node_cpu_count", "CPUs this agent reports on (--cpus).", value=len(node.cpus))
        yield GaugeMetricFamily("node_cpu_capacity_cores", "CPU capacity placement counts: the --cgroup quota, "
                                "else the reported CPUs.", value=node.cpu_capacity_milli / 1000)
        yield GaugeMetricFamily(
            "node_cpu_utilization_ratio",
            "Busy share of the reported CPUs, or of the --cgroup quota, since the previous sample.",
            value=node.cpu_utilization_pct / 100.0,
        )
        per_cpu = GaugeMetricFamily(
            "node_cpu_core_utilization_ratio", "Busy share of one CPU since the previous sample.", labels=["cpu"]
        )
        for cpu, pct in zip(node.cpus, node.cpu_pct):
            per_cpu.add_metric([str(cpu)], pct / 100.0)
        yield per_cpu
        for minutes, value in zip((1, 5, 15), node.load_avg):
            yield GaugeMetricFamily(f"node_load{minutes}", f"{minutes}-minute load average.", value=value)
        yield GaugeMetricFamily("node_memory_total_bytes", "Physical memory.", value=node.memory_total_bytes)
        yield GaugeMetricFamily(
            "node_memory_available_bytes",
            "Memory available to new processes without swapping.",
            value=node.memory_available_bytes,
        )
        for name, help_text, value in (
            ("node_docker_root_size_bytes", "Size of the filesystem holding the Docker data root.", node.disk_total_bytes),
            ("node_docker_root_free_bytes", "Free space on the filesystem holding the Docker data root.", node.disk_free_bytes),
        ):
            disk = GaugeMetricFamily(name, help_text, labels=["path"])
            disk.add_metric([node.disk_path], value)
            yield disk
        yield GaugeMetricFamily("node_gpu_count", "GPUs the backend reports.", value=len(node.gpus))
        yield from _gpu_families(node.gpus)


def _gpu_families(gpus: tuple[GpuSample, ...]) -> Iterator[Metric]:
    labels = ["gpu", "uuid"]
    info = GaugeMetricFamily("gpu_info", "GPU identity.", labels=[*labels, "model"])
    families = {
        "memory_total": GaugeMetricFamily("gpu_memory_total_bytes", "GPU memory.", labels=labels),
        "memory_used": GaugeMetricFamily(
            "gpu_memory_used_bytes",
            "GPU memory in use, as nvidia-smi shows it; includes the driver's reserved memory "
            "only where gpu_memory_reserved_bytes is absent (drivers without NVML memory v2).",
            labels=labels,
        ),
        "memory_reserved": GaugeMetricFamily(
            "gpu_memory_reserved_bytes", "GPU memory the driver reserves for itself.", labels=labels
        ),
        "util": GaugeMetricFamily("gpu_utilization_ratio", "Share of time a kernel ran.", labels=labels),
        "temp": GaugeMetricFamily("gpu_temperature_celsius", "GPU core temperature.", labels=labels),
        "power": GaugeMetricFamily("gpu_power_watts", "GPU power draw.", labels=labels),
        "procs": GaugeMetricFamily("gpu_processes", "Compute processes on the GPU.", labels=labels),
    }
    for g in gpus:
        key = [str(g.index), g.uuid or ""]
        info.add_metric([*key, g.name or ""], 1)
        for name, value in (
            ("memory_total", None if g.memory_total_mib is None else g.memory_total_mib * MIB),
            ("memory_used", None if g.memory_used_mib is None else g.memory_used_mib * MIB),
            ("memory_reserved", None if g.memory_reserved_mib is None else g.memory_reserved_mib * MIB),
            ("util", None if g.utilization_pct is None else g.utilization_pct / 100.0),
            ("temp", g.temperature_c),
            ("power", g.power_w),
            ("procs", len(g.processes)),
        ):
            if value is not None:
                families[name].add_metric(key, value)
    yield info
    yield from families.values()


def make_registry(sampler: Sampler) -> CollectorRegistry:
    """A registry holding only this agent's collector (no process or platform defaults)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SampleCollector(sampler))
    return registry
