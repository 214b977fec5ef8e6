"""Smoke runs of the benchmarks that start private Docker engines: each runs as a user runs it,
on tiny inputs, and writes the figures the README quotes from it ("Measured"; docs/images.md).
The figures of a smoke run mean nothing; that they are all there is what is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_bench

pytestmark = pytest.mark.integration


def test_log_shipping(tmp_path: Path) -> None:
    doc = run_bench("log_shipping", "--lines", "2000", "--with-5m", "--big-lines", "3000",
                    tmp_path=tmp_path, timeout_s=300)
    # README: task-log lines/s ours / DockerOperator; peak-RSS growth of both, ours at 5M lines;
    # archive lines/s; lost lines.
    for side in ("dockeroperator", "provider"):
        assert doc[side]["task_log_lines_per_s"] > 0 and "rss_growth_mb" in doc[side], side
    assert doc["provider"]["archive_lines_per_s"] > 0 and "rss_growth_mb_5m" in doc["provider"]
    assert doc["lines"] == 2000 and doc["lost_lines"] == doc["lost_lines_5m"] == doc["dockeroperator_lost_lines"] == 0


def test_minicluster(tmp_path: Path) -> None:
    doc = run_bench("minicluster", "--smoke", "--runs", "1", "--epochs", "2", "--gap-s", "0.5", tmp_path=tmp_path,
                    timeout_s=300)
    # README: mean job time, least_loaded / round-robin, and where least_loaded placed the runs.
    policies = {"fixed_a", "fixed_b", "round_robin", "random", "least_loaded"}
    assert set(doc["mean_jct_s"]) == set(doc["max_jct_s"]) == set(doc["hosts"]) == policies
    assert all(v > 0 for v in doc["mean_jct_s"].values()) and doc["runs"] == 1
    assert all(len(hosts) == 1 for hosts in doc["hosts"].values())


def test_image_locality(tmp_path: Path) -> None:
    doc = run_bench("image_locality", "--waves", "1", "--per-wave", "2", "--wave-gap-s", "0", "--layer-mib", "2",
                    tmp_path=tmp_path, timeout_s=300)
    # docs/images.md and README: mean and p95 JCT with the locality term on / off, their ratio,
    # runs that waited on a pull, engine pulls and the bytes over the link; the image's size.
    for name in ("on", "off"):
        p = doc["passes"][name]
        assert p["mean_jct_s"] > 0 and p["p95_jct_s"] > 0, name
        assert {"runs_pulled", "engine_pulls", "link_bytes", "mean_pull_s"} <= set(p), name
        assert [r["host"] in ("loc_a", "loc_b", "loc_c") for r in p["runs"]] == [True, True], name
    assert doc["mean_jct_ratio_on_off"] > 0 and doc["image"]["bytes"] > 4 * 2 * 1024 * 1024


def test_stream_transport(tmp_path: Path) -> None:
    doc = run_bench("stream_transport", "--lines", "5000", "--reps", "2", tmp_path=tmp_path, timeout_s=180)
    # docs/transport.md: each client's wall and CPU seconds per read, MB/s, the speed-up, same bytes.
    for client in ("hand_written", "aiohttp"):
        assert {"wall_s", "cpu_s", "mb_per_s"} <= set(doc["clients"][client]), client
    assert doc["same_bytes"] is True and doc["speedup_wall"] > 0 and doc["speedup_cpu"] > 0
