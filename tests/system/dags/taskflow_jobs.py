"""Test DAG: TaskFlow functions run in the trainer image on ``gpu_sys_host`` with ``@task.gpu_docker``.

``inputs`` feeds a mapped ``summarise`` through XComs; ``digest`` gets an argument far larger
than an environment variable may be; ``fails`` raises, and its traceback must be in the task
log. The test runs the same functions in-process and compares.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

LARGE = 1_000_000
"""Characters of ``digest``'s argument: far past Linux's 128 KiB limit on one environment string."""

ON_THE_POOL: dict[str, Any] = {
    "image": "gpu-docker-trainer:0.1", "pull": "never", "gpus": 1, "gpu_milli": 500, "gpu_pool": "gpu_sys_host",
    "wait_for_resources": True, "poll_interval": 1, "wait_timeout": 300,
}

with DAG(dag_id="taskflow_on_gpu", schedule=None, catchup=False, tags=["test"]) as dag:

    @task
    def inputs() -> list[dict[str, Any]]:
        return [{"values": [k, k + 1.5, -2.0 * k], "label": f"batch-{k}"} for k in range(3)]

    @task.gpu_docker(**ON_THE_POOL)
    def summarise(values: list[float], label: str, scale: float = 2.0) -> dict[str, Any]:
        import statistics

        print(f"summarising {label}")
        return {"label": label, "mean": statistics.mean(values) * scale, "biggest": max(values),
                "sorted": sorted(values)}

    @task
    def text() -> str:
        return "".join(chr(ord("a") + (i * 7919) % 26) for i in range(LARGE))

    @task.gpu_docker(**ON_THE_POOL)
    def digest(text: str) -> dict[str, Any]:
        import hashlib

        return {"length": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}

    @task.gpu_docker(**ON_THE_POOL, retries=0)
    def fails(batch: int) -> None:
        raise ValueError(f"batch {batch} has no labels")

    summarise.partial(scale=3.0).expand_kwargs(inputs())
    digest(text())
    fails(7)
