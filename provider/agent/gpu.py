"""GPU readings behind one small interface, and the NVML reader used on real hosts.

The agent never talks to a GPU library directly: it asks a :class:`GpuBackend` for a list of
:class:`GpuSample`. A backend that cannot read anything returns an empty list and says why in
``reason``, because a host without a driver is a normal member of a mixed pool (CPU-only
work still runs there) and must keep reporting CPU, memory and disk.

:class:`NvmlBackend` guards every NVML call on its own: a field the device does not support
(``NVMLError_NotSupported``, common for power and temperature on some boards and in MIG mode)
becomes ``None`` for that field only, instead of losing the whole GPU or the whole sample.

Memory is read as ``nvidia-smi`` shows it: NVML's v2 memory structure separates the memory the
driver reserves for itself (``reserved``) from ``used``, while the v1 structure counts it as
used (615 MiB on an idle H200). A driver or binding without v2 falls back to v1 for good, per
device, where ``used`` then includes the reserved memory and ``memory_reserved_mib`` is None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple, Protocol, TypeVar

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
    memory_reserved_mib: int | None = None
    memory_free_mib: int | None = None
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


class _Memory(NamedTuple):
    """One device's memory in MiB; ``reserved_mib`` is None from the v1 structure."""

    total_mib: int
    used_mib: int
    free_mib: int
    reserved_mib: int | None


class NvmlBackend:
    """Reads NVIDIA GPUs through NVML (``pynvml`` from ``nvidia-ml-py``).

    ``nvml`` is the library module; tests pass a stand-in because no GPU exists on the
    machines that run them. Initialisation is retried on every read until it succeeds, so an
    agent started before the driver finished loading recovers without a restart. A device
    whose driver answers the v2 memory call with "function not found" or "not supported" is
    read with v1 from then on, so a v1-only host pays one failed call per device, not one per
    sample.
    """

    name = "nvml"

    def __init__(self, nvml: ModuleType | Any | None = None) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml: Any = nvml
        self._initialised = False
        self.reason: str | None = None
        self._memory_v2: int | None = getattr(nvml, "nvmlMemory_v2", None)
        self._memory_v1_only: set[int] = set()
        if self._memory_v2 is None:
            log.warning(
                "NVML: this nvidia-ml-py has no nvmlMemory_v2, so GPU memory used includes the "
                "driver's reserved memory and memory_reserved_mib is null; upgrade nvidia-ml-py "
                "to report memory as nvidia-smi does."
            )

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
        memory = self._read_memory(index, handle)
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
            memory_total_mib=None if memory is None else memory.total_mib,
            memory_used_mib=None if memory is None else memory.used_mib,
            memory_reserved_mib=None if memory is None else memory.reserved_mib,
            memory_free_mib=None if memory is None else memory.free_mib,
            utilization_pct=None if rates is None else float(rates.gpu),
            temperature_c=None if temperature is None else float(temperature),
            power_w=None if power_mw is None else float(power_mw) / 1000.0,
            processes=tuple(
                GpuProcess(
                    pid=int(p.pid),
                    used_memory_mib=None if p.usedGpuMemory is None else _mib(p.usedGpuMemory),
                )
                for p in procs or ()
            ),
        )

    def _read_memory(self, index: int, handle: Any) -> _Memory | None:
        """v2 memory where the device offers it, else v1 (see the module docstring).

        Only "this driver has no v2" errors switch a device to v1; any other error costs this
        sample's memory fields, and v2 is tried again next time.
        """
        nvml = self._nvml
        if self._memory_v2 is not None and index not in self._memory_v1_only:
            try:
                m = nvml.nvmlDeviceGetMemoryInfo(handle, version=self._memory_v2)
            except (nvml.NVMLError_FunctionNotFound, nvml.NVMLError_NotSupported) as exc:
                self._memory_v1_only.add(index)
                log.warning(
                    "NVML: GPU %s offers no v2 memory information (%s), so its memory used "
                    "includes the driver's reserved memory and memory_reserved_mib is null; "
                    "update the NVIDIA driver to report memory as nvidia-smi does.",
                    index,
                    exc,
                )
            except nvml.NVMLError as exc:
                log.debug("NVML: GPU %s: reading memory failed: %s", index, exc)
                return None
            else:
                return _Memory(_mib(m.total), _mib(m.used), _mib(m.free), _mib(m.reserved))
        m = self._field(index, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
        return None if m is None else _Memory(_mib(m.total), _mib(m.used), _mib(m.free), None)

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


def _mib(value: int) -> int:
    """NVML counts bytes; the document counts whole MiB, rounded down."""
    return int(value) // MIB


def _text(value: str | bytes | None) -> str | None:
    """NVML returns bytes in old bindings and str in new ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
