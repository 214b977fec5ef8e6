"""A long-running container for the kill tests: prints a line, then sleeps."""

from __future__ import annotations

from airflow.sdk import DAG

from provider.operators.gpu_docker import GpuDockerOperator

with DAG(dag_id="gpu_docker_sleeper", schedule=None, catchup=False, tags=["test"]) as dag:
    GpuDockerOperator(
        task_id="sleep",
        image="gpu-docker-testbox:0.1",
        command=["sh", "-c", "echo started; sleep 600"],
        pull="never",
        retries=0,
    )
