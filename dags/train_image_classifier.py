"""Train an image classifier in a GPU Docker container: prepare -> train -> report.

Trigger it from the Airflow UI ("Trigger DAG w/ config"), or from the platform over the REST
API with a ``conf`` such as ``{"epochs": 40, "learning_rate": 0.05, "gpus": 1}``. The params'
JSON schema refuses a bad conf before any run is created. Without ``gpu_pool`` the training runs
on the default GPU host (the local Docker engine when no ``gpu_docker_default`` connection
exists); with ``{"gpu_pool": "gpu_pool_main"}`` it runs where placement chooses on that pool.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from provider.operators.container_spec import IMAGE_REF_PATTERN
from provider.operators.gpu_docker import GpuDockerOperator

log = logging.getLogger(__name__)

with DAG(
    dag_id="train_image_classifier",
    description="Train a digits classifier on the best GPU host and report its test accuracy.",
    schedule=None,
    catchup=False,
    tags=["gpu", "training", "example"],
    render_template_as_native_obj=True,
    params={
        "image": Param(
            "gpu-docker-trainer:0.1",
            type="string",
            pattern=IMAGE_REF_PATTERN,
            description="Docker image of the trainer (a Docker image reference).",
        ),
        "epochs": Param(30, type="integer", minimum=1, maximum=1000),
        "learning_rate": Param(0.1, type="number", exclusiveMinimum=0, maximum=10),
        "hidden_units": Param(64, type="integer", minimum=1, maximum=4096),
        "batch_size": Param(32, type="integer", minimum=1, maximum=4096),
        "seed": Param(0, type="integer", minimum=0),
        "gpus": Param(0, type="integer", minimum=0, maximum=16, description="Whole GPUs to use."),
        "gpu_pool": Param(
            None, type=["null", "string"], minLength=1,
            description="A GPU Docker pool (or host) connection to place the training on; "
            "empty: the default GPU host.",
        ),
        "min_accuracy": Param(
            0.0, type="number", minimum=0, maximum=1,
            description="Fail the report when the test accuracy is below this.",
        ),
    },
) as dag:

    @task
    def prepare() -> list[str]:
        """Turn the run's params into the trainer's command line."""
        p = get_current_context()["params"]
        return [
            "--epochs", str(p["epochs"]),
            "--learning-rate", str(p["learning_rate"]),
            "--hidden-units", str(p["hidden_units"]),
            "--batch-size", str(p["batch_size"]),
            "--seed", str(p["seed"]),
        ]

    train = GpuDockerOperator(
        task_id="train",
        image="{{ params.image }}",
        command=prepare(),
        gpus="{{ params.gpus }}",
        gpu_pool="{{ params.gpu_pool }}",
        cpus=1,
        mem_limit="2g",
    )

    @task
    def report(outcome: dict[str, Any]) -> float:
        """Log the test accuracy and where it was trained; enforce ``min_accuracy``."""
        result = outcome.get("result") or {}
        if "test_accuracy" not in result:
            raise ValueError(f"The trainer wrote no test_accuracy; its result was {result!r}.")
        accuracy = float(result["test_accuracy"])
        log.info(
            "test accuracy %.4f after %s epochs on host %s, GPUs %s, in %.1f s",
            accuracy, result.get("epochs"), outcome["host"], outcome["gpus"] or "none",
            outcome["duration_s"],
        )
        minimum = float(get_current_context()["params"]["min_accuracy"])
        if accuracy < minimum:
            raise ValueError(f"test accuracy {accuracy:.4f} is below min_accuracy {minimum}.")
        return accuracy

    report(train.output)
