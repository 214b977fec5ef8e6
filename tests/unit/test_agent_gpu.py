"""GPU backends: NVML on this machine for real, NVML field mapping through a stand-in library
(including the v2/v1 memory choice, through to the JSON document and the metrics), and the
simulated backend's timeline replay and inventory checks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from provider.agent.gpu import MIB, GpuProcess, GpuSample, NvmlBackend
from provider.agent.metrics import make_registry
from provider.agent.sampler import Sampler
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


# One H200's memory in bytes, shaped like the figures measured on a real board (nvidia-smi
# 616 MiB reserved at idle): the driver's reserved memory is not a whole number of MiB, so
# free rounded down is one MiB less than total - reserved - used in whole MiB.
TOTAL_B = 143771 * MIB + 512 * 1024
RESERVED_B = 615 * MIB + 600 * 1024
USED_B = 1024 * MIB
FREE_B = TOTAL_B - RESERVED_B - USED_B


class FakeNvml:
    """Stand-in for the NVML *library boundary*: the GPU it describes cannot exist on the
    machines that run these tests, so this replays what pynvml returns on a real board.
    It raises pynvml's own exception classes, so the backend's error handling is the real one.
    ``broken`` maps a function name to the exception it raises; the v2 memory call is named
    after the driver symbol pynvml looks up for it, ``nvmlDeviceGetMemoryInfo_v2``.
    ``binding_has_v2=False`` plays an nvidia-ml-py from before ``nvmlMemory_v2``, whose
    ``nvmlDeviceGetMemoryInfo`` takes no ``version``."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_FunctionNotFound = pynvml.NVMLError_FunctionNotFound
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(
        self, count: int = 1, broken: dict[str, Exception] | None = None, binding_has_v2: bool = True
    ) -> None:
        self.count = count
        self.broken = broken or {}
        self.init_calls = 0
        self.memory_versions: list[int | None] = []
        if binding_has_v2:
            self.nvmlMemory_v2 = pynvml.nvmlMemory_v2

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
        return b"NVIDIA H200"

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._maybe_fail("nvmlDeviceGetUUID")
        return f"GPU-0000-{handle[1]}"

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        self.memory_versions.append(version)
        if version is None:
            self._maybe_fail("nvmlDeviceGetMemoryInfo")
            return SimpleNamespace(total=TOTAL_B, used=RESERVED_B + USED_B, free=FREE_B)
        if not hasattr(self, "nvmlMemory_v2"):
            raise TypeError("nvmlDeviceGetMemoryInfo() got an unexpected keyword argument 'version'")
        assert version == pynvml.nvmlMemory_v2
        self._maybe_fail("nvmlDeviceGetMemoryInfo_v2")
        return SimpleNamespace(version=version, total=TOTAL_B, reserved=RESERVED_B, used=USED_B, free=FREE_B)

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
    name="NVIDIA H200",
    memory_total_mib=143771,
    memory_used_mib=1024,
    memory_reserved_mib=615,
    memory_free_mib=142131,
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
            {"nvmlDeviceGetMemoryInfo_v2": pynvml.NVMLError_GpuIsLost()},
            replace(FULL, memory_total_mib=None, memory_used_mib=None, memory_reserved_mib=None, memory_free_mib=None),
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


V1 = replace(FULL, memory_used_mib=1639, memory_reserved_mib=None)


