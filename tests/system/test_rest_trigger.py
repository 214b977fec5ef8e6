"""How the platform starts a training run: a token, then ``POST /api/v2/dags/{dag_id}/dagRuns``.

Plain HTTP, as any client would send it (no Airflow client library): the valid ``conf`` runs
to success and the epoch lines come back through the REST log endpoint; an invalid ``conf``
is refused by the DAG's param schema with a readable error and creates no run.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import eventually
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.system
DAG_ID = "train_image_classifier"


def call(airflow: LocalAirflow, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(airflow.url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def token(airflow_stack: LocalAirflow) -> str:
    status, body = call(airflow_stack, "POST", "/auth/token", None,
                        {"username": "admin", "password": airflow_stack.password()})
    assert status == 201, body
    return str(body["access_token"])


@pytest.fixture(scope="module")
def unpaused(airflow_stack: LocalAirflow, token: str) -> None:
    airflow_stack.wait_for_dag(DAG_ID)
    status, body = call(airflow_stack, "PATCH", f"/api/v2/dags/{DAG_ID}", token, {"is_paused": False})
    assert status == 200 and body["is_paused"] is False


def run_ids(airflow: LocalAirflow, token: str) -> set[str]:
    status, body = call(airflow, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100", token)
    assert status == 200
    return {r["dag_run_id"] for r in body["dag_runs"]}


def test_a_valid_conf_runs_and_the_epoch_lines_come_back_over_rest(
    airflow_stack: LocalAirflow, token: str, unpaused: None
) -> None:
    status, run = call(airflow_stack, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", token,
                       {"logical_date": None, "conf": {"epochs": 8, "learning_rate": 0.2, "gpus": 0}})
    assert status == 200, run
    run_id = run["dag_run_id"]
    assert run["conf"]["epochs"] == 8
    state = eventually(lambda: call(airflow_stack, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", token)[1]["state"],
                       300, interval_s=1, what="the run finished", until=lambda s: s in ("success", "failed"))
    assert state == "success"
    status, log = call(airflow_stack, "GET",
                       f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train/logs/1", token)
    assert status == 200
    text = json.dumps(log["content"])
    for epoch in range(1, 9):
        assert f"epoch {epoch}/8 loss=" in text


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        pytest.param({"gpus": -1}, "gpus", id="negative-gpus"),
        pytest.param({"epochs": "x"}, "epochs", id="epochs-not-a-number"),
        pytest.param({"image": "Not An Image!"}, "image", id="not-an-image-reference"),
    ],
)
def test_an_invalid_conf_is_refused_and_creates_no_run(
    airflow_stack: LocalAirflow, token: str, unpaused: None, conf: dict[str, Any], named: str
) -> None:
    before = run_ids(airflow_stack, token)
    status, body = call(airflow_stack, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", token,
                        {"logical_date": None, "conf": conf})
    assert status == 400, body
    detail = json.dumps(body)
    assert "Invalid input for param" in detail and named in detail, detail
    assert run_ids(airflow_stack, token) == before
