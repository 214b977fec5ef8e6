"""Start a node agent (``python -m provider.agent``) as a child process and stop it by its pid.

The example run, the tests and the benchmarks start agents the same way: on a port the kernel
picks (``--listen 127.0.0.1:0``), which the agent names in the one line it prints on stdout once
it serves, so no port is ever guessed or shared between runs.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.local_airflow import REPO

START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class RunningAgent:
    name: str
    url: str
    process: subprocess.Popen[bytes]


def start_agent(name: str, options: Sequence[str], log_path: Path, listen: str = "127.0.0.1:0",
                wrap: Sequence[str] = ()) -> RunningAgent:
    """Start an agent listening on ``listen`` with ``options``; its log (stderr) goes to ``log_path``.
    ``wrap`` runs it elsewhere, e.g. on a machine of a :class:`~tools.cluster.lan.Lan`.

    Returns once it serves; raises with the agent's log when it does not within
    :data:`START_TIMEOUT_S`. The caller stops it with :func:`stop_agent`.
    """
    args = [*wrap, sys.executable, "-m", "provider.agent", "--listen", listen, *options]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("listening on "):
        stop_agent(process)
        raise RuntimeError(f"agent {name} did not start: {line!r}; log: {log_path.read_text()}")
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
