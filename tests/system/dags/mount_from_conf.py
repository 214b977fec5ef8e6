"""A DAG that takes its bind mount from ``dag_run.conf``: what a REST caller may then ask for.

The system test triggers it with the Docker engine's own socket as the source, the attack the
mount policy stops (docs/security/edge.md), and with a named volume, which runs.
"""

from __future__ import annotations

from airflow.sdk import DAG

from provider.operators.gpu_docker import GpuDockerOperator

with DAG(dag_id="gpu_docker_mount_from_conf", schedule=None, catchup=False, tags=["test"]):
    GpuDockerOperator(task_id="list_data", image="gpu-docker-testbox:0.1", command=["ls", "/data"], pull="never",
                      retries=0, mounts=["{{ dag_run.conf['mount'] }}"])
