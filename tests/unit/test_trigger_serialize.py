"""The trigger survives the triggerer's round trip: serialize, store, rebuild, same trigger."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from provider.errors import NoRoom
from provider.clients.hosts import HostConfig, TlsFiles, host_from_dict, host_to_dict
from provider.scheduling import PlacementRequest
from provider.reservations.rules import request_document
from provider.triggers.gpu_available import CLASSPATH, GpuAvailableTrigger, waiter_from_event

HOSTS = [
    HostConfig("a", "unix:///run/a.sock", "http://127.0.0.1:9400", "s3cret", MappingProxyType({"zone": "x"})),
    HostConfig("b", "tcp://10.0.0.2:2376", "https://10.0.0.2:9400", None, MappingProxyType({}),
               TlsFiles("ca.pem", "c.pem", "k.pem", False), insecure=True, agent_ca_cert="agent-ca.pem"),
]


@pytest.mark.parametrize("host", HOSTS, ids=lambda h: h.name)
def test_host_round_trip(host: HostConfig) -> None:
    assert host_from_dict(host_to_dict(host)) == host


def test_trigger_serialize_round_trips() -> None:
    request = PlacementRequest(gpus=2, gpu_memory_mb=4000, gpu_model="A100|H100", labels={"zone": "x"})
    trigger = GpuAvailableTrigger(
        hosts=[host_to_dict(h) for h in HOSTS], request=request_document(request), policy="best_fit",
        deadline=1234.5, poll_interval=3.0, waiter={"owner": "o1", "since": 1000.0}, hold_after_s=60.0,
        image="trainer:1", task={"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1, "try_number": 1}, agent_timeout=1.5,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    again = GpuAvailableTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert PlacementRequest(**again.request) == request
    assert [host_from_dict(h) for h in again.hosts] == HOSTS


@pytest.mark.parametrize(
    "event",
    [{"status": "timeout", "message": "Still no room: a: gpu free 0 < 1"}, {"status": "never", "message": "never"}],
)
def test_an_event_without_room_ends_the_wait_with_its_message(event: dict[str, str]) -> None:
    with pytest.raises(NoRoom, match=event["message"]):
        waiter_from_event(event, log=None)
