"""One trainer run per DAG run, for ``bench/cluster.py``: where it goes is the run's conf.

``pool`` is a pool connection (placement by ``policy`` on the workers) or one host connection
(a placement the benchmark chose itself: round-robin or seeded random). Every run asks for one
GPU and reserves no CPU, as the example pipeline does, and waits for room in the triggerer when
its host or pool is full, so waiting is part of the job's completion time. The trainer keeps to
one thread: a job then needs at most one core, more than a host's quota gives it, and its speed
is its share of that quota, on which the benchmark's capacity rests.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from provider.operators.gpu_docker import GpuDockerOperator

HIDDEN_UNITS = 1024
"""Wide enough that an epoch is tens of milliseconds of CPU, so a run of a few hundred epochs
prints a few hundred lines and the worker streaming them stays a small share of the cores."""

with DAG(
    dag_id="bench_cluster_job",
    description="One trainer run placed on a pool by a policy, or on one host.",
    schedule=None,
    catchup=False,
    max_active_runs=256,  # every arrival runs at once; Airflow's default of 16 would queue them
    max_active_tasks=256,
    tags=["bench"],
    params={
        "pool": Param("gpu_pool", type="string", description="Pool or host connection id."),
        "policy": Param("least_loaded", type="string", description="Placement policy on a pool."),
        "epochs": Param(120, type="integer", minimum=1),
        "seed": Param(0, type="integer", minimum=0),
    },
):
    GpuDockerOperator(
        task_id="train",
        image="gpu-docker-trainer:0.1",
        command=["--epochs", "{{ params.epochs }}", "--hidden-units", str(HIDDEN_UNITS),
                 "--seed", "{{ params.seed }}"],
        environment={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        gpus=1,
        mem_limit="1g",
        gpu_pool="{{ params.pool }}",
        placement_policy="{{ params.policy }}",
        pull="never",
        retries=0,
        wait_for_resources=True,
        deferrable=True,
        poll_interval=2,
        hold_after_s=120,
    )
