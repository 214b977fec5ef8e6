"""The GPU cluster page's metadata queries, on Airflow's own schema in an in-memory SQLite.

No Airflow runs here: the tables are created from Airflow's models, so the queries meet the
real column names and types, and rows are inserted as the scheduler would leave them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.models.connection import Connection
from airflow.models.taskinstance import TaskInstance
from sqlalchemy import insert
from sqlalchemy.orm import Session

from provider.ui.cluster_sources import PoolCache, PoolSet, pool_ids, waiting_tasks
from provider.task_instance import TaskInstanceRef

T0 = datetime(2026, 11, 24, 20, 0, tzinfo=timezone.utc)


def ti(task_id: str, state: str, operator: str, *, dag_id: str = "train", map_index: int = -1,
       minutes: int = 0) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(), "dag_id": dag_id, "task_id": task_id, "run_id": "r1", "map_index": map_index,
        "state": state, "operator": operator, "try_number": 1, "pool": "default_pool", "pool_slots": 1,
        "start_date": T0 + timedelta(minutes=minutes), "span_status": "not_started",
    }


def test_waiting_tasks_are_gpu_tasks_that_wait_in_readable_dags(session: Session) -> None:
    session.execute(insert(TaskInstance.__table__), [
        ti("deferred_op", "deferred", "GpuDockerOperator", minutes=2),
        ti("sensor", "up_for_reschedule", "GpuAvailableSensor", map_index=3, minutes=1),
        ti("running_op", "running", "GpuDockerOperator"),
        ti("other_deferred", "deferred", "HttpSensor"),
        ti("secret", "deferred", "GpuDockerOperator", dag_id="secret_dag"),
    ])
    waiting = waiting_tasks(session, {"train"})
    assert [(w.task, w.state, w.operator) for w in waiting] == [
        (TaskInstanceRef("train", "sensor", "r1", 3, 1), "up_for_reschedule", "GpuAvailableSensor"),
        (TaskInstanceRef("train", "deferred_op", "r1", -1, 1), "deferred", "GpuDockerOperator"),
    ]
    assert waiting[0].since == T0 + timedelta(minutes=1)
    assert waiting_tasks(session, set()) == []


def test_pool_ids_come_from_the_database_and_the_environment(session: Session) -> None:
    session.execute(insert(Connection.__table__), [
        {"conn_id": "pool_in_db", "conn_type": "gpu_docker_pool"},
        {"conn_id": "host_in_db", "conn_type": "gpu_docker_host"},
    ])
    environ = {"AIRFLOW_CONN_POOL_IN_ENV": json.dumps({"conn_type": "gpu_docker_pool"}),
               "AIRFLOW_CONN_POOL_IN_DB": json.dumps({"conn_type": "gpu_docker_pool"})}
    assert pool_ids(session, environ) == ["pool_in_db", "pool_in_env"]


def test_pools_named_in_the_config_are_shown_too(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    session.execute(insert(Connection.__table__), [{"conn_id": "pool_in_db", "conn_type": "gpu_docker_pool"}])
    monkeypatch.setenv("AIRFLOW__GPU_DOCKER__CLUSTER_POOLS", "pool_in_vault, pool_in_db")
    assert pool_ids(session, {}) == ["pool_in_db", "pool_in_vault"]


def test_pool_cache_reuses_resolved_pools_until_they_expire_or_change() -> None:
    now = [0.0]
    resolved: list[tuple[str, ...]] = []

    def resolve(ids: Sequence[str]) -> PoolSet:
        resolved.append(tuple(ids))
        return PoolSet(pools={i: [] for i in ids})

    cache = PoolCache(ttl_s=30, clock=lambda: now[0])
    first = cache.get(["a"], resolve)
    now[0] = 29.0
    assert cache.get(["a"], resolve) is first
    assert cache.get(["a", "b"], resolve).pools == {"a": [], "b": []}  # a new pool shows at once
    now[0] = 60.0
    cache.get(["a", "b"], resolve)
    assert resolved == [("a",), ("a", "b"), ("a", "b")]
