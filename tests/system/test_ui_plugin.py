"""The GPU cluster page in a real Airflow: its API needs a login, and a person sees who holds a GPU.

The pool ``gpu_ui_pool`` has two hosts: ``ui_gpu_a``, a private engine with the stand-in NVIDIA
driver and a node agent reporting two simulated GPUs (no GPU here; see README "Tests"), and
``ui_gpu_b``, whose agent is down. A DAG runs one container with ``gpus=1`` on the pool; while it
runs, the API and a headless Chromium, signed in to the Airflow UI like a person, must show that
task instance holding a GPU of ``ui_gpu_a``, and ``ui_gpu_b`` as unreachable with the reason.
A second DAG then asks for both GPUs of ``ui_gpu_a``: it defers and holds the host
(``docs/waiting.md``), and the page lists it as waiting and names it on the host it holds;
marked failed, its trigger is cancelled and the hold lifted. The pool shares its GPUs through
one queue, ``vision``: the page shows its quota and use, and the waiting task in its line. The screenshot is kept: under
``$GPU_DOCKER_ARTIFACTS`` (default: the test's temporary directory), and as
``docs/gpu_cluster.png`` when ``GPU_DOCKER_UPDATE_SCREENSHOT=1``.

Everything started here (engine, agent, Airflow, browser) is stopped by pid or id, and the DAG
runs are marked failed at the end so their containers, claims and holds go away.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from provider.labels import CLAIM_LABEL, HOLD_LABEL
from provider.task_instance import LABEL_PREFIX
from tests.conftest import eventually
from tests.integration.agents import gpus, start_agent, stop_agent
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd
from tools.local_airflow import REPO, LocalAirflow, free_port

pytestmark = pytest.mark.system

DAG_ID, TASK_ID = "gpu_cluster_sleeper", "train_on_gpu"
WAITER_DAG, WAITER_TASK = "gpu_cluster_waiter", "train_on_two"
POOL, HOST_UP, HOST_DOWN = "gpu_ui_pool", "ui_gpu_a", "ui_gpu_b"
API = "/gpu-cluster/api/cluster"
START_TIMEOUT_S = 180.0



@dataclass
class Cluster:
    airflow: LocalAirflow
    engine: PrivateDockerd


def connections(engine: PrivateDockerd, agent_url: str, workdir: Path) -> dict[str, str]:
    """The pool and its hosts as ``AIRFLOW_CONN_*`` variables of every Airflow component."""
    def host(docker_url: str, agent: str) -> str:
        return json.dumps({"conn_type": "gpu_docker_host", "host": docker_url, "extra": {"agent_url": agent}})

    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the agent is down
    return {
        f"AIRFLOW_CONN_{HOST_UP.upper()}": host(engine.url, agent_url),
        f"AIRFLOW_CONN_{HOST_DOWN.upper()}": host(f"unix://{workdir / 'no-engine.sock'}", nobody),
        f"AIRFLOW_CONN_{POOL.upper()}": json.dumps({"conn_type": "gpu_docker_pool", "extra": {
            "hosts": [HOST_UP, HOST_DOWN], "queues": {"vision": {"quota": {"gpus": 2}}}, "default_queue": "vision"}}),
        # Nothing here may fall back to the machine's own engine.
        "AIRFLOW_CONN_GPU_DOCKER_DEFAULT": json.dumps({"conn_type": "gpu_docker_host", "host": engine.url}),
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("ui")
    with ExitStack() as stack:
        engine = PrivateDockerd("ui", simulated_gpus=True)
        stack.callback(engine.stop)
        engine.start()
        engine.load(TESTBOX_IMAGE)
        agent = start_agent(workdir, HOST_UP, gpus(2, "A100-80GB", 81920, util=35.0))
        stack.callback(stop_agent, agent.process)
        dags = workdir / "dags"
        dags.mkdir()
        shutil.copy(REPO / "tests" / "system" / "dags" / f"{DAG_ID}.py", dags)
        airflow = LocalAirflow(workdir / "airflow", dags_folder=dags, extra_env=connections(engine, agent.url, workdir))
        stack.callback(airflow.stop)
        airflow.start(timeout=240)
        yield Cluster(airflow, engine)


def claims_of_run(engine: PrivateDockerd, run_id: str) -> list[Any]:
    return engine.containers(f"{CLAIM_LABEL}=true", f"{LABEL_PREFIX}.run_id={run_id}")


@contextmanager
def run_in(airflow: LocalAirflow, dag_id: str, task_id: str, ready: Callable[[str, str], object],
           gone: Callable[[str], object], what: str) -> Iterator[str]:
    """Trigger ``dag_id`` and yield its run id once ``ready(state of task_id, run id)``; after,
    mark the task failed and wait until ``gone(run id)``: nothing it made is left."""
    run_id = airflow.trigger(dag_id, {})
    ti_path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
    try:
        eventually(lambda: ready(airflow.request("GET", ti_path)["state"], run_id), START_TIMEOUT_S, interval_s=1.0,
                   what=f"{what} started")
        yield run_id
    finally:
        airflow.request("PATCH", ti_path, {"new_state": "failed"})
        eventually(lambda: gone(run_id), 60, interval_s=1.0, what=f"what {what} made removed after it was failed")


def holds_on(engine: PrivateDockerd) -> list[Any]:
    return engine.containers(f"{HOLD_LABEL}=true")


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Iterator[str]:
    """The sleeper's run id, once its task runs and holds its GPU; its claims released after."""
    engine = cluster.engine
    with run_in(cluster.airflow, DAG_ID, TASK_ID,
                ready=lambda state, run_id: state == "running" and claims_of_run(engine, run_id),
                gone=lambda run_id: not claims_of_run(engine, run_id), what="the GPU task") as run_id:
        yield run_id


