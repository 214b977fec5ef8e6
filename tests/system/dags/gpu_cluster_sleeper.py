"""Two DAGs on one pool for the GPU cluster page test.

``gpu_cluster_sleeper`` holds one GPU for five minutes (the test marks it failed sooner).
``gpu_cluster_waiter``, triggered while it runs, asks for both GPUs of the host: it defers, and
holds the host at once (``hold_after_s=0``) so the page has a waiting task and a hold to show.
"""

from __future__ import annotations

from airflow.sdk import DAG

from provider.operators.gpu_docker import GpuDockerOperator

COMMON = {"image": "gpu-docker-testbox:0.1", "gpu_pool": "gpu_ui_pool", "pull": "never", "retries": 0}

with DAG(dag_id="gpu_cluster_sleeper", schedule=None, catchup=False, tags=["test"]):
    GpuDockerOperator(task_id="train_on_gpu", command=["sh", "-c", "echo started; sleep 300"], gpus=1, **COMMON)

with DAG(dag_id="gpu_cluster_waiter", schedule=None, catchup=False, tags=["test"]):
    GpuDockerOperator(
        task_id="train_on_two",
        command=["sh", "-c", "echo got two GPUs"],
        gpus=2,
        wait_for_resources=True,
        deferrable=True,
        hold_after_s=0,
        poll_interval=2,
        wait_timeout=600,
        **COMMON,
    )
