"""The metric names are valid for every backend Airflow's ``Stats`` sends to, and tags never cost a metric."""

from __future__ import annotations

import pytest
from airflow._shared.observability.metrics.statsd_logger import get_statsd_logger
from airflow._shared.observability.metrics.validators import stat_name_default_handler, stat_name_otel_handler
from statsd import StatsClient

from provider.stat_names import CLAIM_RETRIES, NAMES, PREFIX, stat_tags
from tests.conftest import eventually
from tests.statsd_receiver import StatsdReceiver


@pytest.mark.parametrize("name", NAMES)
def test_every_name_is_valid_for_statsd_and_opentelemetry_under_airflows_prefix(name: str) -> None:
    assert name.startswith(f"{PREFIX}.")
    assert stat_name_default_handler(name) == name
    assert stat_name_otel_handler("airflow", name) == f"airflow.{name}"


def test_names_are_distinct() -> None:
    assert len(set(NAMES)) == len(NAMES)


@pytest.mark.parametrize(
    ("values", "tags"),
    [
        pytest.param({"dag_id": "train", "task_id": "fit.step-1"}, {"dag_id": "train", "task_id": "fit.step-1"},
                     id="airflow-ids-kept"),
        pytest.param({"pool": None, "queue": "", "host": "gpu_a"}, {"host": "gpu_a"}, id="no-value-no-tag"),
        pytest.param({"queue": "vision team,a=b:c"}, {"queue": "vision_team_a_b_c"}, id="queue-name-made-safe"),
    ],
)
def test_stat_tags(values: dict[str, str | None], tags: dict[str, str]) -> None:
    assert stat_tags(**values) == tags


def test_a_metric_with_a_freely_named_queue_reaches_statsd_with_influxdb_tags() -> None:
    """Airflow's own StatsD logger, as ``[metrics] statsd_influxdb_enabled`` sets it up, drops a
    metric whose tags have a character it does not allow; :func:`stat_tags` keeps it."""
    with StatsdReceiver() as receiver:
        logger = get_statsd_logger(stats_class=StatsClient, host="127.0.0.1", port=receiver.port, prefix="airflow",
                                   influxdb_tags_enabled=True, statsd_influxdb_enabled=True)
        logger.incr(CLAIM_RETRIES, tags={"queue": "team a"})  # as given: dropped, Airflow logs why
        logger.incr(CLAIM_RETRIES, tags=stat_tags(queue="team a"))
        [metric] = eventually(lambda: receiver.metrics(f"airflow.{CLAIM_RETRIES}"), 5, what="the metric at the receiver")
    assert (metric.tags, metric.value, metric.kind) == ({"queue": "team_a"}, 1.0, "c")
