"""The main job: run the example training pipeline end to end on this machine.

Starts Airflow on loopback with its home in ``.airflow/`` of the project (SQLite, the local
Docker engine as the default GPU host), triggers ``train_image_classifier`` through the REST API
as the platform does, waits for it, prints the test accuracy and where the task log is, and
stops Airflow again.

    python -m tools.run_example [--conf '{"epochs": 40}']
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.local_airflow import REPO, LocalAirflow

DAG_ID = "train_image_classifier"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="{}", help="JSON conf of the run (the DAG's params)")
    parser.add_argument("--home", default=str(REPO / ".airflow"), help="AIRFLOW_HOME to use")
    args = parser.parse_args(argv)

    airflow = LocalAirflow(Path(args.home))
    print(f"Starting Airflow on {airflow.url} (AIRFLOW_HOME={airflow.home}) ...", flush=True)
    airflow.start()
    try:
        run_id = airflow.trigger(DAG_ID, json.loads(args.conf))
        print(f"Triggered {DAG_ID} run {run_id}; waiting ...", flush=True)
        state = airflow.wait_for_run(DAG_ID, run_id)
        train_log = airflow.task_log_file(DAG_ID, run_id, "train")
        print(f"Run {run_id}: {state}")
        print(f"Task log of the training container: {train_log}")
        if state != "success":
            for task in ("prepare", "train", "report"):
                ti = airflow.task_instance(DAG_ID, run_id, task)
                print(f"  {task}: {ti['state']}  log: {airflow.task_log_file(DAG_ID, run_id, task)}")
            return 1
        outcome = airflow.xcom(DAG_ID, run_id, "train")
        accuracy = airflow.xcom(DAG_ID, run_id, "report")
        print(f"Test accuracy: {float(accuracy):.4f} (host {outcome['host']}, "
              f"GPUs {outcome['gpus'] or 'none'}, {outcome['duration_s']} s in the container)")
        return 0
    finally:
        airflow.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