@pytest.fixture(scope="module")
def waiting(cluster: Cluster, running: str) -> Iterator[str]:
    """The waiter's run id, once its task is deferred and holds ``ui_gpu_a``. Failed after, the
    triggerer cancels its trigger, whose clean-up must lift the hold."""
    engine = cluster.engine
    with run_in(cluster.airflow, WAITER_DAG, WAITER_TASK,
                ready=lambda state, _: state == "deferred" and holds_on(engine),
                gone=lambda _: not holds_on(engine), what="the waiting two-GPU task") as run_id:
        yield run_id


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_api_refuses_requests_without_a_valid_token(cluster: Cluster) -> None:
    assert get(cluster.airflow.url + API)[0] == 401
    assert get(cluster.airflow.url + API, token="not-a-jwt")[0] == 403


def test_api_shows_the_gpu_held_by_the_running_task(cluster: Cluster, running: str) -> None:
    doc = eventually(lambda: doc_of(cluster), 30, interval_s=1, what="the running task's GPU on the page",
                     until=lambda d: any(g["holders"] for g in d["hosts"][0]["gpus"]))
    [pool] = doc["pools"]
    assert (pool["name"], pool["hosts"]) == (POOL, [HOST_UP, HOST_DOWN])
    [vision] = pool["queues"]["queues"]
    assert (vision["name"], vision["quota"]["gpus"], vision["used"]["gpus"]) == ("vision", 2, 1), vision
    up, down = doc["hosts"]
    assert (up["name"], up["reachable"], up["pools"]) == (HOST_UP, True, [POOL])
    assert up["cpu"]["count"] >= 1 and up["memory"]["total_mb"] > 0
    assert [g["model"] for g in up["gpus"]] == ["A100-80GB", "A100-80GB"]
    held = [g for g in up["gpus"] if g["holders"]]
    assert len(held) == 1, up["gpus"]
    task = held[0]["holders"][0]["task"]
    assert (task["dag_id"], task["task_id"], task["run_id"], task["map_index"]) == (DAG_ID, TASK_ID, running, -1)
    assert task["url"] == f"/dags/{DAG_ID}/runs/{quote(running, safe='')}/tasks/{TASK_ID}"
    assert (down["name"], down["reachable"]) == (HOST_DOWN, False)
    assert "refused" in down["problem"], down
    assert doc["waiting"] == [] and doc["problems"] == []


def test_api_shows_the_waiting_task_and_the_host_it_holds(cluster: Cluster, running: str, waiting: str) -> None:
    # The page reads the hosts once per refresh period for all its callers, so the hold the
    # fixture saw on the engine shows within one period (docs/cluster_page.md).
    doc = eventually(lambda: doc_of(cluster), 30, interval_s=1, what="the hold on the page",
                     until=lambda d: bool(d["hosts"][0]["holds"]))
    up, down = doc["hosts"]
    assert len(up["holds"]) == 1 and down["holds"] == [], up
    task = up["holds"][0]["task"]
    assert (task["dag_id"], task["task_id"], task["run_id"]) == (WAITER_DAG, WAITER_TASK, waiting)
    assert [(w["dag_id"], w["task_id"], w["run_id"], w["state"]) for w in doc["waiting"]] == [
        (WAITER_DAG, WAITER_TASK, waiting, "deferred")
    ]
    line = eventually(lambda: doc_of(cluster)["pools"][0]["queues"]["line"], 30, interval_s=1,
                      what="the waiting task in its queue's line", until=bool)
    assert [(w["position"], w["queue"], w["task"]["run_id"], w["asks"]) for w in line] == [
        (1, "vision", waiting, "gpus=2")]


