"""A distributed deployment on one Linux box: a control machine, Celery workers and GPU hosts.

Each machine is a network namespace of a :class:`~tools.cluster.lan.Lan`, and every hop between
machines crosses that LAN by name:

* ``control``: PostgreSQL (metadata database), Redis (Celery broker), an S3-protocol store (the
  container-log archive), Prometheus (scraping every node agent, docs/metrics.md), and
  Airflow's api-server, scheduler, dag-processor and triggerer;
* ``w1``..``wN``: one Celery worker each (``airflow celery worker``), with its own
  ``AIRFLOW_HOME`` and task logs, which it serves to the api-server on port 8793;
* ``h1``..``hM``: a Docker engine with ``--tlsverify`` on ``tcp://hK:2376`` (certificates made
  here) and a node agent with a bearer token on ``hK:9400``, which reads the engine's task
  containers (``--engine``) to name the task holding each GPU. The GPUs are **simulated**: the
  agent reports an inventory from a file (``--gpu-backend simulated:FILE``) and the engine has
  a stand-in NVIDIA runtime (see :mod:`tools.dockerd`), because no GPU exists on the machines
  this runs on.

The connections ``gpu_h1``.. (hosts), ``gpu_pool`` (the pool of all hosts) and
``object_store`` (task logs and container-log archives) are created through the REST API, as a
user would. Every program is
stopped by its pid, every engine with its data, and the namespaces go with the LAN.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
from cryptography.fernet import Fernet

from tools.cgroups import make_cpu_quota_group, remove_cgroup
from tools.cluster.lan import Lan
from tools.cluster.prometheus import PROMETHEUS_PORT, SCRAPE_INTERVAL_S, start_prometheus
from tools.cluster.services import SERVICES, start_postgres, start_redis, start_s3
from tools.dockerd import TESTBOX_IMAGE, TRAINER_IMAGE, PrivateDockerd, stop_engines
from tools.local_airflow import AIRFLOW_STOP_AGAIN_S, REPO, AirflowRest, venv_env
from tools.node_agent import RunningAgent, start_agent, stop_agent
from tools.pki import Pki, make_pki
from tools.polling import NotWithin, eventually
from tools.processes import Processes

API_PORT = 8080
ENGINE_PORT = 2376
AGENT_PORT = 9400
POOL = "gpu_pool"
STORE_CONN = "object_store"
ARCHIVE_BUCKET = "container-logs"
TASK_LOG_BUCKET = "task-logs"
HEARTBEAT_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
"""The components that heartbeat, by their key in the api-server's health answer."""
VISIBILITY_TIMEOUT_S = 172800
"""Redis hands a task to another worker when it is unacknowledged this long; it must exceed the
longest training run (48 h here; Celery's default is 1 h, Airflow's 24 h). Airflow's Celery
executor acknowledges a message only when its task ends (``task_acks_late``), so the messages of
a lost worker stay unacknowledged this long: it is Airflow that retries their tasks, sooner (see
``ClusterSpec.heartbeat_timeout_s``)."""


@dataclass(frozen=True)
class ClusterSpec:
    """The shape of the topology. ``host_cpu_quota`` gives a GPU host's containers a CPU quota
    (``{"h1": 0.5}``: half a core for all of them together) in a cgroup of the host's own, which
    its agent reports (``--cgroup``), so that hosts sharing this machine's cores each have a
    capacity of their own and measure only their own work (benchmarks; cgroup v1 only).

    ``heartbeat_timeout_s`` and ``queued_timeout_s`` say how soon Airflow gives up on a lost
    worker (Airflow's defaults: 300 s and 600 s). A task whose try was running there is failed
    and retried once it has not heartbeat for ``heartbeat_timeout_s``; one the worker had taken
    from the broker but not yet started is queued again after ``queued_timeout_s``. The broker
    does not hand either to another worker sooner (see ``VISIBILITY_TIMEOUT_S``)."""

    workers: int = 3
    hosts: int = 3
    gpus_per_host: int = 4
    gpu_model: str = "A100-80GB"
    gpu_memory_mb: int = 81920
    worker_concurrency: int = 4
    host_cpu_quota: Mapping[str, float] = field(default_factory=dict)
    heartbeat_timeout_s: float = 300
    queued_timeout_s: float = 600
    tag: str = "gdc"
    images: tuple[str, ...] = (TRAINER_IMAGE, TESTBOX_IMAGE)


