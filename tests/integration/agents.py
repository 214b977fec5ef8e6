"""Start real node agents as subprocesses on loopback for tests and benchmarks."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class RunningAgent:
    name: str
    url: str
    process: subprocess.Popen[bytes]


def gpus(count: int, model: str, memory_mb: int, util: float = 10.0) -> list[dict[str, Any]]:
    """A simulated inventory of ``count`` identical GPUs."""
    return [
        {"model": model, "memory_total_mb": memory_mb, "timeline": [[0, util, memory_mb // 10]]} for _ in range(count)
    ]


def start_agent(
    workdir: Path, name: str, inventory: list[dict[str, Any]] | None, token: str | None = None, interval_s: float = 0.2,
    cpus: str | None = None,
) -> RunningAgent:
    """Start ``python -m provider.agent`` on 127.0.0.1 with a kernel-chosen port.

    ``inventory`` None selects the NVML backend; otherwise a simulated one. The caller stops
    the process with :func:`stop_agent`. ``cpus`` (``"0,1"``) limits the CPUs it reports.
    """
    args = [sys.executable, "-m", "provider.agent", "--listen", "127.0.0.1:0", "--host-id", name,
            "--interval", str(interval_s), "--docker-root", str(workdir / "no-docker-here")]
    if cpus is not None:
        args += ["--cpus", cpus]
    if inventory is None:
        args += ["--gpu-backend", "nvml"]
    else:
        path = workdir / f"{name}-gpus.json"
        path.write_text(json.dumps(inventory))
        args += ["--gpu-backend", f"simulated:{path}"]
    if token is not None:
        token_file = workdir / f"{name}.token"
        token_file.write_text(token + "\n")
        args += ["--token-file", str(token_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps writing to it
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
    log.close()
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("listening on "):
        stop_agent(process)
        raise RuntimeError(f"agent {name} did not start: {line!r}; log: {(workdir / f'{name}.log').read_text()}")
    return RunningAgent(name=name, url=line.split()[-1], process=process)


def stop_agent(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM by pid, then SIGKILL after 10 s; returns the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode
