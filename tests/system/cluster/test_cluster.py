"""The provider across Celery workers and GPU hosts on a network (tools/cluster/topology.py).

The package's topology (conftest.py) serves every test here: a control machine, 3 Celery
workers and 3 GPU hosts with 4 simulated GPUs each, every machine a network namespace.
What is checked comes from the engines and from Airflow's REST API, never from the provider's
own records: the engines' event streams and each started container's device request ids and
GPU share say whether a GPU was ever double-booked.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from provider.labels import CLAIM_LABEL, HOLD_LABEL
from tests.conftest import archived_stdout, eventually
from tests.system.cluster.observe import EngineEvents, archive_objects, overbooked
from tools.cluster.topology import POOL, Cluster

pytestmark = pytest.mark.system

DAG_ID = "train_on_pool"
LONG_EPOCHS = 400  # map index 0 trains long enough to read its log while it runs
MIX = ({"gpus": 1}, {"gpus": 2}, {"gpu_milli": 500})
TASKS = 36


def test_mapped_training_runs_across_workers_and_hosts_without_double_booking(
    cluster: Cluster, events: EngineEvents
) -> None:
    runs = [{**MIX[k % 3], "epochs": LONG_EPOCHS if k == 0 else 20, "seed": k} for k in range(TASKS)]
    demand = sum(r.get("gpus", 1) * r.get("gpu_milli", 1000) for r in runs) / 1000
    assert demand > cluster.spec.hosts * cluster.spec.gpus_per_host  # more than the pool holds at once
    run_id = cluster.api.trigger(DAG_ID, {"pool": POOL, "runs": runs})

    # The long task's log, read over the REST API while it runs (the api-server fetches it from
    # the worker that runs it).
    live = ""

    def live_log() -> str:
        nonlocal live
        mapped = cluster.api.mapped_instances(DAG_ID, run_id, "train")  # none until `plan` has run
        first = mapped[0] if mapped else {}
        if first.get("state") == "running":
            live = cluster.api.task_log_text(DAG_ID, run_id, "train", map_index=0)
        elif first.get("state") in ("success", "failed"):
            raise AssertionError(f"no training lines in the running task's log: {live[-2000:]!r}")
        return live

    eventually(live_log, 600, interval_s=1, what="training lines in the running task's log",
               until=lambda text: "epoch 2/" in text)

    assert cluster.api.wait_for_run(DAG_ID, run_id, timeout=1200) == "success"
    instances = cluster.api.mapped_instances(DAG_ID, run_id, "train")
    assert [ti["state"] for ti in instances] == ["success"] * TASKS
    outcomes = [cluster.api.xcom(DAG_ID, run_id, "train", map_index=k) for k in range(TASKS)]
    assert len({ti["hostname"] for ti in instances}) >= 2, [ti["hostname"] for ti in instances]
    assert {o["host"] for o in outcomes} == {f"gpu_{h}" for h in cluster.hosts}

    # After the end the log is still there, whole. The worker uploads it to the store just after
    # it reports the task's end, so the store may hold only the triggerer's part for a moment.
    done = eventually(lambda: cluster.api.task_log_text(DAG_ID, run_id, "train", map_index=0), 60, interval_s=1,
                      what="the whole log of the long task", until=lambda text: f"epoch {LONG_EPOCHS}/{LONG_EPOCHS}" in text)
    assert "test_accuracy=" in done, done[-2000:]

    # The engines' own account: one container per task, and no GPU ever over-booked.
    seen = events.of_run(run_id)
    assert sorted(s.map_index for s in seen) == list(range(TASKS))
    assert all(s.die_ns is not None for s in seen)
    for s, run in zip(sorted(seen, key=lambda s: s.map_index), runs):
        assert len(s.gpus) == run.get("gpus", 1) and s.milli == run.get("gpu_milli", 1000), (s, run)
    assert overbooked(seen) == []

    # Every archive is complete: its stdout hashes to the manifest's digest and holds each epoch once.
    for k, run in enumerate(runs):
        prefix = f"dag_id={DAG_ID}/run_id={run_id}/task_id=train/map_index={k}/attempt=1/"
        objects = archive_objects(cluster, prefix)
        manifest = json.loads(objects[prefix + "manifest.json"])
        stdout = archived_stdout(objects)
        assert hashlib.sha256(b"".join(line + b"\n" for line in stdout)).hexdigest() == manifest["sha256"], k
        epochs = [line.split()[1] for line in stdout if line.startswith(b"epoch ")]
        assert epochs == [b"%d/%d" % (n, run["epochs"]) for n in range(1, run["epochs"] + 1)], k

    # Nothing is left reserved on any engine.
    for h, engine in cluster.engines.items():
        assert engine.containers(CLAIM_LABEL) == [] and engine.containers(HOLD_LABEL) == [], h


def test_a_host_off_the_network_is_named_unreachable_and_new_tasks_go_to_the_others(cluster: Cluster) -> None:
    off = cluster.hosts[-1]
    conn = f"gpu_{off}"

    def card() -> dict[str, Any]:
        return dict({h["name"]: h for h in cluster.api.request("GET", "/gpu-cluster/api/cluster")["hosts"]}[conn])

    cluster.lan.unplug(off)
    try:
        seen = eventually(card, 30, interval_s=1, what=f"{conn} unreachable on the page (one refresh period)",
                          until=lambda seen: not seen["reachable"])
        assert f"http://{off}:9400" in seen["problem"], seen
        runs = [{"gpus": 1, "epochs": 10, "seed": k} for k in range(6)]
        run_id = cluster.api.trigger(DAG_ID, {"pool": POOL, "runs": runs})
        assert cluster.api.wait_for_run(DAG_ID, run_id, timeout=600) == "success"
        placed = [cluster.api.xcom(DAG_ID, run_id, "train", key="placement", map_index=k) for k in range(len(runs))]
        assert conn not in {p["host"] for p in placed}
        assert all(any(f"http://{off}:9400" in r for r in p["rejections"][conn]) for p in placed), placed[0]
    finally:
        cluster.lan.plug(off)
    eventually(card, 60, interval_s=1, what=f"{conn} reachable again", until=lambda seen: seen["reachable"])
