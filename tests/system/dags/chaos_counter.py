"""Counting containers on a GPU pool, for the chaos test of the Celery topology: plan -> count (mapped).

Each entry of ``runs`` becomes one mapped ``count`` task whose container prints ``1`` to
``lines``, one number every ``interval_s``, on a whole GPU or a share of one (``gpu_milli``).
Every number once and in order is what the archive must hold however often the task's worker
is killed, so the test knows each task's full output without reading the container. Both tasks
retry soon (``default_args``), and a retry of ``count`` adopts the container of the try whose
worker was lost (``reattach``, the operator's default).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from provider.operators.gpu_docker import GpuDockerOperator
from provider.scheduling.model import MILLI_PER_GPU

RUN_SCHEMA = {
    "type": "object",
    "properties": {
        "lines": {"type": "integer", "minimum": 1},
        "interval_s": {"type": "number", "minimum": 0},
        "gpu_milli": {"type": "integer", "minimum": 1, "maximum": MILLI_PER_GPU},
    },
    "required": ["lines", "interval_s"],
    "additionalProperties": False,
}


def count(lines: int, interval_s: float) -> list[str]:
    """The command that prints 1 to ``lines``, one every ``interval_s`` seconds."""
    return ["sh", "-c", f"i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo $i; sleep {interval_s}; done"]


with DAG(
    dag_id="gpu_chaos_counter",
    schedule=None,
    catchup=False,
    tags=["test"],
    default_args={"retries": 4, "retry_delay": timedelta(seconds=2)},
    params={
        "pool": Param("gpu_pool", type="string"),
        "runs": Param([{"lines": 300, "interval_s": 0.1}], type="array", items=RUN_SCHEMA, minItems=1),
    },
) as dag:

    @task
    def plan() -> list[dict[str, Any]]:
        """One set of operator arguments per run: its GPU share and its command."""
        return [
            {"gpu_milli": run.get("gpu_milli", MILLI_PER_GPU), "command": count(run["lines"], run["interval_s"])}
            for run in get_current_context()["params"]["runs"]
        ]

    GpuDockerOperator.partial(
        task_id="count",
        image="gpu-docker-testbox:0.1",
        gpus=1,
        gpu_pool="{{ params.pool }}",
        pull="never",
        wait_for_resources=True,
        deferrable=True,
        poll_interval=2,
    ).expand_kwargs(plan())
