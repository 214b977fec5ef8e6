"""GPU backends: NVML on this machine for real, NVML field mapping through a stand-in library,
and the simulated backend's timeline replay and inventory checks."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from provider.agent.gpu import MIB, GpuProcess, GpuSample, NvmlBackend
from provider.agent.simulated import SimulatedBackend, parse_inventory


def test_nvml_without_driver_reports_empty_list_and_reason() -> None:
    """The real pynvml on a machine without an NVIDIA driver: no crash, a reason instead."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has NVML; the no-driver path cannot be exercised here")
    backend = NvmlBackend()
    assert backend.read() == []
    assert backend.reason is not None and "NVML library not found" in backend.reason


class FakeNvml:
    """Stand-in for the NVML *library boundary*: the GPU it describes cannot exist on the
    machines that run these tests, so this replays what pynvml returns on a real board.
    It raises pynvml's own exception classes, so the backend's error handling is the real one.
    ``broken`` maps a function name to the exception it raises."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, count: int = 1, broken: dict[str, Exception] | None = None) -> None:
        self.count = count
        self.broken = broken or {}
        self.init_calls = 0

    def _maybe_fail(self, name: str) -> None:
        if name in self.broken:
            raise self.broken[name]

    def nvmlInit(self) -> None:
        self.init_calls += 1
        self._maybe_fail("nvmlInit")

    def nvmlDeviceGetCount(self) -> int:
        self._maybe_fail("nvmlDeviceGetCount")
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._maybe_fail("nvmlDeviceGetHandleByIndex")
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: Any) -> bytes:
        self._maybe_fail("nvmlDeviceGetName")
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._maybe_fail("nvmlDeviceGetUUID")
        return f"GPU-0000-{handle[1]}"

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._maybe_fail("nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=81559 * MIB, used=1024 * MIB, free=80535 * MIB)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self._maybe_fail("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self._maybe_fail("nvmlDeviceGetTemperature")
        return 61

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        self._maybe_fail("nvmlDeviceGetPowerUsage")
        return 312_500

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._maybe_fail("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=4242, usedGpuMemory=512 * MIB), SimpleNamespace(pid=7, usedGpuMemory=None)]


FULL = GpuSample(
    index=0,
    uuid="GPU-0000-0",
    name="NVIDIA H100 80GB HBM3",
    memory_total_mib=81559,
    memory_used_mib=1024,
    utilization_pct=87.0,
    temperature_c=61.0,
    power_w=312.5,
    processes=(GpuProcess(4242, 512), GpuProcess(7, None)),
)


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        pytest.param({}, FULL, id="every-field"),
        pytest.param(
            {"nvmlDeviceGetPowerUsage": pynvml.NVMLError_NotSupported()},
            replace(FULL, power_w=None),
            id="power-not-supported",
        ),
        pytest.param(
            {"nvmlDeviceGetTemperature": pynvml.NVMLError_NotSupported(),
             "nvmlDeviceGetComputeRunningProcesses": pynvml.NVMLError_NoPermission()},
            replace(FULL, temperature_c=None, processes=()),
            id="temperature-unsupported-processes-no-permission",
        ),
        pytest.param(
            {"nvmlDeviceGetMemoryInfo": pynvml.NVMLError_GpuIsLost()},
            replace(FULL, memory_total_mib=None, memory_used_mib=None),
            id="memory-gpu-lost",
        ),
        pytest.param(
            {"nvmlDeviceGetHandleByIndex": pynvml.NVMLError_Unknown()},
            GpuSample(index=0),
            id="no-handle-keeps-index",
        ),
    ],
)
def test_nvml_field_mapping(broken: dict[str, Exception], expected: GpuSample) -> None:
    backend = NvmlBackend(FakeNvml(broken=broken))
    assert backend.read() == [expected]
    assert backend.reason is None


@pytest.mark.parametrize(
    ("fake", "reason_part"),
    [
        pytest.param(FakeNvml(broken={"nvmlInit": pynvml.NVMLError_LibraryNotFound()}), "library not found", id="no-library"),
        pytest.param(FakeNvml(broken={"nvmlInit": pynvml.NVMLError_DriverNotLoaded()}), "could not initialise", id="driver-not-loaded"),
        pytest.param(FakeNvml(broken={"nvmlDeviceGetCount": pynvml.NVMLError_Unknown()}), "could not count", id="count-fails"),
        pytest.param(FakeNvml(count=0), "no GPU", id="zero-gpus"),
    ],
)
def test_nvml_empty_with_reason(fake: FakeNvml, reason_part: str) -> None:
    backend = NvmlBackend(fake)
    assert backend.read() == []
    assert backend.reason is not None and reason_part in backend.reason


def test_nvml_init_retried_until_it_succeeds() -> None:
    fake = FakeNvml(broken={"nvmlInit": pynvml.NVMLError_DriverNotLoaded()})
    backend = NvmlBackend(fake)
    assert backend.read() == []
    fake.broken.clear()
    assert len(backend.read()) == 1 and backend.reason is None
    backend.read()
    assert fake.init_calls == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


INVENTORY = [
    {"model": "A100-80GB", "memory_total_mb": 81920, "timeline": [[0, 10, 2000], [30, 90, 60000]]},
    {"model": "A100-80GB", "memory_total_mb": 81920, "uuid": "GPU-fixed", "power_w": 250, "timeline": [[0, 0, 100]]},
]


@pytest.mark.parametrize(
    ("elapsed", "util0", "mem0"),
    [
        pytest.param(0.0, 10.0, 2000, id="start"),
        pytest.param(29.9, 10.0, 2000, id="before-step"),
        pytest.param(30.0, 90.0, 60000, id="at-step"),
        pytest.param(3600.0, 90.0, 60000, id="long-after"),
    ],
)
def test_simulated_timeline(elapsed: float, util0: float, mem0: int) -> None:
    clock = Clock()
    backend = SimulatedBackend(parse_inventory(INVENTORY), clock, uuid_prefix="node-a")
    clock.now += elapsed
    first, second = backend.read()
    assert (first.utilization_pct, first.memory_used_mib, first.memory_total_mib) == (util0, mem0, 81920)
    assert (first.uuid, first.name, first.power_w) == ("GPU-SIM-node-a-0", "A100-80GB", None)
    assert (second.uuid, second.power_w, second.utilization_pct) == ("GPU-fixed", 250, 0.0)
    assert backend.reason is None


def test_simulated_empty_inventory_has_reason() -> None:
    backend = SimulatedBackend([], Clock())
    assert backend.read() == []
    assert backend.reason == "The simulated inventory has no GPU."


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param({"model": "x"}, "expected a JSON list", id="not-a-list"),
        pytest.param(["x"], "expected an object", id="entry-not-object"),
        pytest.param([{"memory_total_mb": 1}], '"model"', id="no-model"),
        pytest.param([{"model": "x", "memory_total_mb": 1, "timeline": [[0, 1]]}], "triples", id="short-step"),
        pytest.param([{"model": "x", "memory_total_mb": 1, "timeline": [[5, 1, 1], [5, 2, 2]]}], "must increase", id="time-not-increasing"),
    ],
)
def test_inventory_errors(doc: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_inventory(doc)


def test_inventory_file_error_names_file(tmp_path: Any) -> None:
    path = tmp_path / "inv.json"
    path.write_text("[{")
    with pytest.raises(ValueError, match="inv.json: cannot read JSON"):
        SimulatedBackend.from_file(path, Clock())
