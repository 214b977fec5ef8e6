"""What a SIGTERM means to a training task: only Airflow's record of the try decides a kill."""

from __future__ import annotations

import time

import pytest

from provider.task_instance import TaskInstanceRef
from provider.operators.interrupt import airflow_state, state_key, stopped_by_decision


@pytest.mark.parametrize(
    ("state", "kill"),
    [("failed", True), ("success", True), ("restarting", True), ("", True), ("up_for_retry", True),
     ("running", False), (None, False)],
    ids=["marked-failed", "marked-success", "cleared-while-running", "cleared", "retry-recorded", "running", "unknown"],
)
def test_only_a_try_airflow_no_longer_counts_running_was_killed(state: str | None, kill: bool) -> None:
    assert stopped_by_decision(state) is kill


def test_mapped_task_instances_are_named_with_their_index() -> None:
    assert state_key("train", -1) == "train" and state_key("train", 3) == "train_3"


def test_outside_a_task_process_airflow_cannot_say_and_the_answer_comes_at_once() -> None:
    began = time.monotonic()
    assert airflow_state(TaskInstanceRef("d", "t", "r"), timeout_s=5) is None
    assert time.monotonic() - began < 5
