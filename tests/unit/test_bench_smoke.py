"""Smoke runs of the benchmarks that need no Docker engine: each runs as a user runs it, on tiny
inputs, and writes the figures the README quotes from it (README "Measured", docs/agent.md).
The placement replay's own smoke test (with its plot and the families and bound it runs) is
tests/unit/test_placement_sim_smoke.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, run_bench


def test_agent_request_cost(tmp_path: Path) -> None:
    doc = run_bench("agent_request_cost", "--requests", "5", tmp_path=tmp_path, timeout_s=120)
    # README: "node agent CPU per request, /v1/node / /metrics"
    assert set(doc["cpu_ms_per_request"]) == {"/v1/node", "/metrics"}
    assert all(ms >= 0 for ms in doc["cpu_ms_per_request"].values())


def test_placement_latency(tmp_path: Path) -> None:
    doc = run_bench("placement_latency", "--sizes", "2,5", "--reps", "3", "--budget-s", "10",
                    tmp_path=tmp_path, timeout_s=180)
    # README: p50 (p99) with the claims per pool size; agents alone + place(); with the image asked.
    for key in ("p50_ms", "p99_ms", "agents_only_p50_ms", "with_image_p50_ms"):
        assert set(doc[key]) == {"2", "5"}, key
        assert all(ms > 0 for ms in doc[key].values()), key
    assert doc["p50_ms"]["5"] <= doc["p99_ms"]["5"] and doc["policy"] == "least_loaded"


def test_jct_sim(tmp_path: Path) -> None:
    doc = run_bench("jct_sim", "--smoke", tmp_path=tmp_path, timeout_s=120)
    # README: the default policy's mean JCT over round-robin's, with its 95% interval, per sweep point.
    keys = {"load", "lag_s", "hosts", "policy", "default", "mean_jct_ratio_rr", "ci95_low", "ci95_high"}
    assert doc["results"] and all(keys <= set(r) for r in doc["results"])
    assert sum(r["default"] for r in doc["results"]) == len({(r["jobs"], r["mixed"]) for r in doc["results"]})
    assert all(r["mean_jct_ratio_rr"] == 1.0 for r in doc["results"] if r["policy"] == "round_robin")
    # docs/jct_sweep.png is drawn from that JSON.
    plot = subprocess.run([sys.executable, "bench/plot_jct.py", str(tmp_path / "jct_sim.json"), "--out",
                           str(tmp_path / "jct.png")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0 and (tmp_path / "jct.png").stat().st_size > 0, plot.stderr
