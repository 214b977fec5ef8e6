"""The operator's placement metrics reach a StatsD server through the task SDK's ``Stats``: the one
Airflow's task runner sets up in a task's process from ``[metrics]``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
from airflow.sdk._shared.observability.metrics.statsd_logger import get_statsd_logger
from airflow.sdk.observability.stats import Stats
from statsd import StatsClient

from provider.clients.hosts import HostConfig
from provider.operators.placement_stats import PlacementStats
from provider.scheduling.waiting import Waiter
from provider.stat_names import CLAIM_RETRIES, PLACEMENT_LATENCY, ROOM_WAIT
from provider.task_instance import TaskInstanceRef
from tests.conftest import eventually
from tests.statsd_receiver import Metric, StatsdReceiver

TAGS = {"dag_id": "train", "task_id": "fit", "pool": "gpu_pool_main", "queue": "vision_team"}


def set_up_stats(factory: Callable[[], Any]) -> None:
    """What Airflow's task runner does when a task's process starts."""
    try:
        Stats.initialize(factory=factory, export_legacy_names=False)
    except TypeError:  # Airflow 3.2: no legacy names to choose
        Stats.initialize(factory=factory)


@pytest.fixture
def receiver() -> Iterator[StatsdReceiver]:
    """The task SDK's ``Stats`` sending to a StatsD server here, with InfluxDB tags
    (``statsd_on``, ``statsd_influxdb_enabled``); afterwards, sending nothing again."""
    with StatsdReceiver() as statsd:
        set_up_stats(lambda: get_statsd_logger(stats_class=StatsClient, host="127.0.0.1", port=statsd.port,
                                               prefix="airflow", influxdb_tags_enabled=True,
                                               statsd_influxdb_enabled=True))
        try:
            yield statsd
        finally:
            set_up_stats(NoStatsLogger)


def arrived(receiver: StatsdReceiver, name: str) -> Metric:
    [metric] = eventually(lambda: receiver.metrics(f"airflow.{name}"), 5, what=f"{name} at the StatsD server")
    return metric


def placement_stats() -> PlacementStats:
    return PlacementStats(TaskInstanceRef("train", "fit", "manual__2026-12-07T20:00:00+00:00"), "gpu_pool_main",
                          "vision team")


def test_a_task_that_waited_and_lost_a_claim(receiver: StatsdReceiver) -> None:
    stats = placement_stats()
    pull = stats.asking(lambda host: time.sleep(0.3))  # the image pull on the chosen host: not placement
    pull(HostConfig(name="gpu_a", docker_url="unix:///var/run/docker.sock"))
    stats.claim_lost("gpu_a")
    stats.placed("gpu_b", Waiter("0123456789abcdef", time.time() - 5.0))

    lost, latency, waited = (arrived(receiver, name) for name in (CLAIM_RETRIES, PLACEMENT_LATENCY, ROOM_WAIT))
    assert (lost.kind, lost.value, lost.tags) == ("c", 1.0, {**TAGS, "host": "gpu_a"})
    assert (latency.kind, waited.kind) == ("ms", "ms")
    assert latency.tags == waited.tags == {**TAGS, "host": "gpu_b"}
    assert 0 <= latency.value < 100
    assert 5000 <= waited.value < 6000


def test_a_task_that_fitted_at_once_sends_no_wait(receiver: StatsdReceiver) -> None:
    stats = placement_stats()
    stats.asking(lambda host: None)
    stats.placed("gpu_b", None)
    stats.claim_lost("after")  # sent last: once it is here, everything sent before it is too
    arrived(receiver, CLAIM_RETRIES)
    assert arrived(receiver, PLACEMENT_LATENCY).tags == {**TAGS, "host": "gpu_b"}
    assert receiver.metrics(f"airflow.{ROOM_WAIT}") == []