@pytest.mark.parametrize(
    ("fake", "expected", "versions"),
    [
        pytest.param(FakeNvml(), FULL, [pynvml.nvmlMemory_v2] * 2, id="v2-used-excludes-reserved"),
        pytest.param(FakeNvml(binding_has_v2=False), V1, [None] * 2, id="binding-without-v2"),
        pytest.param(
            FakeNvml(broken={"nvmlDeviceGetMemoryInfo_v2": pynvml.NVMLError_FunctionNotFound()}),
            V1,
            [pynvml.nvmlMemory_v2, None, None],
            id="driver-without-v2",
        ),
        pytest.param(
            FakeNvml(broken={"nvmlDeviceGetMemoryInfo_v2": pynvml.NVMLError_NotSupported()}),
            V1,
            [pynvml.nvmlMemory_v2, None, None],
            id="v2-not-supported",
        ),
        pytest.param(
            FakeNvml(broken={"nvmlDeviceGetMemoryInfo_v2": pynvml.NVMLError_Unknown()}),
            replace(FULL, memory_total_mib=None, memory_used_mib=None, memory_reserved_mib=None, memory_free_mib=None),
            [pynvml.nvmlMemory_v2] * 2,
            id="v2-transient-error-retried",
        ),
    ],
)
def test_nvml_memory_v2_or_v1(fake: FakeNvml, expected: GpuSample, versions: list[int | None]) -> None:
    """v2 where offered (used as nvidia-smi shows it, free as the driver counts it); v1 with
    reserved unknown where the binding or driver lacks v2, decided once and not retried."""
    backend = NvmlBackend(fake)
    assert backend.read() == [expected]
    assert backend.read() == [expected]
    assert fake.memory_versions == versions


@pytest.mark.parametrize(
    ("fake", "reserved_mib"),
    [
        pytest.param(FakeNvml(), 615, id="v2"),
        pytest.param(FakeNvml(binding_has_v2=False), None, id="v1"),
    ],
)
def test_nvml_memory_in_document_and_metrics(tmp_path: Path, fake: FakeNvml, reserved_mib: int | None) -> None:
    """The reserved figure reaches ``/v1/node`` (null under v1) and ``/metrics`` (absent under v1)."""
    sampler = Sampler("node-n", NvmlBackend(fake), cpus=[0], docker_root=str(tmp_path / "absent"))
    sampler.refresh()
    latest = sampler.latest()
    assert latest is not None
    (gpu,) = json.loads(latest[1])["gpus"]
    assert (gpu["memory_total_mib"], gpu["memory_reserved_mib"], gpu["memory_free_mib"]) == (143771, reserved_mib, 142131)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(make_registry(sampler)).decode())}
    reserved = [s.value for s in families["DCGM_FI_DEV_FB_RESERVED"].samples]
    assert reserved == ([] if reserved_mib is None else [reserved_mib])
    assert [s.value for s in families["DCGM_FI_DEV_FB_USED"].samples] == [gpu["memory_used_mib"]]


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


@pytest.mark.parametrize(
    ("extra", "memory_used_mb", "expected"),
    [
        pytest.param({}, 2000, (2000, 0, 79920), id="reserved-defaults-to-0"),
        pytest.param({"memory_reserved_mb": 615}, 2000, (2000, 615, 79305), id="reserved-apart-from-used"),
        pytest.param({"memory_reserved_mb": 615}, 81920, (81305, 615, 0), id="used-capped-at-what-is-left"),
    ],
)
def test_simulated_reserved_memory(extra: dict[str, Any], memory_used_mb: int, expected: tuple[int, int, int]) -> None:
    inventory = [{"model": "A100-80GB", "memory_total_mb": 81920, "timeline": [[0, 0, memory_used_mb]], **extra}]
    (gpu,) = SimulatedBackend(parse_inventory(inventory), Clock()).read()
    assert (gpu.memory_used_mib, gpu.memory_reserved_mib, gpu.memory_free_mib) == expected


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
        pytest.param([{"model": "x", "memory_total_mb": 1, "memory_reserved_mb": "lots"}], "whole number", id="reserved-not-a-number"),
        pytest.param([{"model": "x", "memory_total_mb": 100, "memory_reserved_mb": 101}], "between 0 and", id="reserved-over-total"),
        pytest.param([{"model": "x", "memory_total_mb": 100, "memory_reserved_mb": -1}], "between 0 and", id="reserved-negative"),
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
