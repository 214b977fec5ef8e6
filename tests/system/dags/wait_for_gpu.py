"""Test DAG: every way of waiting for the one GPU of ``gpu_sys_host`` at once.

The test reserves that GPU first, so each task must wait: a sensor in reschedule mode (the
worker slot is given back between pokes), a deferrable sensor and a deferrable waiting
operator (both in the triggerer). When the test releases the GPU, all three go on.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from provider.operators.gpu_docker import GpuDockerOperator
from provider.sensors.gpu_available import GpuAvailableSensor

with DAG(dag_id="wait_for_gpu", schedule=None, catchup=False, tags=["test"]):
    # Airflow 3.3's scheduler can fail a reschedule-mode sensor when the executor's report of
    # one poke arrives after the next poke was queued (apache/airflow#71172); the retry that
    # docs/waiting.md recommends for such sensors covers it.
    GpuAvailableSensor(task_id="reschedule_sensor", gpu_pool="gpu_sys_host", gpus=1, mode="reschedule",
                       poke_interval=2, timeout=300, retries=2, retry_delay=timedelta(seconds=1))
    GpuAvailableSensor(task_id="deferred_sensor", gpu_pool="gpu_sys_host", gpus=1, deferrable=True,
                       poke_interval=1, timeout=300)
    GpuDockerOperator(task_id="waiting_train", image="gpu-docker-testbox:0.1", command=["sh", "-c", "echo trained"],
                      gpus=1, gpu_pool="gpu_sys_host", pull="never", wait_for_resources=True, deferrable=True,
                      poll_interval=1, wait_timeout=300)
