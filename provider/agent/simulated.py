"""Simulated GPUs, for development and tests only.

The project's development and CI machines have no GPU, so the agent, the pool hook and the
placement benchmarks need GPUs that behave like real ones without a driver. This backend
reads a JSON inventory and replays a timeline of utilisation and memory use, measured from
the agent's start through an injected clock. It is never a fallback: an agent uses it only
when started with ``--gpu-backend simulated:FILE``.

Inventory: a JSON list, one object per GPU::

    [{"model": "A100-80GB", "memory_total_mb": 81920,
      "timeline": [[0, 10, 2000], [30, 90, 60000]]}]

``timeline`` entries are ``[seconds_since_start, utilisation_pct, memory_used_mb]`` in
ascending time: from t=0 s the GPU is 10 % busy with 2000 MiB used, from t=30 s 90 % with
60000 MiB. Optional per-GPU keys: ``uuid`` (default ``GPU-SIM-<prefix>-<index>``),
``temperature_c`` and ``power_w`` (constants; absent means "not reported"), and
``memory_reserved_mb`` (default 0), the memory a real driver keeps for itself: it is reported
apart from ``used``, as NVML's v2 memory does, and memory in use is capped at what is left.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provider.agent.gpu import GpuSample


@dataclass(frozen=True, slots=True)
class SimulatedGpu:
    """One inventory entry, validated."""

    model: str
    memory_total_mb: int
    timeline: tuple[tuple[float, float, int], ...]
    uuid: str | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    memory_reserved_mb: int = 0

    def at(self, elapsed_s: float) -> tuple[float, int]:
        """Utilisation and memory in use at ``elapsed_s``: the last step that has started."""
        util, mem = self.timeline[0][1], self.timeline[0][2]
        for start, step_util, step_mem in self.timeline:
            if start > elapsed_s:
                break
            util, mem = step_util, step_mem
        return util, mem


class SimulatedBackend:
    """Replays an inventory's timelines; ``clock`` is a monotonic clock in seconds."""

    name = "simulated"

    def __init__(
        self, gpus: Sequence[SimulatedGpu], clock: Callable[[], float], uuid_prefix: str = "0"
    ) -> None:
        self._gpus = tuple(gpus)
        self._clock = clock
        self._start = clock()
        self._uuid_prefix = uuid_prefix
        self.reason: str | None = None if self._gpus else "The simulated inventory has no GPU."

    @classmethod
    def from_file(
        cls, path: str | Path, clock: Callable[[], float], uuid_prefix: str = "0"
    ) -> SimulatedBackend:
        """Load an inventory file; errors name the file and the entry to fix."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"Simulated GPU inventory {path}: cannot read JSON ({exc}).") from exc
        return cls(parse_inventory(doc, source=str(path)), clock, uuid_prefix)

    def read(self) -> list[GpuSample]:
        elapsed = self._clock() - self._start
        samples = []
        for index, gpu in enumerate(self._gpus):
            util, mem = gpu.at(elapsed)
            used = min(mem, gpu.memory_total_mb - gpu.memory_reserved_mb)
            samples.append(
                GpuSample(
                    index=index,
                    uuid=gpu.uuid or f"GPU-SIM-{self._uuid_prefix}-{index}",
                    name=gpu.model,
                    memory_total_mib=gpu.memory_total_mb,
                    memory_used_mib=used,
                    memory_reserved_mib=gpu.memory_reserved_mb,
                    memory_free_mib=gpu.memory_total_mb - gpu.memory_reserved_mb - used,
                    utilization_pct=util,
                    temperature_c=gpu.temperature_c,
                    power_w=gpu.power_w,
                )
            )
        return samples


def parse_inventory(doc: Any, source: str = "inventory") -> list[SimulatedGpu]:
    """Validate an inventory document (see the module docstring for its shape)."""
    if not isinstance(doc, list):
        raise ValueError(f"{source}: expected a JSON list of GPUs, got {type(doc).__name__}.")
    gpus = []
    for i, entry in enumerate(doc):
        where = f"{source}: GPU {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {entry!r}.")
        try:
            model = str(entry["model"])
            total = int(entry["memory_total_mb"])
            steps = tuple((float(t), float(u), int(m)) for t, u, m in entry.get("timeline") or [[0, 0, 0]])
            reserved = int(entry.get("memory_reserved_mb", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f'{where}: needs "model", "memory_total_mb" and a "timeline" of '
                f"[seconds, utilisation_pct, memory_used_mb] triples, and a whole number "
                f'"memory_reserved_mb" if any ({exc!r}).'
            ) from exc
        if not 0 <= reserved <= total:
            raise ValueError(
                f'{where}: "memory_reserved_mb" must be between 0 and "memory_total_mb" ({total}), got {reserved}.'
            )
        if any(b[0] <= a[0] for a, b in zip(steps, steps[1:])):
            raise ValueError(f"{where}: timeline times must increase, got {[s[0] for s in steps]}.")
        gpus.append(
            SimulatedGpu(
                model=model,
                memory_total_mb=total,
                timeline=steps,
                uuid=entry.get("uuid"),
                temperature_c=entry.get("temperature_c"),
                power_w=entry.get("power_w"),
                memory_reserved_mb=reserved,
            )
        )
    return gpus
