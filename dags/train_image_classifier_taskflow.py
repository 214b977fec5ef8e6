"""The example pipeline written with TaskFlow: ``train`` is a Python function run in the
trainer image on the chosen GPU host (``@task.gpu_docker``), ``report`` reads its return value.

The same params as ``train_image_classifier``: trigger it from the UI or over the REST API with
a ``conf`` such as ``{"epochs": 40, "gpu_pool": "gpu_pool_main"}``. The function's arguments are
the run's params, rendered in the worker; its return value (the trainer's result) is the
``train`` task's XCom, and where it ran is the XCom ``container`` (docs/taskflow.md).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from provider.operators.container_spec import IMAGE_REF_PATTERN

log = logging.getLogger(__name__)

with DAG(
    dag_id="train_image_classifier_taskflow",
    description="Train a digits classifier in a TaskFlow function on the best GPU host.",
    schedule=None,
    catchup=False,
    tags=["gpu", "training", "example", "taskflow"],
    render_template_as_native_obj=True,
    params={
        "image": Param("gpu-docker-trainer:0.1", type="string", pattern=IMAGE_REF_PATTERN,
                       description="Docker image of the trainer; it must have python3."),
        "epochs": Param(30, type="integer", minimum=1, maximum=1000),
        "learning_rate": Param(0.1, type="number", exclusiveMinimum=0, maximum=10),
        "hidden_units": Param(64, type="integer", minimum=1, maximum=4096),
        "seed": Param(0, type="integer", minimum=0),
        "gpus": Param(0, type="integer", minimum=0, maximum=16, description="Whole GPUs to use."),
        "gpu_pool": Param(None, type=["null", "string"], minLength=1,
                          description="A GPU Docker pool (or host) connection; empty: the default GPU host."),
        "min_accuracy": Param(0.0, type="number", minimum=0, maximum=1),
    },
) as dag:

    @task.gpu_docker(image="{{ params.image }}", gpus="{{ params.gpus }}", gpu_pool="{{ params.gpu_pool }}",
                     cpus=1, mem_limit="2g")
    def train(epochs: int, learning_rate: float, hidden_units: int, seed: int) -> dict[str, Any]:
        """Runs inside the trainer image: its training script, called as a library."""
        import json
        import sys

        sys.path.insert(0, "/app")
        import train as trainer  # /app/train.py of the image

        output = "/tmp/trained.json"
        trainer.main(["--epochs", str(epochs), "--learning-rate", str(learning_rate),
                      "--hidden-units", str(hidden_units), "--seed", str(seed), "--output", output])
        with open(output) as f:
            result = json.load(f)
        return {key: result[key] for key in ("test_accuracy", "val_accuracy", "epochs", "train_seconds")}

    @task
    def report(result: dict[str, Any]) -> float:
        """Log the test accuracy and where it was trained; enforce ``min_accuracy``."""
        context = get_current_context()
        where = context["ti"].xcom_pull(task_ids="train", key="container") or {}
        accuracy = float(result["test_accuracy"])
        log.info("test accuracy %.4f after %s epochs on host %s, GPUs %s", accuracy, result["epochs"],
                 where.get("host"), where.get("gpus") or "none")
        minimum = float(context["params"]["min_accuracy"])
        if accuracy < minimum:
            raise ValueError(f"test accuracy {accuracy:.4f} is below min_accuracy {minimum}.")
        return accuracy

    report(train(epochs="{{ params.epochs }}", learning_rate="{{ params.learning_rate }}",
                 hidden_units="{{ params.hidden_units }}", seed="{{ params.seed }}"))
