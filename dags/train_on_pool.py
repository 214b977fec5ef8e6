"""Train many image classifiers at once across a pool of GPU hosts: plan -> train (mapped).

Each entry of ``runs`` becomes one mapped ``train`` task, placed on the pool by utilisation.
When the pool is full a task waits in the triggerer (``deferrable=True``) without holding a
worker slot, and starts as soon as its GPUs are free. ``gpus`` asks for whole GPUs;
``gpu_milli`` below 1000 asks for a share of one GPU (500 = half). The conf of a run::

    {"pool": "gpu_pool", "runs": [{"gpus": 1, "epochs": 40}, {"gpu_milli": 500, "epochs": 20}]}
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from provider.operators.gpu_docker import GpuDockerOperator
from provider.scheduling.model import MILLI_PER_GPU

RUN_SCHEMA = {
    "type": "object",
    "properties": {
        "gpus": {"type": "integer", "minimum": 0, "maximum": 16},
        "gpu_milli": {"type": "integer", "minimum": 1, "maximum": MILLI_PER_GPU},
        "epochs": {"type": "integer", "minimum": 1, "maximum": 10000},
        "seed": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}

with DAG(
    dag_id="train_on_pool",
    description="Train several classifiers in parallel, each on the best GPUs of a pool.",
    schedule=None,
    catchup=False,
    max_active_tasks=64,
    tags=["gpu", "training", "example", "pool"],
    params={
        "pool": Param("gpu_pool", type="string", description="Connection id of a GPU Docker pool."),
        "image": Param("gpu-docker-trainer:0.1", type="string", description="Docker image of the trainer."),
        "runs": Param(
            [{"gpus": 1, "epochs": 40}, {"gpus": 2, "epochs": 40}, {"gpu_milli": 500, "epochs": 40},
             {"gpus": 1, "epochs": 40}, {"gpu_milli": 500, "epochs": 40}, {"gpus": 1, "epochs": 40}],
            type="array", items=RUN_SCHEMA, minItems=1, maxItems=500,
            description="One training run per entry.",
        ),
    },
) as dag:

    @task
    def plan() -> list[dict[str, Any]]:
        """One set of operator arguments per run: its GPUs and its trainer command line."""
        runs = get_current_context()["params"]["runs"]
        return [
            {
                "gpus": 1 if run.get("gpu_milli", MILLI_PER_GPU) < MILLI_PER_GPU else run.get("gpus", 1),
                "gpu_milli": run.get("gpu_milli", MILLI_PER_GPU),
                "command": ["--epochs", str(run.get("epochs", 30)), "--seed", str(run.get("seed", k))],
            }
            for k, run in enumerate(runs)
        ]

    GpuDockerOperator.partial(
        task_id="train",
        image="{{ params.image }}",
        gpu_pool="{{ params.pool }}",
        cpus=0.5,
        mem_limit="1g",
        wait_for_resources=True,
        deferrable=True,
        poll_interval=2,
        hold_after_s=120,
    ).expand_kwargs(plan())
