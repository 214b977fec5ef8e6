"""A smoke run of ``bench/cluster.py`` on this package's topology (no second one is started):
two jobs per policy of two epochs each, through Airflow, the Celery workers and the hosts, and
the figures of the README's "Placement under concurrency" table in its JSON. The hosts are not
pinned here, so the figures mean nothing; that they are all there is what is checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cluster as bench_cluster
from tools.cluster.topology import Cluster

pytestmark = pytest.mark.system


def test_bench_cluster_on_the_running_topology(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    assert bench_cluster.main(["--jobs", "2", "--epochs", "2", "--json", str(out)], cluster) == 0
    doc = json.loads(out.read_text())
    summary = doc["summary"]
    assert set(summary) == set(bench_cluster.POLICIES)
    for policy, s in summary.items():
        # README: mean and p95 JCT, vs round-robin, vs random, jobs per host; the text: the wait.
        assert s["failed"] == 0 and s["mean_jct_s"] > 0 and s["p95_jct_s"] > 0 and s["mean_wait_s"] >= 0, policy
        assert s["vs_round_robin"] > 0 and s["vs_random"] > 0, policy
        assert set(s["jobs_per_host"]) == set(cluster.hosts) and sum(s["jobs_per_host"].values()) == 2, policy
    assert summary["round_robin"]["vs_round_robin"] == 1.0 and doc["calibration"]["state"] == "success"
    for h, engine in cluster.engines.items():  # drained: nothing left for the next test
        assert engine.containers() == [], h
