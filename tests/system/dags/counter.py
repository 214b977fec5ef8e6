"""Containers that print a numbered line every 50 ms, for the tests of a lost worker: the task
process is killed with SIGKILL and the retry must adopt the container, not start another.
``while_running`` retries at once (the container still runs); ``after_exit`` retries only after
the container has finished (collected, not run again)."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from provider.operators.gpu_docker import GpuDockerOperator

LINES = 400
COUNT = f"i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo $i; sleep 0.05; done"

with DAG(dag_id="gpu_docker_counter", schedule=None, catchup=False, tags=["test"]) as dag:
    for task_id, delay in (("while_running", 1), ("after_exit", 45)):
        GpuDockerOperator(
            task_id=task_id,
            image="gpu-docker-testbox:0.1",
            command=["sh", "-c", COUNT],
            pull="never",
            log_chunk_s=0.5,
            retries=1,
            retry_delay=timedelta(seconds=delay),
        )
