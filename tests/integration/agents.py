"""Start real node agents as subprocesses on loopback for tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.node_agent import RunningAgent, stop_agent
from tools.node_agent import start_agent as start_agent_process

__all__ = ["RunningAgent", "gpus", "start_agent", "stop_agent"]


def gpus(count: int, model: str, memory_mb: int, util: float = 10.0) -> list[dict[str, Any]]:
    """A simulated inventory of ``count`` identical GPUs."""
    return [
        {"model": model, "memory_total_mb": memory_mb, "timeline": [[0, util, memory_mb // 10]]} for _ in range(count)
    ]


def start_agent(
    workdir: Path, name: str, inventory: list[dict[str, Any]] | None, token: str | None = None, interval_s: float = 0.2,
    cpus: str | None = None, cgroup: str | None = None, engine: str | None = None,
) -> RunningAgent:
    """Start ``python -m provider.agent`` on 127.0.0.1 with a kernel-chosen port.

    ``inventory`` None selects the NVML backend; otherwise a simulated one. The caller stops
    the process with :func:`stop_agent`. ``cpus`` (``"0,1"``) limits the CPUs it reports;
    ``cgroup`` makes it report that group's CPU quota and use instead; ``engine`` (a Docker
    engine's URL) makes it name the task that holds each GPU in its GPU series.
    """
    options = ["--host-id", name, "--interval", str(interval_s), "--docker-root", str(workdir / "no-docker-here")]
    if cpus is not None:
        options += ["--cpus", cpus]
    if cgroup is not None:
        options += ["--cgroup", cgroup]
    if engine is not None:
        options += ["--engine", engine]
    if inventory is None:
        options += ["--gpu-backend", "nvml"]
    else:
        path = workdir / f"{name}-gpus.json"
        path.write_text(json.dumps(inventory))
        options += ["--gpu-backend", f"simulated:{path}"]
    if token is not None:
        token_file = workdir / f"{name}.token"
        token_file.write_text(token + "\n")
        options += ["--token-file", str(token_file)]
    return start_agent_process(name, options, workdir / f"{name}.log")
