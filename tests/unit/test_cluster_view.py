"""The GPU cluster page's document: holders, staleness, visibility, links, the pool rule."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from provider.reservations.rules import (
    Claim,
    HoldRecord,
    allocation,
    claim_labels,
    hold_labels,
    parse_claim,
    parse_hold,
)
from provider.reservations.strict import CREATED_RESOLUTION_S
from provider.reservations.view import HostView
from provider.scheduling.model import GpuState, NodeState, PlacementRequest
from provider.task_instance import TaskInstanceRef
from provider.ui.cluster_view import (
    WaitingTask,
    cluster_document,
    held_claims,
    merged_pool_ids,
    pool_ids_in_environment,
    task_instance_path,
)

NOW = 1_800_000_000.0
RUN = "manual__2026-11-24T20:27:59.736437+00:00"


def claim(gpu: int, owner: str, *, milli: int = 1000, age_s: float = 5.0, dag_id: str | None = "train",
          map_index: int = -1, cpu_milli: int = 0) -> Claim:
    """A claim as the engine lists it and the pool reader parses it."""
    task = TaskInstanceRef(dag_id, "fit", RUN, map_index, 1) if dag_id else None
    request = PlacementRequest(gpus=1, gpu_milli=milli, cpu_milli=cpu_milli)
    parsed = parse_claim({"Id": f"id-{owner}", "Created": NOW - age_s,
                          "Labels": claim_labels(request, (gpu,), owner, task, deployment="dep")})
    assert parsed is not None
    return parsed


def view(node_: NodeState, claims: tuple[Claim, ...] = (), stale: tuple[Claim, ...] = (),
         holds: tuple[HoldRecord, ...] = (), engine_problem: str | None = None) -> HostView:
    """A host as the pool reader returns it."""
    return HostView(node=allocation(node_, claims).node, measured=node_, claims=claims, stale=stale, holds=holds,
                    engine_problem=engine_problem)


def node(gpus: int = 2) -> NodeState:
    return NodeState(
        name="gpu-a", cpu_milli=8000, memory_mb=32768, memory_available_mb=8192, cpu_utilization_pct=41.26,
        gpus=tuple(GpuState(index=i, model="A100-80GB", memory_total_mb=81920, memory_used_mb=1024 * i,
                            utilization_pct=50.0 * i) for i in range(gpus)),
    )


def document(readings: list[HostView], readable: set[str] = frozenset({"train"}),  # type: ignore[assignment]
             waiting: list[WaitingTask] | None = None, base_path: str = "") -> dict[str, Any]:
    return cluster_document(
        pools={"main": [r.measured.name for r in readings]}, readings=readings, waiting=waiting or [], problems=[],
        readable=readable.__contains__, base_path=base_path, generated_at=datetime(2026, 11, 24, tzinfo=timezone.utc),
    )


@pytest.mark.parametrize(
    ("task", "base", "path"),
    [
        pytest.param(TaskInstanceRef("train", "fit", RUN), "",
                     "/dags/train/runs/manual__2026-11-24T20%3A27%3A59.736437%2B00%3A00/tasks/fit", id="unmapped"),
        pytest.param(TaskInstanceRef("train", "fit", "r1", map_index=3), "", "/dags/train/runs/r1/tasks/fit/mapped/3",
                     id="mapped"),
        pytest.param(TaskInstanceRef("train", "fit", "r1"), "/airflow/", "/airflow/dags/train/runs/r1/tasks/fit",
                     id="base-url-with-path"),
        pytest.param(TaskInstanceRef("a/b", "g.t", "r 1"), "", "/dags/a%2Fb/runs/r%201/tasks/g.t", id="odd-characters"),
    ],
)
def test_task_instance_path(task: TaskInstanceRef, base: str, path: str) -> None:
    assert task_instance_path(base, task) == path


def test_held_claims_name_the_task_and_mark_stale_ones() -> None:
    live, young, gone = claim(1, "live", age_s=500), claim(0, "young", age_s=5, milli=500), claim(0, "gone", age_s=500)
    held = held_claims(view(node(), claims=(live, young), stale=(gone,)))
    assert [(h.claim.gpus, h.claim.owner, h.stale) for h in held] == [((0,), "gone", True), ((0,), "young", False),
                                                                        ((1,), "live", False)]
    assert held[0].claim.task == TaskInstanceRef("train", "fit", RUN, -1, 1)


def test_host_document_has_bars_gpus_and_holders_with_links() -> None:
    doc = document([view(node(), claims=(claim(1, "o1", map_index=2, cpu_milli=1500),))])
    host = doc["hosts"][0]
    assert host["reachable"] is True and host["problem"] is None and host["pools"] == ["main"]
    assert host["cpu"] == {"count": 8, "utilization_pct": 41.3, "reserved_milli": 1500}
    assert host["memory"] == {"used_mb": 24576, "total_mb": 32768, "reserved_mb": 0}
    free, taken = host["gpus"]
    assert free["holders"] == [] and free["reserved_milli"] == 0
    assert taken["utilization_pct"] == 50.0 and taken["memory_used_mb"] == 1024 and taken["reserved_milli"] == 1000
    assert taken["holders"] == [{
        "milli": 1000, "stale": False, "hidden": False,
        "task": {"dag_id": "train", "task_id": "fit", "run_id": RUN, "map_index": 2, "try_number": 1,
                 "url": task_instance_path("", TaskInstanceRef("train", "fit", RUN, 2))},
    }]
    json.dumps(doc)  # the endpoint returns it as JSON


@pytest.mark.parametrize(
    ("dag_id", "readable", "task_named", "hidden"),
    [
        pytest.param("train", {"train"}, True, False, id="readable-dag"),
        pytest.param("secret", {"train"}, False, True, id="other-teams-dag"),
        pytest.param(None, set(), False, False, id="claim-without-task-labels"),
    ],
)
def test_holder_is_named_only_for_readable_dags(dag_id: str | None, readable: set[str], task_named: bool,
                                                hidden: bool) -> None:
    holder = document([view(node(1), claims=(claim(0, "o", dag_id=dag_id),))], readable=readable)["hosts"][0]["gpus"][0]["holders"][0]
    assert (holder["task"] is not None, holder["hidden"]) == (task_named, hidden)


def hold(owner: str, since: float, dag_id: str = "train") -> HoldRecord:
    """A hold as the engine lists it and the pool reader parses it."""
    labels = hold_labels(owner, since, 3600, TaskInstanceRef(dag_id, "fit", RUN, -1, 1), deployment="dep")
    record = parse_hold("gpu-a", {"Id": f"id-{owner}", "Created": since, "Labels": labels})
    assert record is not None
    return record


def test_holds_name_their_task_oldest_first_and_hide_unreadable_dags() -> None:
    holds = (hold("late", NOW - 60, dag_id="secret"), hold("early", NOW - 900))
    doc = document([view(node(1), holds=holds)], readable={"train"})["hosts"][0]["holds"]
    assert doc[0]["task"]["url"] == task_instance_path("", TaskInstanceRef("train", "fit", RUN))
    assert doc[0]["since"] == datetime.fromtimestamp(NOW - 900, tz=timezone.utc).isoformat()
    assert doc[0]["expires"] == datetime.fromtimestamp(NOW + 2700 + CREATED_RESOLUTION_S, tz=timezone.utc).isoformat()
    assert (doc[1]["task"], doc[1]["hidden"]) == (None, True)


def test_shares_of_one_gpu_add_up_and_list_every_holder() -> None:
    gpu = document([view(node(1), claims=(claim(0, "a", milli=300), claim(0, "b", milli=500)))])["hosts"][0]["gpus"][0]
    assert gpu["reserved_milli"] == 800 and [h["milli"] for h in gpu["holders"]] == [300, 500]


@pytest.mark.parametrize(
    ("reading", "problem", "has_metrics"),
    [
        pytest.param(view(NodeState(name="gpu-a", unreachable="agent refused")), "agent refused", False,
                     id="agent-down"),
        pytest.param(view(node(), engine_problem="engine down"), "engine down", True,
                     id="engine-down-metrics-kept"),
        pytest.param(view(NodeState(name="gpu-a", unmeasured="no agent_url")), "no agent_url", False,
                     id="no-agent-capacity-unknown"),
    ],
)
def test_unreachable_host_says_why(reading: HostView, problem: str, has_metrics: bool) -> None:
    host = document([reading])["hosts"][0]
    assert host["reachable"] is (reading.measured.unmeasured is not None) and host["problem"] == problem
    assert (host["cpu"] is not None, bool(host["gpus"])) == (has_metrics, has_metrics)


def test_waiting_rows_link_to_the_task_instance() -> None:
    since = datetime(2026, 11, 24, 20, 0, tzinfo=timezone.utc)
    waiting = [WaitingTask(TaskInstanceRef("train", "wait_gpu", "r1", 0, 1), "up_for_reschedule", "GpuAvailableSensor", since)]
    row = document([], waiting=waiting)["waiting"][0]
    assert row["url"] == "/dags/train/runs/r1/tasks/wait_gpu/mapped/0"
    assert (row["state"], row["operator"], row["since"]) == ("up_for_reschedule", "GpuAvailableSensor",
                                                             "2026-11-24T20:00:00+00:00")


@pytest.mark.parametrize(
    ("environ", "ids"),
    [
        pytest.param({"AIRFLOW_CONN_GPU_POOL_MAIN": json.dumps({"conn_type": "gpu_docker_pool", "extra": {}})},
                     ["gpu_pool_main"], id="json"),
        pytest.param({"AIRFLOW_CONN_EDGE": "gpu-docker-pool://?hosts=a"}, ["edge"], id="uri"),
        pytest.param({"AIRFLOW_CONN_GPU_A": json.dumps({"conn_type": "gpu_docker_host", "host": "unix:///x"}),
                      "AIRFLOW_CONN_BROKEN": "{not json", "PATH": "/usr/bin"}, [], id="hosts-and-noise-ignored"),
    ],
)
def test_pool_ids_in_environment(environ: dict[str, str], ids: list[str]) -> None:
    assert pool_ids_in_environment(environ) == ids


def test_merged_pool_ids_keep_first_seen_order_once() -> None:
    assert merged_pool_ids(["b", "a"], ["a", "c"], ["", "b"]) == ["b", "a", "c"]


def test_a_pool_with_queues_shows_quota_use_borrowing_lending_and_its_line_in_order() -> None:
    """Four GPUs; vision (quota 3) uses 1, nlp (quota 1) uses 3: nlp borrows 2 of vision's idle
    2, which vision lends. Two vision tasks and one nlp task wait: vision's go first (far below
    its share), the higher priority of them first; the nlp task's DAG is not readable."""
    from provider.reservations.rules import line_labels, parse_place_in_line
    from provider.scheduling.queues import Amounts, Waiting, queues_from_extra

    found = queues_from_extra({"queues": {"vision": {"quota": {"gpus": 3}}, "nlp": {"quota": {"gpus": 1}}}}, "p")
    assert found is not None
    queued = [(0, "vision"), (1, "nlp"), (2, "nlp"), (3, "nlp")]
    labels = [claim_labels(PlacementRequest(gpus=1), (g, ), f"o{g}", None, q, deployment="dep") for g, q in queued]
    claims = tuple(c for c in (parse_claim({"Id": f"c{i}", "Created": NOW - 5, "Labels": lab})
                               for i, lab in enumerate(labels)) if c)

    def place(owner: str, queue: str, since: float, priority: int, dag: str) -> Any:
        request = PlacementRequest(gpus=1)
        me = Waiting(owner, queue, priority, since, Amounts.of(request.resources))
        return parse_place_in_line("gpu-a", {"Id": owner, "Created": NOW, "Labels": line_labels(
            me, request, 60, TaskInstanceRef(dag, owner, RUN, -1, 1), "p", deployment="dep")})

    line = (place("n1", "nlp", NOW - 50, 1, "secret"), place("v1", "vision", NOW - 40, 1, "train"),
            place("v2", "vision", NOW - 30, 5, "train"))
    reading = HostView(node=allocation(node(4), claims).node, measured=node(4), claims=claims, line=line)
    doc = cluster_document(pools={"p": ["gpu-a"]}, readings=[reading], waiting=[], problems=[],
                           readable={"train"}.__contains__, base_path="", generated_at=datetime.now(timezone.utc),
                           queues={"p": found[0]})
    queues = doc["pools"][0]["queues"]
    rows = {q["name"]: (q["quota"]["gpus"], q["used"]["gpus"], q["borrowed"]["gpus"], q["lent"]["gpus"], q["waiting"])
            for q in queues["queues"]}
    assert rows == {"vision": (3, 1, 0, 2, 2), "nlp": (1, 3, 2, 0, 1)}
    assert [(r["position"], r["task"] and r["task"]["task_id"], r["hidden"]) for r in queues["line"]] == [
        (1, "v2", False), (2, "v1", False), (3, None, True)]
    assert json.loads(json.dumps(doc)) == doc
