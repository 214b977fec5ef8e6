"""GPU readings behind one small interface, and the NVML reader used on real hosts.

The agent never talks to a GPU library directly: it asks a :class:`GpuBackend` for a list of
:class:`GpuSample`. A backend that cannot read anything returns an empty list and says why in
``reason``, because a host without a driver is a normal member of a mixed pool (CPU-only
work still runs there) and must keep reporting CPU, memory and disk.

:class:`NvmlBackend` guards every NVML call on its own: a field the device does not support
(``NVMLError_NotSupported``, common for power and temperature on some boards and in MIG mode)
becomes ``None`` for that field only, instead of losing the whole GPU or the whole sample.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

MIB = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process holding GPU memory; ``used_memory_mib`` is None where the driver hides it."""

    pid: int
    used_memory_mib: int | None


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one instant. Any measured field is None when the device cannot report it."""

    index: int
    uuid: str | None = None
    name: str | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    processes: tuple[GpuProcess, ...] = ()


class GpuBackend(Protocol):
    """What the sampler needs from a GPU source.

    ``read()`` never raises for a missing or broken GPU stack; it returns what it could read
    and leaves ``reason`` set to a sentence that explains an empty or partial list (None when
    every GPU was read).
    """

    name: str
    reason: str | None

    def read(self) -> list[GpuSample]: ...


class NvmlBackend:
    """Reads NVIDIA GPUs through NVML (``pynvml`` from ``nvidia-ml-py``).

    ``nvml`` is the library module; tests pass a stand-in because no GPU exists on the
    machines that run them. Initialisation is retried on every read until it succeeds, so an
    agent started before the driver finished loading recovers without a restart.
    """

    name = "nvml"

    def __init__(self, nvml: ModuleType | Any | None = None) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml: Any = nvml
        self._initialised = False
        self.reason: str | None = None

    def read(self) -> list[GpuSample]:
        nvml = self._nvml
        if not self._initialised:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError_LibraryNotFound as exc:
                self.reason = (
                    f"NVML library not found ({exc}): no NVIDIA driver on this host, so no GPU "
                    "is reported. Install the NVIDIA driver to report GPUs."
                )
                return []
            except nvml.NVMLError as exc:
                self.reason = f"NVML could not initialise ({exc}); check the NVIDIA driver."
                return []
            self._initialised = True
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            self.reason = f"NVML could not count devices ({exc}); check the NVIDIA driver."
            return []
        self.reason = None if count else "NVML is loaded but reports no GPU on this host."
        return [self._read_device(i) for i in range(count)]

    def _read_device(self, index: int) -> GpuSample:
        nvml = self._nvml
        handle = self._field(index, "handle", nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            return GpuSample(index=index)
        memory = self._field(index, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
        rates = self._field(index, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
        temperature = self._field(
            index, "temperature", nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
        )
        power_mw = self._field(index, "power", nvml.nvmlDeviceGetPowerUsage, handle)
        procs = self._field(index, "processes", nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        return GpuSample(
            index=index,
            uuid=_text(self._field(index, "uuid", nvml.nvmlDeviceGetUUID, handle)),
            name=_text(self._field(index, "name", nvml.nvmlDeviceGetName, handle)),
            memory_total_mib=None if memory is None else int(memory.total) // MIB,
            memory_used_mib=None if memory is None else int(memory.used) // MIB,
            utilization_pct=None if rates is None else float(rates.gpu),
            temperature_c=None if temperature is None else float(temperature),
            power_w=None if power_mw is None else float(power_mw) / 1000.0,
            processes=tuple(
                GpuProcess(
                    pid=int(p.pid),
                    used_memory_mib=None if p.usedGpuMemory is None else int(p.usedGpuMemory) // MIB,
                )
                for p in procs or ()
            ),
        )

    def _field(self, index: int, what: str, call: Callable[..., T], *args: Any) -> T | None:
        """One NVML call; an error costs only this field (logged unless merely unsupported)."""
        nvml = self._nvml
        try:
            return call(*args)
        except nvml.NVMLError_NotSupported:
            return None
        except nvml.NVMLError as exc:
            log.debug("NVML: GPU %s: reading %s failed: %s", index, what, exc)
            return None


def _text(value: str | bytes | None) -> str | None:
    """NVML returns bytes in old bindings and str in new ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
