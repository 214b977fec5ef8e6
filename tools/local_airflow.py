"""A real Airflow on loopback for the example run, the system tests and the benchmarks.

It starts the api-server, scheduler, dag-processor and triggerer of the venv's Airflow with
an AIRFLOW_HOME of its own (LocalExecutor, SQLite), talks to the REST API with a token
(:class:`AirflowRest`, shared with the multi-machine topology), and stops exactly the
processes it started, by pid.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.polling import eventually
from tools.processes import Processes

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv_env() -> dict[str, str]:
    """``PATH`` and ``PYTHONPATH`` for programs of this venv that must import this checkout's
    ``provider`` (whichever checkout the venv was installed from)."""
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }


class AirflowRest:
    """The REST API of an Airflow whose api-server answers on ``url`` and whose simple auth
    manager writes its generated passwords under ``home``."""

    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home
        self._token: str | None = None

    @property
    def log_folder(self) -> Path:
        return self.home / "logs"

    def wait_healthy(self, timeout: float, check_alive: Callable[[], None]) -> None:
        """Wait for the api-server's health endpoint; ``check_alive`` raises when a component died."""
        def healthy() -> bool:
            check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        eventually(healthy, timeout, interval_s=0.5, what=f"Airflow api-server answering on {self.url}")

    def token(self) -> str:
        if self._token is None:
            body = self.request("POST", "/auth/token", {"username": "admin", "password": self.password()}, auth=False)
            self._token = str(body["access_token"])
        return self._token

    def password(self) -> str:
        path = self.home / "simple_auth_manager_passwords.json.generated"
        eventually(path.exists, 30, what=f"Airflow's generated passwords in {path}")
        return str(json.loads(path.read_text())["admin"])

    def request(
        self, method: str, path: str, body: Any = None, auth: bool = True, accept: str = "application/json"
    ) -> Any:
        """One REST call; returns parsed JSON, or raises HTTPError with the server's detail."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", accept)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw and accept == "application/json" else raw.decode()

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        def parsed() -> bool:
            try:
                self.request("GET", f"/api/v2/dags/{dag_id}")
                return True
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                return False

        eventually(parsed, timeout, interval_s=1, what=f"DAG {dag_id} parsed (see {self.home}/dag-processor.out)")

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        self.wait_for_dag(dag_id)
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf)})
        return str(run["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        state = eventually(lambda: self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"], timeout,
                           interval_s=1, what=f"run {run_id} of {dag_id} finished", until=lambda s: s in TERMINAL)
        return str(state)

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        path = (f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
                f"?deserialize=true&map_index={map_index}")
        return self.request("GET", path)["value"]

    def mapped_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every mapped instance of ``task_id`` (state, hostname, try_number, ...), by map index."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/listMapped?limit=1000"
        return sorted(self.request("GET", path)["task_instances"], key=lambda ti: int(ti["map_index"]))

    def task_log_text(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?map_index={map_index}"
        return str(self.request("GET", path, accept="application/x-ndjson"))

    def task_log_events(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1,
                        last: int = 40) -> str:
        """The last ``last`` lines of a task's log as a person reads them (level and event of each
        record), for a failure message: the raw records are JSON that a message would cut short."""
        lines = []
        for raw in self.task_log_text(dag_id, run_id, task_id, try_number, map_index).splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                lines.append(raw)
                continue
            lines.append(f"{record.get('level', '')} {record.get('event', '')}" if isinstance(record, dict) else raw)
        return "\n".join(lines[-last:])

    def task_log_file(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> Path:
        return self.log_folder / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}" / f"attempt={try_number}.log"


AIRFLOW_STOP_AGAIN_S = 5.0
"""When components still running get a second SIGTERM: the others have stopped by then, and
the triggerer, which would wait 10 s more for its trigger runner, stops at once."""


class LocalAirflow(AirflowRest):
    """One Airflow installation under ``home``; ``start()`` it, use it, ``stop()`` it."""

    def __init__(
        self,
        home: Path,
        dags_folder: Path = REPO / "dags",
        plugins_folder: Path = REPO / "plugins",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", home)
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            **venv_env(),
            **(extra_env or {}),
        }
        self.processes = Processes(home)

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        """Run one ``airflow`` CLI command in this installation and return its standard output."""
        out = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def migrate(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate")

    def start(self, components: Sequence[str] = COMPONENTS, timeout: float = 120) -> None:
        self.migrate()
        airflow = str(Path(sys.executable).parent / "airflow")
        for name in components:
            self.processes.start(name, [airflow, name], env=self.env)
        self.wait_healthy(timeout, self.processes.check_alive)

    def stop(self) -> None:
        """SIGTERM every started component's process group, then SIGKILL what remains."""
        self.processes.stop_all(again_after_s=AIRFLOW_STOP_AGAIN_S)
