"""What the cluster tests observe from outside the provider: the engines' event streams, the
archive store and the topology's Prometheus. The provider's own records are what is under test, so they are never the
evidence: a container start is the engine's, an archived line is the store's."""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3

from provider.labels import CLAIM_LABEL, HOLD_LABEL
from provider.task_instance import MAP_INDEX_LABEL, RUN_ID_LABEL, TASK_ID_LABEL, TRY_NUMBER_LABEL
from tools.cluster.services import S3_PORT
from tools.cluster.topology import ARCHIVE_BUCKET, Cluster
from tools.dockerd import PrivateDockerd


@dataclass
class Started:
    """A task container as its engine saw it: the try that made it, when it started, died (with
    what exit code) and was removed, what GPUs it got."""

    host: str
    container: str
    run_id: str
    map_index: int
    try_number: int
    gpus: tuple[str, ...]
    milli: int
    start_ns: int
    die_ns: int | None = None
    exit_code: int | None = None
    destroy_ns: int | None = None


class EngineEvents:
    """Every task container's start, death and removal on each engine, read from the engines'
    event streams while the tests run; a started container is inspected at once for its device
    requests."""

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
            stream = client.api.events(decode=True,
                                       filters={"type": "container", "event": ["start", "die", "destroy"]})
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
                self.started[cid] = Started(host, cid, labels[RUN_ID_LABEL], int(labels[MAP_INDEX_LABEL]),
                                            int(labels[TRY_NUMBER_LABEL]), gpus, int(share) * 10 if share else 1000,
                                            int(event["timeNano"]))
            return
        with self.lock:
            started = self.started.get(cid)
            if started is None:
                return
            if event["Action"] == "die":
                started.die_ns, started.exit_code = int(event["timeNano"]), int(labels.get("exitCode", -1))
            else:
                started.destroy_ns = int(event["timeNano"])

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


def archive_objects(cluster: Cluster, prefix: str) -> dict[str, bytes]:
    """Every object of the container-log archive under ``prefix``, as the store holds it."""
    s3 = boto3.client("s3", endpoint_url=f"http://{cluster.lan['control'].ip}:{S3_PORT}", region_name="us-east-1",
                      aws_access_key_id="cluster", aws_secret_access_key="cluster")
    listed = s3.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=ARCHIVE_BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def promql(cluster: Cluster, query: str, at: float | None = None) -> list[dict[str, Any]]:
    """The result of an instant query through Prometheus' HTTP API (at ``at``, Unix time)."""
    params = {"query": query, **({"time": f"{at:.3f}"} if at is not None else {})}
    url = f"{cluster.prometheus_url}/api/v1/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        doc = json.load(answer)
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result
