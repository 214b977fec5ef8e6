"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from airflow.models import import_all_models
from airflow.models.base import Base
from sqlalchemy import create_engine
from sqlalchemy.orm import Session


@pytest.fixture
def session() -> Iterator[Session]:
    """A fresh, empty Airflow metadata database per test: Airflow's own schema in an in-memory
    SQLite, so queries meet the real column names and types."""
    import_all_models()
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()
