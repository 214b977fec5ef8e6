"""A GPU task on a pool that holds its GPU for a minute, for the GPU cluster page test."""

from __future__ import annotations

from airflow.sdk import DAG

from provider.operators.gpu_docker import GpuDockerOperator

with DAG(dag_id="gpu_cluster_sleeper", schedule=None, catchup=False, tags=["test"]) as dag:
    GpuDockerOperator(
        task_id="train_on_gpu",
        image="gpu-docker-testbox:0.1",
        command=["sh", "-c", "echo started; sleep 60"],
        gpu_pool="gpu_ui_pool",
        gpus=1,
        pull="never",
        retries=0,
    )
