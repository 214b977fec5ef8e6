"""The GPU cluster page reads the hosts at most once per refresh period, whoever asks.

The attack: every open page (or a script) asks for the document every few seconds, and each
ask read every agent and engine of the pool, so a crowd of viewers multiplied the load on the
hosts. Now concurrent asks share one read (single flight) and a reading serves every caller
for the refresh period.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from provider.clients.hosts import HostConfig
from provider.errors import HostConfigError
from provider.reservations.view import HostView
from provider.ui.cluster_sources import SharedReading, refresh_s

HOSTS = [HostConfig("gpu_a", "unix:///run/gpu-a/docker.sock", "http://gpu-a:9400")]
READ_S = 0.3  # how long one read of the hosts takes here: long enough for every caller to overlap it


class CountingRead:
    """A read of the hosts that takes READ_S and counts how often it ran (the agents' and
    engines' side of the page: one call is one request to every host)."""

    def __init__(self) -> None:
        self.calls = 0
        self.concurrent = 0
        self.most_concurrent = 0
        self.lock = threading.Lock()

    def __call__(self, hosts: Sequence[HostConfig]) -> list[HostView]:
        with self.lock:
            self.calls += 1
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        time.sleep(READ_S)
        with self.lock:
            self.concurrent -= 1
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_twenty_concurrent_callers_cause_one_read() -> None:
    read = CountingRead()
    shared = SharedReading(5.0, read)
    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(lambda _: shared.get(HOSTS), range(20)))
    assert read.calls == 1
    assert all(r is got[0] for r in got)


def test_a_reading_serves_for_the_period_then_the_next_caller_reads_again() -> None:
    read, clock = CountingRead(), Clock()
    shared = SharedReading(5.0, read, clock)
    first = shared.get(HOSTS)
    clock.now += 4.9
    assert shared.get(HOSTS) is first and read.calls == 1
    clock.now += 0.2
    assert shared.get(HOSTS) is not first and read.calls == 2
    other = [HostConfig("gpu_b", "unix:///run/gpu-b/docker.sock")]
    shared.get(other)  # another set of hosts (a pool connection changed) is read at once
    assert read.calls == 3


def test_a_failed_read_is_not_kept_and_does_not_block_the_next_caller() -> None:
    calls: list[int] = []

    def flaky(hosts: Sequence[HostConfig]) -> list[HostView]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("agent gone")
        return []

    shared = SharedReading(5.0, flaky)
    with pytest.raises(OSError):
        shared.get(HOSTS)
    assert shared.get(HOSTS).hosts == [] and len(calls) == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [pytest.param(None, 5.0, id="default"), pytest.param("2.5", 2.5, id="set"),
     pytest.param("0.1", None, id="too-often"), pytest.param("nan", None, id="nan"),
     pytest.param("inf", None, id="inf"), pytest.param("-5", None, id="negative"),
     pytest.param("soon", None, id="not-a-number")],
)
def test_the_refresh_setting_is_checked(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: float | None) -> None:
    if value is not None:
        monkeypatch.setenv("AIRFLOW__GPU_DOCKER__CLUSTER_REFRESH_S", value)
    if expected is None:
        with pytest.raises(HostConfigError, match=r"cluster_refresh_s must be a number of seconds >= 1"):
            refresh_s()
    else:
        assert refresh_s() == expected


class NoDatabase:
    """The session the endpoint gets: no pool connection in the database."""

    def scalars(self, statement: Any) -> list[str]:
        return []

    def close(self) -> None:
        pass


class Allow:
    """An auth manager that lets the caller see the page and no DAG."""

    def is_authorized_view(self, **kwargs: Any) -> bool:
        return True

    def get_authorized_dag_ids(self, **kwargs: Any) -> set[str]:
        return set()


@pytest.fixture
def page_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, CountingRead]]:
    """The page's real app with its real routes; only the login, the database and the hosts'
    read are stand-ins (no api-server runs here). Every request passes Airflow's dependency."""
    from airflow.api_fastapi.common.db.common import _get_session
    from airflow.api_fastapi.core_api import security

    import provider.ui.app as page

    read = CountingRead()
    monkeypatch.setattr(page, "read_hosts", read)
    monkeypatch.setattr(page, "get_auth_manager", Allow)
    monkeypatch.setattr(security, "get_auth_manager", Allow)
    monkeypatch.setenv("AIRFLOW__GPU_DOCKER__CLUSTER_REFRESH_S", "2")
    app = page.create_app()
    app.dependency_overrides[security.get_user] = lambda: object()
    app.dependency_overrides[_get_session] = NoDatabase
    yield app, read


def test_twenty_concurrent_page_requests_cause_one_pool_read(page_app: tuple[Any, CountingRead]) -> None:
    """Through the app's HTTP route: 20 requests at once, 1 read of the hosts; the page is told
    to refresh at the period one reading serves."""
    app, read = page_app

    async def crowd() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://page") as client:
            page = await client.get("/")
            assert "refreshSeconds&quot;: 2.0" in page.text
            return await asyncio.gather(*(client.get("/api/cluster") for _ in range(20)))

    started = time.monotonic()
    answers = asyncio.run(crowd())
    print(f"20 concurrent requests: {read.calls} read(s) of the hosts in {time.monotonic() - started:.2f} s")
    assert [a.status_code for a in answers] == [200] * 20
    assert read.calls == 1 and read.most_concurrent == 1
    assert len({a.json()["generated_at"] for a in answers}) == 1  # one reading, shown with its time
