"""A smoke run of ``bench/cluster.py`` on this package's topology (no second one is started):
two jobs per policy of two epochs each, one seed at one load, through Airflow, the Celery
workers and the hosts, and the figures of the README's "Placement under concurrency" table in
its JSON. The hosts have no CPU quota here, so the figures mean nothing; that they are all there
is what is checked, and that the simulator replays the same arrivals from that JSON
(``bench/jct_calibrate.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cluster as bench_cluster
from bench import jct_calibrate
from tools.cluster.topology import Cluster

pytestmark = pytest.mark.system


def test_bench_cluster_on_the_running_topology(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    argv = ["--jobs", "2", "--epochs", "2", "--loads", "0.8", "--seeds", "3", "--json", str(out)]
    assert bench_cluster.main(argv, cluster) == 0
    doc = json.loads(out.read_text())
    results = {r["policy"]: r for r in doc["results"]}
    assert list(results) == list(bench_cluster.POLICIES)  # the table's order, whatever order they ran in
    assert [r["policy"] for r in doc["runs"]] == bench_cluster.rotated(bench_cluster.POLICIES, 3)
    for policy, r in results.items():
        # README: the ratio to round-robin with its interval, mean and p95 JCT, wait, jobs per host.
        assert r["load"] == 0.8 and r["seeds"] == 1 and r["default"] == (policy == bench_cluster.DEFAULT_POLICY)
        assert r["failed"] == 0 and r["mean_jct_s"] > 0 and r["p95_jct_s"] > 0 and r["mean_wait_s"] >= 0, policy
        assert r["ci95_low"] <= r["mean_jct_ratio_rr"] <= r["ci95_high"], policy
        assert set(r["jobs_per_host"]) == set(cluster.hosts) and sum(r["jobs_per_host"].values()) == 2, policy
    assert results["round_robin"]["mean_jct_ratio_rr"] == 1.0 and doc["calibration"]["state"] == "success"
    for h, engine in cluster.engines.items():  # drained: nothing left for the next test
        assert engine.containers() == [], h
    # The simulator replays the same arrivals (tests/unit/test_bench_smoke.py runs the simulator).
    rows = {r["policy"]: r for r in jct_calibrate.compare(doc, lag_s=1.0)}
    assert list(rows) == [*results, "oracle"] and rows["round_robin"]["sim"]["ratio"] == 1.0
    assert rows.pop("oracle")["topology"] is None  # the bound: the model alone
    assert all(r["sim"]["mean_run_s"] > 0 and r["topology"]["mean_run_s"] > 0 for r in rows.values())
