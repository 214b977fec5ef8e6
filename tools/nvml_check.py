"""Compare the agent's GPU readings with nvidia-smi, on a host that has NVIDIA GPUs.

The agent must report GPU memory as nvidia-smi does (docs/agent.md), and no development or CI
machine has a GPU to check that on. This script starts nothing: it reads every GPU once
through the agent's own :class:`NvmlBackend`, runs nvidia-smi once, and prints both per GPU.
It exits 1 when a uuid differs or memory total, reserved or used differ by more than 1 MiB
(both sides round bytes to MiB), and 2 when either side cannot be read at all.

    python -m tools.nvml_check
"""

from __future__ import annotations

import subprocess
import sys

from provider.agent.gpu import GpuSample, NvmlBackend

FIELDS = (
    "index", "uuid", "memory.total", "memory.reserved", "memory.used", "memory.free",
    "utilization.gpu", "temperature.gpu", "power.draw",
)
QUERY = ("nvidia-smi", f"--query-gpu={','.join(FIELDS)}", "--format=csv,noheader,nounits")
TOLERANCE_MIB = 1
COMPARED_MIB = ("memory.total", "memory.reserved", "memory.used")


def agent_values(gpu: GpuSample) -> dict[str, object]:
    """The agent's figures under nvidia-smi's field names."""
    return {
        "index": gpu.index, "uuid": gpu.uuid, "memory.total": gpu.memory_total_mib,
        "memory.reserved": gpu.memory_reserved_mib, "memory.used": gpu.memory_used_mib,
        "memory.free": gpu.memory_free_mib, "utilization.gpu": gpu.utilization_pct,
        "temperature.gpu": gpu.temperature_c, "power.draw": gpu.power_w,
    }


def parse_smi(text: str) -> dict[int, dict[str, str]]:
    """nvidia-smi's CSV rows by GPU index."""
    rows = [dict(zip(FIELDS, (v.strip() for v in line.split(",")))) for line in text.splitlines() if line.strip()]
    return {int(row["index"]): row for row in rows}


def _number(text: str) -> float | None:
    """nvidia-smi prints ``[N/A]`` or ``[Not Supported]`` for a value it cannot read."""
    try:
        return float(text)
    except ValueError:
        return None


def differences(agent: dict[str, object], smi: dict[str, str]) -> list[str]:
    """What disagrees beyond rounding; a figure only one side has counts as a difference."""
    found = [] if agent["uuid"] == smi["uuid"] else [f"uuid: agent {agent['uuid']}, nvidia-smi {smi['uuid']}"]
    for field in COMPARED_MIB:
        mine, theirs = agent[field], _number(smi[field])
        if not isinstance(mine, int) or theirs is None or abs(mine - theirs) > TOLERANCE_MIB:
            found.append(f"{field}: agent {mine}, nvidia-smi {smi[field]}")
    return found


def main() -> int:
    backend = NvmlBackend()
    gpus = backend.read()
    if not gpus:
        print(f"The agent reads no GPU here: {backend.reason}", file=sys.stderr)
        return 2
    try:
        done = subprocess.run(QUERY, capture_output=True, text=True, timeout=60, check=False)
        error = f"exited {done.returncode}: {(done.stderr or done.stdout).strip()}" if done.returncode else None
    except (OSError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
    if error is not None:
        print(
            f"{' '.join(QUERY)} failed ({error}). It needs the NVIDIA driver's nvidia-smi on PATH, "
            "and a driver recent enough to know memory.reserved.",
            file=sys.stderr,
        )
        return 2
    smi = parse_smi(done.stdout)
    failed = sorted(set(smi) - {g.index for g in gpus})
    if failed:
        print(f"nvidia-smi lists GPUs {failed} that the agent does not read")
    for gpu in gpus:
        mine, theirs = agent_values(gpu), smi.get(gpu.index)
        print(f"{f'GPU {gpu.index}':<20} {'agent':<42} nvidia-smi")
        for field in FIELDS[1:]:
            print(f"  {field:<18} {mine[field]!s:<42} {'(not listed)' if theirs is None else theirs[field]}")
        problems = ["nvidia-smi does not list this GPU"] if theirs is None else differences(mine, theirs)
        for problem in problems:
            print(f"  DIFFERS {problem}")
        if problems:
            failed.append(gpu.index)
    print("MISMATCH" if failed else f"OK: {len(gpus)} GPU(s) agree within {TOLERANCE_MIB} MiB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
