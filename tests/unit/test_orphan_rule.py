"""Which task containers the orphan sweep stops: the rule, the labels it reads, the setting."""

from __future__ import annotations

import pytest
from airflow.exceptions import AirflowConfigException

from provider.reservations.orphans import MISSING, orphan_reason
from provider.reservations.sweeper import DEFAULT_INTERVAL_S
from provider.task_instance import MAP_INDEX_LABEL, RUN_ID_LABEL, TaskInstanceRef
from provider.ui.orphan_app import sweep_interval

ENDED = ["success", "failed", "skipped", "upstream_failed", "removed", "restarting"]
A_TRY_IS_COMING = ["running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "deferred", None]


@pytest.mark.parametrize("state", ENDED)
def test_a_container_whose_task_instance_ended_is_an_orphan(state: str) -> None:
    reason = orphan_reason(True, True, state)
    assert reason is not None and reason.startswith("its task")


@pytest.mark.parametrize("state", A_TRY_IS_COMING)
def test_a_container_whose_task_instance_runs_or_will_run_again_is_kept(state: str | None) -> None:
    assert orphan_reason(True, True, state) is None


def test_a_container_whose_task_instance_is_gone_is_an_orphan() -> None:
    assert orphan_reason(True, False, None) == MISSING


@pytest.mark.parametrize("state", [*ENDED, None])
def test_a_container_of_a_dag_this_deployment_does_not_know_is_never_judged(state: str | None) -> None:
    assert orphan_reason(False, state is not None, state) is None  # another Airflow may share the host


def test_a_state_this_rule_does_not_know_keeps_the_container() -> None:
    assert orphan_reason(True, True, "a_state_of_a_later_airflow") is None


def test_the_reason_says_whether_a_retry_could_still_come() -> None:
    assert "no retry to come" in (orphan_reason(True, True, "failed") or "")
    assert "cleared" in (orphan_reason(True, True, "restarting") or "")


def test_the_task_instance_is_read_from_the_container_labels() -> None:
    labels = TaskInstanceRef("train", "fit", "manual__2026-11-26T10:00:00+00:00", 7, 3).to_labels()
    assert TaskInstanceRef.from_labels(labels) == TaskInstanceRef("train", "fit", "manual__2026-11-26T10:00:00+00:00", 7)
    assert TaskInstanceRef.from_labels(labels).describe() == "task train.fit of run manual__2026-11-26T10:00:00+00:00, map index 7"


def test_labels_that_do_not_name_a_task_instance_are_never_judged() -> None:
    labels = TaskInstanceRef("train", "fit", "r1", -1, 1).to_labels()
    assert TaskInstanceRef.from_labels({**labels, MAP_INDEX_LABEL: "x"}) is None
    assert TaskInstanceRef.from_labels({k: v for k, v in labels.items() if k != RUN_ID_LABEL}) is None


def test_the_sweep_interval_defaults_to_30_s_and_0_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__GPU_DOCKER__ORPHAN_SWEEP_INTERVAL", raising=False)
    assert sweep_interval() == DEFAULT_INTERVAL_S == 30
    monkeypatch.setenv("AIRFLOW__GPU_DOCKER__ORPHAN_SWEEP_INTERVAL", "0")
    assert sweep_interval() == 0


def test_a_negative_sweep_interval_is_refused_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__GPU_DOCKER__ORPHAN_SWEEP_INTERVAL", "-5")
    with pytest.raises(AirflowConfigException, match="orphan_sweep_interval is -5: set it to"):
        sweep_interval()