class Cluster:
    """The topology of ``spec``; :meth:`start` brings it up, :meth:`stop` removes all of it."""

    def __init__(self, spec: ClusterSpec = ClusterSpec(), dags_folder: Path = REPO / "dags",
                 workdir: Path | None = None) -> None:
        self.spec = spec
        self.dags_folder = dags_folder
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="gd-cluster-"))
        self.workers = [f"w{k + 1}" for k in range(spec.workers)]
        self.hosts = [f"h{k + 1}" for k in range(spec.hosts)]
        self.lan = Lan(["control", *self.workers, *self.hosts], tag=spec.tag)
        self.procs = Processes(self.workdir / "logs")
        self.engines: dict[str, PrivateDockerd] = {}
        self.agents: list[RunningAgent] = []
        self.cgroups: list[str] = []
        self.api = AirflowRest("", self.workdir / "control")
        self.env: dict[str, str] = {}
        self.agent_token = secrets.token_urlsafe(24)
        self.pki: Pki | None = None
        self.prometheus_url = ""

    # -- bring-up -------------------------------------------------------------------------
    def start(self, timeout: float = 300) -> Cluster:
        try:
            self.workdir.chmod(0o755)  # the postgres user reaches its data directory under it
            self.lan.start()
            control = self.lan["control"]
            self.api.url = f"http://{control.ip}:{API_PORT}"
            password = secrets.token_hex(12)
            db = start_postgres(self.lan, "control", self.procs, self.workdir, password)
            broker = start_redis(self.lan, "control", self.procs, self.workdir, password)
            s3 = start_s3(self.lan, "control", self.procs)
            self._bucket(f"http://{control.ip}:{s3.rsplit(':', 1)[1]}")
            self.pki = make_pki(self._dir("pki"), [*self.hosts, *(self.lan[h].ip for h in self.hosts)])
            for h in self.hosts:
                self._start_gpu_host(h)
            self._start_prometheus()
            self.env = self._airflow_env(db, broker, password)
            self._airflow("control", "db", "migrate")
            for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
                self.procs.start(name, [*self.lan.wrap("control"), self._bin(), name], env=self._machine_env("control"))
            self.api.wait_healthy(timeout, self.procs.check_alive)
            self._connections(s3)
            for w in self.workers:
                self._start_worker(w)
            self._wait_workers(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _dir(self, name: str) -> Path:
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @staticmethod
    def _bin() -> str:
        return str(Path(sys.executable).parent / "airflow")

    @staticmethod
    def _bucket(endpoint: str) -> None:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="cluster",
                          aws_secret_access_key="cluster")
        for bucket in (ARCHIVE_BUCKET, TASK_LOG_BUCKET):
            s3.create_bucket(Bucket=bucket)

    def _start_gpu_host(self, h: str) -> None:
        assert self.pki is not None
        ip = self.lan[h].ip
        cgroup = self._quota_group(h, self.spec.host_cpu_quota[h]) if h in self.spec.host_cpu_quota else None
        engine = PrivateDockerd(h, simulated_gpus=True, cgroup_parent=cgroup, wrap=self.lan.wrap(h), extra_args=[
            "--tlsverify", f"--tlscacert={self.pki.ca}", f"--tlscert={self.pki.server_cert}",
            f"--tlskey={self.pki.server_key}", f"--host=tcp://{ip}:{ENGINE_PORT}"])
        self.engines[h] = engine  # stopped with the others, also when it fails to start
        engine.start()
        engine.load(*self.spec.images)
        inventory = [{"model": self.spec.gpu_model, "memory_total_mb": self.spec.gpu_memory_mb,
                      "timeline": [[0, 0, 0]]} for _ in range(self.spec.gpus_per_host)]
        hdir = self._dir(h)
        (hdir / "gpus.json").write_text(json.dumps(inventory))
        (hdir / "agent.token").write_text(self.agent_token + "\n")
        (hdir / "agent.token").chmod(0o600)
        options = ["--host-id", h, "--token-file", str(hdir / "agent.token"),
                   "--gpu-backend", f"simulated:{hdir / 'gpus.json'}", "--docker-root", str(engine.root / "data"),
                   "--engine", engine.url]
        if cgroup is not None:
            options += ["--cgroup", cgroup]
        self.agents.append(start_agent(h, options, hdir / "agent.log", listen=f"{ip}:{AGENT_PORT}",
                                       wrap=self.lan.wrap(h)))

    def _start_prometheus(self) -> None:
        pdir = self._dir("prometheus")
        token = pdir / "agent.token"
        token.write_text(self.agent_token + "\n")
        token.chmod(0o600)
        self.prometheus_url = start_prometheus(self.lan, "control", self.procs, pdir,
                                               [f"{h}:{AGENT_PORT}" for h in self.hosts], token)

    def _quota_group(self, h: str, cores: float) -> str:
        """A cgroup with ``cores`` of CPU quota for ``h``'s containers (``--cgroup-parent``);
        removed in :meth:`stop`."""
        name = f"{self.spec.tag}-{h}"
        make_cpu_quota_group(name, cores)
        self.cgroups.append(name)
        return f"/{name}"

    def _airflow_env(self, db: str, broker: str, password: str) -> dict[str, str]:
        """The settings every Airflow machine shares; each machine adds its own AIRFLOW_HOME."""
        control = self.lan["control"]
        return {
            **os.environ, **venv_env(),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://control:{API_PORT}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.spec.worker_concurrency),
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API__HOST": control.ip,
            "AIRFLOW__API__PORT": str(API_PORT),
            "AIRFLOW__API__BASE_URL": f"http://{control.ip}:{API_PORT}",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": f"{self.spec.heartbeat_timeout_s:g}",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL":
                f"{max(1.0, min(10.0, self.spec.heartbeat_timeout_s / 8)):g}",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": f"{self.spec.queued_timeout_s:g}",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": f"{min(120.0, self.spec.queued_timeout_s / 5):g}",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "8793",
            # Task logs go to the store when an attempt ends: the api-server shows a running task's
            # log from its worker's log server, and a finished one's (with the triggerer's part of a
            # deferred task) from the store.
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{TASK_LOG_BUCKET}",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": STORE_CONN,
            "AIRFLOW__GPU_DOCKER__LOG_ARCHIVE": f"s3://{ARCHIVE_BUCKET}/",
            "AIRFLOW__GPU_DOCKER__LOG_ARCHIVE_CONN_ID": STORE_CONN,
            # The pool by name from the start: before its connection is made, the cluster page and
            # the orphan sweep must not fall back on the default host (this machine's engine).
            "AIRFLOW__GPU_DOCKER__CLUSTER_POOLS": POOL,
        }

    def _machine_env(self, machine: str) -> dict[str, str]:
        return {**self.env, "AIRFLOW_HOME": str(self._dir(machine))}

    def _airflow(self, machine: str, *args: str) -> str:
        out = subprocess.run([*self.lan.wrap(machine), self._bin(), *args], env=self._machine_env(machine),
                             capture_output=True, text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} on {machine} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def _connections(self, s3: str) -> None:
        assert self.pki is not None
        tls = {"tls_ca_cert": str(self.pki.ca), "tls_client_cert": str(self.pki.client_cert),
               "tls_client_key": str(self.pki.client_key)}
        for h in self.hosts:
            self.add_connection(f"gpu_{h}", "gpu_docker_host", host=f"tcp://{h}:{ENGINE_PORT}",
                                password=self.agent_token, extra={"agent_url": f"http://{h}:{AGENT_PORT}", **tls})
        self.add_connection(POOL, "gpu_docker_pool", extra={"hosts": [f"gpu_{h}" for h in self.hosts]})
        self.add_connection(STORE_CONN, "aws", login="cluster", password="cluster",
                            extra={"endpoint_url": s3, "region_name": "us-east-1"})

    def add_connection(self, conn_id: str, conn_type: str, extra: Mapping[str, Any] | None = None,
                       **fields: Any) -> None:
        body = {"connection_id": conn_id, "conn_type": conn_type, **fields}
        if extra is not None:
            body["extra"] = json.dumps(extra)
        self.api.request("POST", "/api/v2/connections", body)

    def _start_worker(self, w: str) -> None:
        self.procs.start(f"worker-{w}", [*self.lan.wrap(w), self._bin(), "celery", "worker",
                                         "--concurrency", str(self.spec.worker_concurrency)],
                         env=self._machine_env(w), cwd=self._dir(w))

    def crash_worker(self, w: str) -> None:
        """Worker ``w``'s machine is lost and comes back: every process it ran (the Celery worker,
        its pool, the task supervisors and the task processes) dies at once with SIGKILL, then the
        worker starts again with the same home and task logs. Its tasks' messages stay
        unacknowledged in the broker; Airflow retries the tries it ran (``heartbeat_timeout_s``)."""
        self.procs.restart(f"worker-{w}", crash=True)

    def restart_control(self, name: str, timeout: float = 300) -> float:
        """Restart Airflow's ``name`` (``scheduler``, ``api-server``, ...) on the control machine
        as an upgrade does: SIGTERM, wait, the same command again. Returns the seconds it was
        away: until the api-server answers again and, for a component that heartbeats, until
        the new process has heartbeat (the health answer names the latest heartbeat, which
        the old process wrote until it stopped)."""
        began, since = time.monotonic(), datetime.now(timezone.utc)
        self.procs.restart(name)
        self.api.wait_healthy(timeout, self.procs.check_alive)
        key = HEARTBEAT_KEYS.get(name)
        if key is not None:

            def beat_since() -> bool:
                beat = self.api.request("GET", "/api/v2/monitor/health", auth=False)[key][f"latest_{key}_heartbeat"]
                if beat and datetime.fromisoformat(beat) > since:
                    return True
                self.procs.check_alive()
                return False

            try:
                eventually(beat_since, timeout - (time.monotonic() - began), interval_s=0.5,
                           what=f"{name} heartbeating after its restart")
            except NotWithin:
                raise TimeoutError(f"{name} did not heartbeat within {timeout} s of its restart; "
                                   f"{self.procs.log_path(name)} ends:\n{self.procs.log_tail(name)}") from None
        return time.monotonic() - began

    def _wait_workers(self, timeout: float) -> None:
        """Wait until each worker's Celery consumer says it is ready."""
        waiting = set(self.workers)

        def not_ready() -> list[str]:
            self.procs.check_alive()
            waiting.difference_update(w for w in list(waiting)
                                      if f"celery@{w} ready" in self.procs.log_tail(f"worker-{w}", 400))
            return sorted(waiting)

        eventually(not_ready, timeout, interval_s=0.5, what=f"Celery workers ready (see {self.procs.log_dir}); not yet",
                   until=lambda left: not left)

    # -- use ------------------------------------------------------------------------------
    def describe(self) -> str:
        """Which process runs where: the picture a user needs to find each piece."""
        c = self.lan["control"]
        lines = [f"control {c.ip}: PostgreSQL :5432, Redis :6379, S3 :5000, Prometheus :{PROMETHEUS_PORT} "
                 f"(every node agent, every {SCRAPE_INTERVAL_S} s), Airflow api-server :{API_PORT}, "
                 f"scheduler, dag-processor, triggerer"]
        lines += [f"{w} {self.lan[w].ip}: Celery worker (concurrency {self.spec.worker_concurrency}), "
                  f"task logs :8793" for w in self.workers]
        lines += [f"{h} {self.lan[h].ip}: dockerd tcp://{h}:{ENGINE_PORT} (TLS), node agent :{AGENT_PORT} "
                  f"({self.spec.gpus_per_host} simulated {self.spec.gpu_model})" for h in self.hosts]
        return "\n".join(lines)

    # -- tear-down ------------------------------------------------------------------------
    def stop(self) -> None:
        self.procs.stop_all(services=SERVICES, again_after_s=AIRFLOW_STOP_AGAIN_S)
        for agent in self.agents:
            stop_agent(agent.process)
        self.agents.clear()
        stop_engines(self.engines.values())
        self.engines.clear()
        for name in self.cgroups:
            remove_cgroup(name)  # the engine made it in every controller, not only cpu and cpuacct
        self.cgroups.clear()
        self.lan.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

