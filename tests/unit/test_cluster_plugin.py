"""The plugin's declarations: the navigation entry, and an app built only when first used."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from provider.ui.plugin import LazyAsgiApp, nav_view


@pytest.mark.parametrize(
    ("base_url", "href"),
    [
        pytest.param("http://airflow.example.com:8080", "/gpu-cluster/", id="at-the-root"),
        pytest.param("https://example.com/airflow/", "/airflow/gpu-cluster/", id="below-a-path"),
    ],
)
def test_nav_entry_points_below_the_base_url(monkeypatch: pytest.MonkeyPatch, base_url: str, href: str) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", base_url)
    view = nav_view()
    assert (view["href"], view["url_route"], view["destination"]) == (href, "gpu-cluster", "nav")
    assert view["icon"] == f"{href}static/gpu.svg"


def test_lazy_app_is_built_once_on_the_first_request() -> None:
    built: list[int] = []
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])

    def factory() -> Any:
        built.append(1)
        return app

    lazy = LazyAsgiApp(factory)
    assert built == []
    for path in ("/", "/api/cluster"):
        asyncio.run(lazy({"type": "http", "path": path}, None, None))
    assert built == [1] and calls == ["/", "/api/cluster"]