def doc_of(cluster: Cluster) -> dict[str, Any]:
    status, doc = get(cluster.airflow.url + API, token=cluster.airflow.token())
    assert status == 200, doc
    return dict(doc)


def artifacts_dir(tmp_path: Path) -> Path:
    path = Path(os.environ.get("GPU_DOCKER_ARTIFACTS") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_signed_in_person_sees_the_host_and_the_task_in_the_airflow_ui(
    cluster: Cluster, running: str, waiting: str, tmp_path: Path
) -> None:
    browser = Browser.start()
    try:
        browser.sign_in(cluster.airflow.url, "admin", cluster.airflow.password())
        frame_text = browser.open_cluster_page(cluster.airflow.url, expect=[HOST_UP, TASK_ID, HOST_DOWN, WAITER_TASK,
                                                                                  "Pool gpu_ui_pool", "queue vision"])
        assert "refused" in frame_text and "A100-80GB" in frame_text
        assert f"Held for {WAITER_DAG} / {WAITER_TASK}" in frame_text and "deferred" in frame_text
        artifacts = artifacts_dir(tmp_path)
        browser.driver.save_screenshot(str(artifacts / "gpu_cluster.png"))
        if os.environ.get("GPU_DOCKER_UPDATE_SCREENSHOT") == "1":
            shutil.copy(artifacts / "gpu_cluster.png", REPO / "docs" / "gpu_cluster.png")
        browser.follow_task_link(f"/dags/{DAG_ID}/runs/{quote(running, safe='')}/tasks/{TASK_ID}", expect=TASK_ID)
        browser.driver.save_screenshot(str(artifacts / "gpu_cluster_task_link.png"))
    finally:
        browser.quit()


class Browser:
    """Debian's headless Chromium through chromedriver, signed in like a person."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    @classmethod
    def start(cls) -> Browser:
        chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
        if not (chromium and chromedriver):
            pytest.skip("needs Debian's chromium and chromium-driver (./run installs them)")
        webdriver = pytest.importorskip("selenium.webdriver")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--window-size=1440,1000"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
        driver.set_page_load_timeout(120)
        return cls(driver)

    def quit(self) -> None:
        self.driver.quit()

    def wait(self, what: str, condition: Callable[[Any], Any], timeout: float = 120) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(condition)
        except TimeoutException:
            raise AssertionError(f"{what} within {timeout:g} s; page: {self.driver.current_url}\n"
                                 f"{self.driver.find_element('tag name', 'body').text[:2000]}") from None

    def sign_in(self, url: str, username: str, password: str) -> None:
        """The simple auth manager's sign-in form, as a person fills it in."""
        from selenium.webdriver.common.by import By

        self.driver.get(f"{url}/auth/login")
        field = self.wait("the sign-in form did not appear", lambda d: d.find_elements(By.NAME, "username"))
        field[0].send_keys(username)
        self.driver.find_element(By.NAME, "password").send_keys(password)
        self.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait("signing in did not set the UI's token cookie", lambda d: d.get_cookie("_token"))

    def open_cluster_page(self, url: str, expect: list[str]) -> str:
        """Follow the "GPU cluster" navigation entry; return the framed page's text."""
        from selenium.webdriver.common.by import By

        self.driver.get(f"{url}/")
        entry = self.wait("the navigation has no GPU cluster entry",
                          lambda d: d.find_elements(By.CSS_SELECTOR, "a[href$='/plugin/gpu-cluster']"))
        entry[0].click()
        frame = self.wait("the GPU cluster page was not framed in the UI",
                          lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[title='GPU cluster']"))
        self.driver.switch_to.frame(frame[0])
        text: str = self.wait(
            f"the page did not show {expect}",
            lambda d: (t := d.find_element(By.TAG_NAME, "body").text) and all(e in t for e in expect) and t,
        )
        return text

    def follow_task_link(self, path: str, expect: str) -> None:
        """A click on the holder's link opens its task instance in the Airflow UI itself."""
        from selenium.webdriver.common.by import By

        links = self.driver.find_elements(By.CSS_SELECTOR, "a[data-airflow-link]")
        [link] = [a for a in links if (a.get_attribute("href") or "").endswith(path)]
        link.click()
        self.driver.switch_to.default_content()
        self.wait("the task link did not open the task instance", lambda d: d.current_url.endswith(path))
        self.wait(f"the task instance page did not show {expect}",
                  lambda d: not d.find_elements(By.CSS_SELECTOR, "iframe[title='GPU cluster']")
                  and expect in d.find_element(By.TAG_NAME, "body").text)
