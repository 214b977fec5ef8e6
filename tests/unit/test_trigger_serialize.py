"""The trigger survives the triggerer's round trip, and its stored kwargs hold no secret.

The kwargs are written to the metadata database and read by the triggerer; they name the
pool by connection ids, and the triggerer looks the connections up itself (with Airflow's
async look-up, which masks the token). Triggers deferred by an earlier version, whose kwargs
held every host whole, still run: their hosts' names are looked up afresh, the stored token is
masked and dropped.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk._shared.secrets_masker import redact
from airflow.sdk.exceptions import TaskDeferred

from provider.clients.hosts import DEFAULT_HOST_CONN_ID
from provider.errors import GpuDockerError, HostConfigError, NoRoom
from provider.scheduling import PlacementRequest
from provider.reservations.rules import request_document
from provider.sensors.gpu_available import GpuAvailableSensor
from provider.triggers.gpu_available import CLASSPATH, GpuAvailableTrigger, waiter_from_event

TOKEN = "agent-token-5f0e1c"  # noqa: S105 - a test secret, asserted absent from the kwargs
TASK = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1, "try_number": 1}


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hosts with an agent token and TLS files, and a pool of them, as ``AIRFLOW_CONN_``
    variables: what the triggerer finds through Airflow's own look-up."""
    hosts = {
        "GPU_A": {"conn_type": "gpu_docker_host", "host": "tcp://gpu-a:2376", "password": TOKEN,
                  "extra": {"agent_url": "https://gpu-a:9400", "tls_ca_cert": "/etc/gpu/ca.pem",
                            "tls_client_cert": "/etc/gpu/cert.pem", "tls_client_key": "/etc/gpu/key.pem"}},
        "GPU_B": {"conn_type": "gpu_docker_host", "host": "unix:///run/b.sock", "password": TOKEN + "b"},
        "GPU_POOL": {"conn_type": "gpu_docker_pool", "extra": {"hosts": ["gpu_a", "gpu_b"]}},
    }
    for name, doc in hosts.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(doc))


def trigger(**kwargs: Any) -> GpuAvailableTrigger:
    base: dict[str, Any] = {"request": request_document(PlacementRequest(gpus=1)), "policy": "least_loaded",
                            "deadline": 1234.5}
    return GpuAvailableTrigger(**{**base, **kwargs})


@pytest.mark.parametrize("pool", ["gpu_pool", ["gpu_a", "gpu_b"], ("gpu_a",), None], ids=["pool", "list", "tuple", "default"])
def test_trigger_serialize_round_trips_with_connection_ids_only(pool: Any) -> None:
    request = PlacementRequest(gpus=2, gpu_memory_mb=4000, gpu_model="A100|H100", labels={"zone": "x"})
    first = trigger(pool=pool, request=request_document(request), policy="best_fit", poll_interval=3.0,
                    waiter={"owner": "o1", "since": 1000.0}, hold_after_s=60.0, image="trainer:1", task=TASK,
                    agent_timeout=1.5)
    classpath, kwargs = first.serialize()
    again = GpuAvailableTrigger(**json.loads(json.dumps(kwargs)))  # stored as JSON, rebuilt by the triggerer
    assert classpath == CLASSPATH
    assert again.serialize() == (classpath, kwargs)
    assert PlacementRequest(**again.request) == request
    assert kwargs["pool"] == (list(pool) if isinstance(pool, tuple) else pool)
    assert "hosts" not in kwargs


@pytest.mark.usefixtures("connections")
@pytest.mark.parametrize("pool", ["gpu_pool", ["gpu_a", "gpu_b"]], ids=["pool-connection", "host-list"])
def test_the_triggerer_looks_the_hosts_up_and_the_token_is_never_in_the_kwargs(pool: Any) -> None:
    """The attack: anyone who reads the trigger table (or a log line of the kwargs) had each
    host's agent token and TLS key path. Now the kwargs have ids; the hosts, token included,
    come from the connections, looked up in the triggerer, and Airflow masks the token."""
    classpath, kwargs = trigger(pool=pool, waiter={"owner": "o1", "since": 1.0}, task=TASK).serialize()
    stored = json.dumps(kwargs)
    assert TOKEN not in stored and "key.pem" not in stored and "ca.pem" not in stored
    hosts = asyncio.run(GpuAvailableTrigger(**json.loads(stored)).pool_hosts())
    assert [(h.name, h.agent_token) for h in hosts] == [("gpu_a", TOKEN), ("gpu_b", TOKEN + "b")]
    assert hosts[0].tls is not None and hosts[0].tls.client_key == "/etc/gpu/key.pem"
    assert TOKEN not in str(redact(f"Authorization: Bearer {TOKEN}"))


