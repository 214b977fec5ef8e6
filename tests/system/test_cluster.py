"""The provider across Celery workers and GPU hosts on a network (tools/cluster/topology.py).

One topology serves every test here (it takes about a minute to start): a control machine,
3 Celery workers and 3 GPU hosts with 4 simulated GPUs each, every machine a network namespace.
What is checked comes from the engines and from Airflow's REST API, never from the provider's
own records: the engines' event streams and each started container's device request ids and
GPU share say whether a GPU was ever double-booked.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from provider.reservations.labels import CLAIM_LABEL, HOLD_LABEL, MAP_INDEX_LABEL, RUN_ID_LABEL, TASK_ID_LABEL
from tools.cluster.services import S3_PORT
from tools.cluster.topology import ARCHIVE_BUCKET, POOL, Cluster, ClusterSpec
from tests.conftest import archived_stdout
from tools.dockerd import PrivateDockerd

pytestmark = pytest.mark.system

DAG_ID = "train_on_pool"
LONG_EPOCHS = 400  # map index 0 trains long enough to read its log while it runs
MIX = ({"gpus": 1}, {"gpus": 2}, {"gpu_milli": 500})
TASKS = 36


@dataclass
class Started:
    """A task container as its engine saw it: when it started and died, what GPUs it got."""

    host: str
    container: str
    run_id: str
    map_index: int
    gpus: tuple[str, ...]
    milli: int
    start_ns: int
    die_ns: int | None = None


class EngineEvents:
    """Every container start and death on each engine, read from the engines' event streams
    while the tests run; a started container is inspected at once for its device requests."""

    def __init__(self, engines: dict[str, PrivateDockerd]) -> None:
        self.started: dict[str, Started] = {}
        self.lock = threading.Lock()
        self.streams: list[Any] = []
        self.threads = [threading.Thread(target=self._follow, args=(h, e), daemon=True) for h, e in engines.items()]
        self.ready = threading.Barrier(len(engines) + 1)

    def start(self) -> None:
        for t in self.threads:
            t.start()
        self.ready.wait(timeout=30)

    def _follow(self, host: str, engine: PrivateDockerd) -> None:
        with engine.client() as client:
            stream = client.api.events(decode=True, filters={"type": "container", "event": ["start", "die"]})
            self.streams.append(stream)
            self.ready.wait(timeout=30)
            try:
                for event in stream:
                    self._record(host, client, event)
            except Exception:  # noqa: BLE001 - the stream is closed at the end
                return

    def _record(self, host: str, client: Any, event: dict[str, Any]) -> None:
        labels = event["Actor"]["Attributes"]
        if TASK_ID_LABEL not in labels or CLAIM_LABEL in labels or HOLD_LABEL in labels:
            return
        cid = event["id"]
        if event["Action"] == "start":
            info = client.api.inspect_container(cid)
            requests = info["HostConfig"].get("DeviceRequests") or []
            gpus = tuple(i for r in requests for i in (r.get("DeviceIDs") or []))
            env = dict(e.split("=", 1) for e in info["Config"]["Env"] or [])
            share = env.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
            with self.lock:
                self.started[cid] = Started(host, cid, labels[RUN_ID_LABEL], int(labels[MAP_INDEX_LABEL]), gpus,
                                            int(share) * 10 if share else 1000, int(event["timeNano"]))
        else:
            with self.lock:
                if cid in self.started:
                    self.started[cid].die_ns = int(event["timeNano"])

    def stop(self) -> None:
        for stream in self.streams:
            stream.close()

    def of_run(self, run_id: str) -> list[Started]:
        with self.lock:
            return [s for s in self.started.values() if s.run_id == run_id]


def overbooked(started: list[Started]) -> list[str]:
    """Every moment at which a GPU's shares summed above 1000 milli (a whole GPU is 1000),
    swept over start and death times per host and GPU."""
    moments = sorted((t, kind, s) for s in started for g in s.gpus
                     for t, kind in ((s.start_ns, 1), (s.die_ns if s.die_ns is not None else 2**63, 0)))
    in_use: dict[tuple[str, str], dict[str, int]] = {}
    problems = []
    for _, kind, s in moments:
        for g in s.gpus:
            users = in_use.setdefault((s.host, g), {})
            if kind == 0:
                users.pop(s.container, None)
                continue
            users[s.container] = s.milli
            if sum(users.values()) > 1000:
                problems.append(f"{s.host} GPU {g}: {users}")
    return problems


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(ClusterSpec(tag="gdt")) as c:
        yield c


@pytest.fixture(scope="module")
def events(cluster: Cluster) -> Iterator[EngineEvents]:
    watcher = EngineEvents(cluster.engines)
    watcher.start()
    yield watcher
    watcher.stop()


def archive_objects(cluster: Cluster, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=f"http://{cluster.lan['control'].ip}:{S3_PORT}", region_name="us-east-1",
                      aws_access_key_id="cluster", aws_secret_access_key="cluster")
    listed = s3.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=ARCHIVE_BUCKET, Key=o["Key"])["Body"].read() for o in listed}


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
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and "epoch 2/" not in live:
        mapped = cluster.api.mapped_instances(DAG_ID, run_id, "train")  # none until `plan` has run
        first = mapped[0] if mapped else {}
        if first.get("state") == "running":
            live = cluster.api.task_log_text(DAG_ID, run_id, "train", map_index=0)
        elif first.get("state") in ("success", "failed"):
            break
        time.sleep(1)
    assert "epoch 2/" in live, f"no training lines in the running task's log: {live[-2000:]!r}"

    assert cluster.api.wait_for_run(DAG_ID, run_id, timeout=1200) == "success"
    instances = cluster.api.mapped_instances(DAG_ID, run_id, "train")
    assert [ti["state"] for ti in instances] == ["success"] * TASKS
    outcomes = [cluster.api.xcom(DAG_ID, run_id, "train", map_index=k) for k in range(TASKS)]
    assert len({ti["hostname"] for ti in instances}) >= 2, [ti["hostname"] for ti in instances]
    assert {o["host"] for o in outcomes} == {f"gpu_{h}" for h in cluster.hosts}

    # After the end the log is still there, whole. The worker uploads it to the store just after
    # it reports the task's end, so the store may hold only the triggerer's part for a moment.
    deadline = time.monotonic() + 60
    done = ""
    while f"epoch {LONG_EPOCHS}/{LONG_EPOCHS}" not in done and time.monotonic() < deadline:
        done = cluster.api.task_log_text(DAG_ID, run_id, "train", map_index=0)
        time.sleep(1)
    assert f"epoch {LONG_EPOCHS}/{LONG_EPOCHS}" in done and "test_accuracy=" in done, done[-2000:]

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
        return {h["name"]: h for h in cluster.api.request("GET", "/gpu-cluster/api/cluster")["hosts"]}[conn]

    cluster.lan.unplug(off)
    try:
        seen = card()
        assert not seen["reachable"] and f"http://{off}:9400" in seen["problem"], seen
        runs = [{"gpus": 1, "epochs": 10, "seed": k} for k in range(6)]
        run_id = cluster.api.trigger(DAG_ID, {"pool": POOL, "runs": runs})
        assert cluster.api.wait_for_run(DAG_ID, run_id, timeout=600) == "success"
        placed = [cluster.api.xcom(DAG_ID, run_id, "train", key="placement", map_index=k) for k in range(len(runs))]
        assert conn not in {p["host"] for p in placed}
        assert all(any(f"http://{off}:9400" in r for r in p["rejections"][conn]) for p in placed), placed[0]
    finally:
        cluster.lan.plug(off)
    deadline = time.monotonic() + 60
    while not card()["reachable"] and time.monotonic() < deadline:
        time.sleep(1)
    assert card()["reachable"]
