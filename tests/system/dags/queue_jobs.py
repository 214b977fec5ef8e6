"""Jobs of teams sharing one pool through queues, for the queue test of the topology.

``queue_job`` runs one container on the pool's queue ``params.queue`` with ``params.gpus``
GPUs for ``params.seconds`` seconds, waiting for room in the triggerer. ``queue_job_urgent`` is
the same job with a priority weight of 10 (``absolute``: the weight alone), so that within its
queue it goes before the waiting ``queue_job`` runs, whatever their age.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from provider.operators.gpu_docker import GpuDockerOperator


def queue_job(dag_id: str, priority_weight: int) -> None:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        tags=["test"],
        max_active_runs=32,
        params={
            "pool": Param("gpu_pool_teams", type="string"),
            "queue": Param("vision", type="string"),
            "gpus": Param(1, type="integer", minimum=1),
            "seconds": Param(5, type="integer", minimum=0),
        },
    ):
        GpuDockerOperator(
            task_id="job",
            image="gpu-docker-testbox:0.1",
            command=["sh", "-c", "echo started; sleep {{ params.seconds }}; echo done"],
            gpus="{{ params.gpus }}",  # type: ignore[arg-type]  # rendered to a whole number before the run
            gpu_pool="{{ params.pool }}",
            gpu_queue="{{ params.queue }}",
            pull="never",
            wait_for_resources=True,
            deferrable=True,
            poll_interval=2,
            hold_after_s=None,
            priority_weight=priority_weight,
            weight_rule="absolute",
            retries=0,
        )


queue_job("queue_job", 1)
queue_job("queue_job_urgent", 10)
