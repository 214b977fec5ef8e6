"""The main job: run the example training pipeline end to end on this machine.

Starts a node agent beside the local Docker engine and Airflow on loopback with its home in
``.airflow/`` of the project (SQLite), defines the pool ``gpu_pool_local`` of that one host
through the REST API as a user would, triggers ``train_image_classifier`` on the pool as the
platform does, waits for it, and prints the test accuracy, where placement put the training and
where the task log is. Then it stops what it started; with ``--keep`` it leaves everything up,
prints the Airflow UI's address, how to sign in and the GPU cluster page, and stops it all on
Ctrl-C.

    python -m tools.run_example [--conf '{"epochs": 40}'] [--keep]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from provider.clients.hosts import HOST_CONN_TYPE, POOL_CONN_TYPE, HostConfig, local_host
from provider.ui.routes import APP_PREFIX, URL_ROUTE
from tools.local_airflow import REPO, AirflowRest, LocalAirflow
from tools.node_agent import start_agent, stop_agent

DAG_ID = "train_image_classifier"
POOL_ID = "gpu_pool_local"
HOST_ID = "gpu_host_local"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
"""Where Airflow's simple auth manager keeps the passwords it generated, in AIRFLOW_HOME."""


def shown(path: Path) -> str:
    """``path`` relative to the working directory when below it (``./run`` works in the
    project), so the printed paths are the ones a user types."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def define_pool(airflow: LocalAirflow, pool_id: str, host: HostConfig) -> None:
    """Create (or overwrite) the host's and the pool's connections in the metadata database.

    One bulk call of the REST API, as a user or the platform would make it: the GPU cluster
    page lists the pools it finds there, and the tasks look the connections up by id.
    """
    host_conn = {
        "connection_id": host.name, "conn_type": HOST_CONN_TYPE, "host": host.docker_url,
        "description": "This machine's Docker engine and node agent (./run example).",
        "extra": json.dumps({"agent_url": host.agent_url}),
    }
    pool_conn = {
        "connection_id": pool_id, "conn_type": POOL_CONN_TYPE,
        "description": "The example's pool of one host (./run example).",
        "extra": json.dumps({"hosts": [host.name]}),
    }
    body = {"actions": [{"action": "create", "entities": [host_conn, pool_conn], "action_on_existence": "overwrite"}]}
    answer = airflow.request("PATCH", "/api/v2/connections", body)
    errors = (answer.get("create") or {}).get("errors")
    if errors:
        raise RuntimeError(f"Airflow refused the connections {host.name!r} and {pool_id!r}: {errors}")


def describe_node(agent_url: str) -> str:
    """What the agent measures on this machine; says so, and why, when no GPU was found."""
    with urllib.request.urlopen(f"{agent_url}/v1/node", timeout=5) as answer:
        node: dict[str, Any] = json.load(answer)
    gpus = node["gpus"]
    memory_gib = node["memory"]["total_bytes"] / 2**30
    measured = f"{node['cpu']['count']} CPUs, {memory_gib:.1f} GiB memory"
    if gpus:
        return f"{measured}, {len(gpus)} GPU(s): {', '.join(str(g['name']) for g in gpus)}"
    return f"{measured}, no GPU found.\n  {node['gpu_reason']} The example trains on the CPU."


def run_pipeline(airflow: LocalAirflow, conf: dict[str, Any]) -> int:
    """Trigger the example on ``conf``, wait, and print its outcome; 0 on success."""
    run_id = airflow.trigger(DAG_ID, conf)
    print(f"Triggered {DAG_ID} run {run_id} with conf {json.dumps(conf)}; waiting ...", flush=True)
    state = airflow.wait_for_run(DAG_ID, run_id)
    print(f"Run {run_id}: {state}")
    print(f"Task log of the training container: {shown(airflow.task_log_file(DAG_ID, run_id, 'train'))}")
    if state != "success":
        for task in ("prepare", "train", "report"):
            ti = airflow.task_instance(DAG_ID, run_id, task)
            print(f"  {task}: {ti['state']}  log: {shown(airflow.task_log_file(DAG_ID, run_id, task))}")
        return 1
    outcome = airflow.xcom(DAG_ID, run_id, "train")
    placement = airflow.xcom(DAG_ID, run_id, "train", key="placement")
    accuracy = airflow.xcom(DAG_ID, run_id, "report")
    scores = ", ".join(f"{host} {score:.1f}" for host, score in placement["scores"].items())
    print(f"Placed on {placement['host']} of pool {conf['gpu_pool']} by {placement['policy']} (scores: {scores})")
    print(f"Test accuracy: {float(accuracy):.4f} (host {outcome['host']}, "
          f"GPUs {outcome['gpus'] or 'none'}, {outcome['duration_s']} s in the container)")
    return 0


def print_sign_in(airflow: AirflowRest) -> None:
    """Where the UI and the GPU cluster page are, and the login the simple auth manager made."""
    print(f"Airflow UI:       {airflow.url}/")
    print(f"Sign in as:       admin, password {airflow.password()} "
          f"(generated by Airflow, kept in {shown(airflow.home / PASSWORD_FILE)})")
    print(f"GPU cluster page: {airflow.url}/plugin/{URL_ROUTE} (the page alone: {airflow.url}{APP_PREFIX}/)")


def wait_for_interrupt() -> None:
    """Sleep until Ctrl-C (SIGINT) or SIGTERM, both of which raise KeyboardInterrupt here."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C, so what it started is stopped, not orphaned."""
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="{}", help="JSON conf of the run (the DAG's params)")
    parser.add_argument("--home", default=str(REPO / ".airflow"), help="AIRFLOW_HOME to use")
    parser.add_argument("--keep", action="store_true",
                        help="leave Airflow and the node agent up after the run until Ctrl-C, to look at it in the UI")
    args = parser.parse_args(argv)
    conf = {"gpu_pool": POOL_ID, **json.loads(args.conf)}
    # Ctrl-C even where the shell started this with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_interrupt)

    airflow = LocalAirflow(Path(args.home))
    airflow.home.mkdir(parents=True, exist_ok=True)
    with ExitStack() as started:
        try:
            agent = start_agent(HOST_ID, ["--gpu-backend", "nvml"], airflow.home / "node-agent.log")
            started.callback(stop_agent, agent.process)
            host = HostConfig(name=HOST_ID, docker_url=local_host().docker_url, agent_url=agent.url)
            print(f"Node agent of this machine on {agent.url} (pid {agent.process.pid}): {describe_node(agent.url)}")
            print(f"Starting Airflow on {airflow.url} (AIRFLOW_HOME={shown(airflow.home)}) ...", flush=True)
            started.callback(airflow.stop)
            airflow.start()
            define_pool(airflow, POOL_ID, host)
            print(f"Pool {POOL_ID}: host {HOST_ID} (Docker engine {host.docker_url}, node agent {agent.url})")
            status = run_pipeline(airflow, conf)
            if args.keep:
                print_sign_in(airflow)
                print("Airflow and the node agent stay up; press Ctrl-C to stop them.", flush=True)
                wait_for_interrupt()
                print("Stopping Airflow and the node agent ...", flush=True)
            else:
                print("Stopping Airflow and the node agent (--keep leaves them up for the Airflow UI) ...", flush=True)
            return status
        except KeyboardInterrupt:
            print("Interrupted; stopping Airflow and the node agent ...", flush=True)
            return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
