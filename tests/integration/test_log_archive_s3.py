"""The log archive on an S3-protocol server on loopback (moto), including a storage outage.

Uses ``moto[server]``, ``s3fs`` and the Amazon provider from the ``test`` extra.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import server as moto_server

from provider.logs.shipping import default_spool_root
from provider.logs.spool import Spool
from provider.operators.gpu_docker import GpuDockerOperator
from tests.conftest import FakeTI, TaskLog, archived_stdout, run_task
from tools.dockerd import TESTBOX_IMAGE

pytestmark = pytest.mark.integration
BUCKET = "container-logs"


class S3Server:
    """A moto S3 server on 127.0.0.1 that can be stopped and started again on the same port
    (moto keeps its buckets in process memory, so objects survive the outage)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Any = None

    def start(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def objects(self, prefix: str) -> dict[str, bytes]:
        c = self.client()
        keys = [o["Key"] for o in c.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
        return {k: c.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, it_host: None) -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        server.client().create_bucket(Bucket=BUCKET)
        extra = {
            "endpoint_url": server.url, "region_name": "us-east-1",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        }
        conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
        # Airflow caches a filesystem per connection id in the process: one id per server.
        monkeypatch.setenv(f"AIRFLOW_CONN_S3LOGS{server.port}", json.dumps(conn))
        yield server
    finally:
        server.stop()


def op_for(s3: S3Server, **kwargs: Any) -> GpuDockerOperator:
    return GpuDockerOperator(
        task_id="train", host="it_host", image=TESTBOX_IMAGE, pull="never",
        log_archive=f"s3://s3logs{s3.port}@{BUCKET}/runs", **kwargs,
    )


def prefix_of(out: dict[str, Any]) -> str:
    return out["log_archive"].split(f"{BUCKET}/", 1)[1]


def test_archive_to_s3_with_manifest(s3: S3Server, ti: FakeTI) -> None:
    out = run_task(op_for(s3, command=["seq", "1", "50000"]), ti)
    objects = s3.objects(prefix_of(out))
    assert archived_stdout(objects) == [b"%d" % i for i in range(1, 50001)]
    manifest = json.loads(objects[prefix_of(out) + "/manifest.json"])
    assert manifest["lines"] == 50000 and manifest["exit_code"] == 0
    assert manifest["sha256"] == hashlib.sha256(b"".join(b"%d\n" % i for i in range(1, 50001))).hexdigest()
    assert out["log_archive"].startswith("s3://") and ti.dag_id in out["log_archive"]


def test_storage_outage_spools_and_completes_the_archive(s3: S3Server, ti: FakeTI, task_log: TaskLog) -> None:
    script = "i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo line $i; sleep 0.01; done"
    op = op_for(s3, command=["sh", "-c", script], log_chunk_s=0.5)
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(run_task(op, ti)))
    worker.start()
    task_log.wait_for("line 50", timeout=60)
    s3.stop()
    task_log.wait_for("line 300", timeout=60)
    s3.start()
    worker.join(120)
    assert out["exit_code"] == 0
    objects = s3.objects(prefix_of(out))
    assert archived_stdout(objects) == [b"line %d" % i for i in range(1, 601)]
    assert json.loads(objects[prefix_of(out) + "/manifest.json"])["lines"] == 600
    texts = task_log.texts()
    assert any("spooling to" in t for t in texts) and any("answers again" in t for t in texts)
    assert Spool(default_spool_root()).pending() == 0
