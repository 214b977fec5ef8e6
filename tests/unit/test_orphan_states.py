"""The orphan sweep's look-up of task-instance states, on Airflow's own schema in an in-memory
SQLite: the query meets the real column names and types, rows are as the scheduler leaves them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from airflow.models.dag import DagModel
from airflow.models.taskinstance import TaskInstance
from sqlalchemy import insert
from sqlalchemy.orm import Session

from provider.task_instance import TaskInstanceRef
from provider.ui import orphan_app
from provider.ui.orphan_app import task_states


def ti(task_id: str, state: str | None, *, run_id: str = "r1", map_index: int = -1) -> dict[str, Any]:
    return {"id": uuid.uuid4(), "dag_id": "train", "task_id": task_id, "run_id": run_id, "map_index": map_index,
            "state": state, "try_number": 1, "pool": "default_pool", "pool_slots": 1, "span_status": "not_started"}


def test_each_existing_task_instance_answers_its_state_and_a_missing_one_is_left_out(session: Session) -> None:
    session.execute(insert(DagModel.__table__), [{"dag_id": "train", "bundle_name": "dags-folder", "max_active_tasks": 16,
                                                   "max_consecutive_failed_dag_runs": 0,
                                                   "has_task_concurrency_limits": False}])
    session.execute(insert(TaskInstance.__table__), [
        ti("fit", "failed"), ti("fit", "running", run_id="r2"), ti("mapped", "success", map_index=3),
        ti("mapped", "up_for_retry", map_index=4), ti("fresh", None),
    ])
    keys = [TaskInstanceRef("train", "fit", "r1", -1), TaskInstanceRef("train", "fit", "r2", -1), TaskInstanceRef("train", "mapped", "r1", 3),
            TaskInstanceRef("train", "fresh", "r1", -1), TaskInstanceRef("train", "fit", "deleted_run", -1),
            TaskInstanceRef("train", "mapped", "r1", 5)]
    answer = task_states(session, keys + [TaskInstanceRef("another_deployments_dag", "fit", "r1", -1)])
    assert answer.states == {
        TaskInstanceRef("train", "fit", "r1", -1): "failed", TaskInstanceRef("train", "fit", "r2", -1): "running",
        TaskInstanceRef("train", "mapped", "r1", 3): "success", TaskInstanceRef("train", "fresh", "r1", -1): None,
    }
    assert answer.dags == {"train"}


def test_many_task_instances_are_asked_for_in_several_queries(session: Session, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr(orphan_app, "KEYS_PER_QUERY", 2)
    session.execute(insert(TaskInstance.__table__), [ti("fit", "failed", map_index=i) for i in range(5)])
    keys = [TaskInstanceRef("train", "fit", "r1", i) for i in range(6)]
    assert task_states(session, keys).states == {TaskInstanceRef("train", "fit", "r1", i): "failed" for i in range(5)}
