"""A private Prometheus on a machine of the topology, scraping every GPU host's node agent.

It is Debian's ``prometheus`` (installed by ``./run``), started as a program of
:class:`~tools.processes.Processes` with its configuration and data under the topology's work
directory, listening on the machine's LAN address only, so it goes with the topology and never
meets the machine's own Prometheus, if any. The scrape configuration is the one docs/metrics.md
gives, with a short interval so that tests see a change within seconds.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml

from tools.cluster.lan import Lan
from tools.cluster.services import wait_port
from tools.processes import Processes

PROMETHEUS_PORT = 9090
SCRAPE_INTERVAL_S = 2
JOB = "gpu_docker_agent"


def scrape_config(targets: Sequence[str], token_file: Path, interval_s: float = SCRAPE_INTERVAL_S) -> dict[str, object]:
    """Prometheus' configuration: one job scraping ``targets`` (``host:port`` of the agents) with
    the agents' bearer token read from ``token_file``."""
    return {
        "global": {"scrape_interval": f"{interval_s:g}s", "scrape_timeout": f"{interval_s:g}s",
                   "evaluation_interval": f"{interval_s:g}s"},
        "scrape_configs": [{
            "job_name": JOB,
            "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
            "static_configs": [{"targets": list(targets)}],
        }],
    }


def start_prometheus(lan: Lan, machine: str, procs: Processes, workdir: Path, targets: Sequence[str],
                     token_file: Path) -> str:
    """Prometheus on ``machine`` scraping ``targets``; returns its URL. Stopped with ``procs``."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("Prometheus is missing: install Debian's `prometheus` (./run does).")
    (workdir / "data").mkdir(parents=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, token_file), sort_keys=False))
    ip = lan[machine].ip
    procs.start("prometheus", [*lan.wrap(machine), binary, f"--config.file={config}",
                               f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={ip}:{PROMETHEUS_PORT}",
                               "--storage.tsdb.retention.time=1d"])
    wait_port(ip, PROMETHEUS_PORT, procs)
    return f"http://{ip}:{PROMETHEUS_PORT}"