@pytest.mark.usefixtures("connections")
def test_a_deferring_sensor_stores_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path the issue names: a deferrable sensor whose first poke finds no room."""
    monkeypatch.setattr(GpuAvailableSensor, "poke", lambda self, context: PokeReturnValue(is_done=False))
    sensor = GpuAvailableSensor(task_id="room", gpu_pool="gpu_pool", deferrable=True, timeout=60)
    assert isinstance(sensor, BaseSensorOperator)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]  # the poke is replaced: nothing reads the context
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == CLASSPATH and kwargs["pool"] == "gpu_pool"
    assert TOKEN not in json.dumps(kwargs)


def test_a_trigger_deferred_by_an_earlier_version_runs_without_its_stored_token(connections: None) -> None:
    """Old rows held ``hosts`` whole; they keep working, by connection id, and the token read from
    the row is masked in every log and not kept."""
    old_token = "old-token-9d41"  # noqa: S105 - the token an old row carries
    legacy = [{"name": "gpu_a", "docker_url": "tcp://gpu-a:2376", "agent_url": None, "agent_token": old_token,
               "labels": {}, "tls": None},
              {"name": "gpu_b", "docker_url": "unix:///run/b.sock", "agent_url": None, "agent_token": None,
               "labels": {}, "tls": None}]
    old = trigger(hosts=legacy)
    assert old.pool == ["gpu_a", "gpu_b"]
    assert old_token not in json.dumps(old.serialize()[1])
    assert "***" in str(redact(f"token {old_token}")) and old_token not in str(redact(f"token {old_token}"))
    hosts = asyncio.run(old.pool_hosts())
    assert [h.agent_token for h in hosts] == [TOKEN, TOKEN + "b"]  # today's connections, not the row's
    default = [{"name": DEFAULT_HOST_CONN_ID, "docker_url": "unix:///var/run/docker.sock"}]
    assert trigger(hosts=default).pool is None  # still the default host, local engine if undefined


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"pool": ""}, "pool must be a connection id", id="empty-id"),
        pytest.param({"pool": []}, "pool must be a connection id", id="empty-list"),
        pytest.param({"pool": ["a", 3]}, "pool must be a connection id", id="non-string-id"),
        pytest.param({"pool": {"name": "a"}}, "pool must be a connection id", id="object"),
        pytest.param({"pool": "a", "hosts": [{"name": "a"}]}, "pool .* or, from an earlier version, hosts", id="both"),
        pytest.param({"hosts": [{"docker_url": "tcp://x:2376", "agent_token": "tok-zz9"}]}, "has no connection id", id="legacy-no-name"),
        pytest.param({"hosts": ["gpu_a"]}, "has no connection id", id="legacy-not-object"),
    ],
)
def test_bad_trigger_kwargs_fail_with_the_field_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(HostConfigError, match=match) as caught:
        trigger(**kwargs)
    assert "tok-zz9" not in str(caught.value)  # the error names the fields, never a token
    assert isinstance(caught.value, GpuDockerError)


def test_a_connection_gone_while_waiting_ends_the_wait_with_its_fix() -> None:
    """The pool's connection was deleted while the task waited: an ``error`` event that names the
    connection and how to define it, raised as HostConfigError when the task resumes."""
    event = asyncio.run(_first(trigger(pool=["no_such_host"])))
    assert event["status"] == "error" and "AIRFLOW_CONN_NO_SUCH_HOST" in event["message"]
    with pytest.raises(HostConfigError, match="no_such_host"):
        waiter_from_event(event, log=None)


async def _first(t: GpuAvailableTrigger) -> dict[str, Any]:
    async for event in t.run():
        return dict(event.payload)
    raise AssertionError("no event")


@pytest.mark.parametrize(
    "event",
    [{"status": "timeout", "message": "Still no room: a: gpu free 0 < 1"}, {"status": "never", "message": "never"}],
)
def test_an_event_without_room_ends_the_wait_with_its_message(event: dict[str, str]) -> None:
    with pytest.raises(NoRoom, match=event["message"]):
        waiter_from_event(event, log=None)


def test_a_killed_waiter_whose_connection_is_gone_gives_up_its_holds_quietly() -> None:
    """Its holds lapse on their own; the kill must not fail for a connection removed meanwhile."""
    waiting = trigger(pool=["no_such_host"], waiter={"owner": "o1", "since": 1.0})
    asyncio.run(waiting.on_kill())
    assert waiting._hosts is None  # nothing resolved, nothing lifted, nothing raised
