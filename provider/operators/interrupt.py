"""What a SIGTERM to a training task means: a user's kill, or a worker going away.

Airflow's task runner calls ``on_kill`` for every SIGTERM the task process gets, whoever sent
it: the supervisor after the api-server said the try must stop ("mark failed", "clear"), the
supervisor passing on its own SIGTERM when the worker shuts down (a Celery cold shutdown, a
LocalExecutor stopped with its scheduler), a service manager or Kubernetes stopping the
worker, or somebody by hand. The process cannot see the sender, so the operator asks Airflow
instead: only a try that Airflow no longer counts as running was stopped by somebody's
decision. Any other SIGTERM is the worker going away, which must not cost hours of training.
"""

from __future__ import annotations

import threading
from typing import Any

from provider.task_instance import TaskInstanceRef

STATE_TIMEOUT_S = 10.0
"""Seconds to wait for Airflow's answer. The question goes through the task's channel to its
supervisor, whose lock the interrupted main thread may hold: then no answer comes."""


def state_key(task_id: str, map_index: int) -> str:
    """How Airflow's task-states answer names a task instance (mapped ones with their index)."""
    return task_id if map_index < 0 else f"{task_id}_{map_index}"


def airflow_state(task: TaskInstanceRef, timeout_s: float = STATE_TIMEOUT_S) -> str | None:
    """The state Airflow records for ``task``: "" for one without a
    state (cleared); None when Airflow cannot say in ``timeout_s`` (the api-server does not
    answer, or the channel is busy)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            answer.update(RuntimeTaskInstance.get_task_states(
                dag_id=task.dag_id, task_ids=[task.task_id], run_ids=[task.run_id], map_index=task.map_index,
            ))
        except Exception:  # noqa: BLE001 - no answer is an answer: "cannot say"
            return

    asker = threading.Thread(target=ask, name="ask-task-state", daemon=True)
    asker.start()
    asker.join(timeout_s)
    states = answer.get(task.run_id) or {}
    key = state_key(task.task_id, task.map_index)
    if key not in states:
        return None
    state = states[key]
    return str(getattr(state, "value", state) or "")


def stopped_by_decision(state: str | None) -> bool:
    """True when Airflow's record shows somebody decided this try must end: any state but
    running. Unknown (None) is not a decision: the container stays for the next try, and the
    orphan sweep removes it if none comes."""
    return state is not None and state != "running"
