"""Fixtures of the unit tests: an Airflow metadata database, a small GPU cluster trace."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def trace(tmp_path: Path) -> tuple[Path, Path]:
    """A node list of 12 hosts and a pod list of 300 tasks in the openb CSV layouts (seeded), for
    the placement benchmarks' smoke runs: ``(nodes.csv, pods.csv)``."""
    rng = random.Random(3)
    nodes = tmp_path / "nodes.csv"
    with nodes.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sn", "cpu_milli", "memory_mib", "gpu", "model"])
        for i in range(12):
            w.writerow([f"node-{i:02d}", rng.choice([32000, 64000]), 262144, rng.choice([1, 2, 4, 8]), rng.choice(["T4", "V100"])])
    pods = tmp_path / "pods.csv"
    with pods.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"])  # the short layout
        for i in range(300):
            gpus = rng.choice([0, 1, 1, 1, 2, 4])
            milli = rng.choice([250, 500, 1000]) if gpus == 1 else (1000 if gpus else 0)
            w.writerow([f"pod-{i:04d}", rng.choice([1000, 4000, 8000]), 8192, gpus, milli])
    return nodes, pods
