"""tools/nvml_check.py's comparison, on nvidia-smi text shaped like an H200's under load: the script
itself only runs on a GPU host, which no test machine is, so its judgement is tested here."""

from __future__ import annotations

from dataclasses import replace

import pytest

from provider.agent.gpu import GpuSample
from tools.nvml_check import agent_values, differences, parse_smi

SMI = "0, GPU-a, 143771, 616, 31731, 111424, 97, 63, 512.30\n1, GPU-b, 143771, 616, 0, 143155, 0, 30, [N/A]\n"
AGENT = GpuSample(index=0, uuid="GPU-a", memory_total_mib=143771, memory_reserved_mib=615, memory_used_mib=31731)


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        pytest.param(AGENT, [], id="agrees-within-rounding"),
        pytest.param(replace(AGENT, memory_used_mib=32345), ["memory.used: agent 32345, nvidia-smi 31731"], id="used-counts-reserved"),
        pytest.param(
            replace(AGENT, memory_used_mib=32345, memory_reserved_mib=None),
            ["memory.reserved: agent None, nvidia-smi 616", "memory.used: agent 32345, nvidia-smi 31731"],
            id="agent-on-v1",
        ),
        pytest.param(replace(AGENT, uuid="GPU-b"), ["uuid: agent GPU-b, nvidia-smi GPU-a"], id="uuid-differs"),
    ],
)
def test_differences(agent: GpuSample, expected: list[str]) -> None:
    assert differences(agent_values(agent), parse_smi(SMI)[0]) == expected


def test_parse_keeps_unreadable_values_as_text() -> None:
    rows = parse_smi(SMI)
    assert sorted(rows) == [0, 1]
    assert (rows[1]["uuid"], rows[1]["memory.used"], rows[1]["power.draw"]) == ("GPU-b", "0", "[N/A]")
