"""Long-running containers for the kill tests: each prints a line, then sleeps.

``gpu_docker_sleeper`` asks for nothing, so it makes no claim. ``gpu_docker_gpu_sleeper`` takes
the one GPU of ``gpu_sys_host`` with a claim, for the test of the orphan sweep, which must
release the claim with the container. ``gpu_docker_timeout`` sleeps past its
``execution_timeout``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from provider.operators.gpu_docker import GpuDockerOperator


def sleeper(dag_id: str, task_id: str, **kwargs: Any) -> None:
    """A DAG of one task whose container prints ``started`` and sleeps for ten minutes."""
    with DAG(dag_id=dag_id, schedule=None, catchup=False, tags=["test"]):
        GpuDockerOperator(task_id=task_id, image="gpu-docker-testbox:0.1",
                          command=["sh", "-c", "echo started; sleep 600"], pull="never", retries=0, **kwargs)


sleeper("gpu_docker_sleeper", "sleep")
sleeper("gpu_docker_gpu_sleeper", "sleep_on_gpu", gpus=1, gpu_pool="gpu_sys_host")
sleeper("gpu_docker_timeout", "sleep_too_long", execution_timeout=timedelta(seconds=15))
