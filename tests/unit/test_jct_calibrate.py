"""``bench/jct_calibrate.py``: a topology run read back as the simulator's scenario, by hand.

Two jobs of 10 s alone on a half-core host, submitted 0 s and 1 s into the run; Airflow took
2 s and 4 s to start them. Round-robin put them on h1 and h2 (each ran alone: 10 s); the pool
policy put both on h1, where they shared the half core (about 20 s each)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.jct_calibrate import airflow_delay_s, compare, scenario


def _job(index: int, offset: float, host: str, started: float, run: float) -> dict[str, Any]:
    return {"index": index, "offset_s": offset, "state": "success", "host": host, "arrival": 100.0 + offset,
            "started": 100.0 + offset + started, "finished": 100.0 + offset + started + run, "duration_s": run}


DOC: dict[str, Any] = {
    "host_cores": {"h1": 0.5, "h2": 0.5, "h3": 0.5},
    "calibration": {"pool": "gpu_h1", "duration_s": 10.0},
    "runs": [
        {"load": 0.8, "seed": 1, "policy": "round_robin", "hog": [[0.0, 0.25, "h3"]],
         "jobs": [_job(0, 0.0, "h1", 2.0, 10.0), _job(1, 1.0, "h2", 4.0, 10.0)]},
        {"load": 0.8, "seed": 1, "policy": "best_fit", "hog": [[0.0, 0.25, "h3"]],
         "jobs": [_job(0, 0.0, "h1", 2.0, 19.0), _job(1, 1.0, "h1", 4.0, 18.0)]},
    ],
}


def test_a_run_becomes_the_same_arrivals_work_and_hog_in_the_model() -> None:
    assert airflow_delay_s(DOC) == 3.0  # the median of 2, 4, 2 and 4
    s = scenario(DOC, DOC["runs"][0], lag_s=1.0, delay_s=airflow_delay_s(DOC))
    assert [(h.name, h.cores) for h in s.hosts] == [("h1", 0.5), ("h2", 0.5), ("h3", 0.5)]
    assert [(j.arrival, j.work, j.cores, j.reserved_milli) for j in s.jobs] == [(3.0, 5.0, 1.0, 0), (4.0, 5.0, 1.0, 0)]
    assert [(x.host, x.start, x.end) for x in s.spells] == [("h3", 0.0, 0.25)] and s.lag_s == 1.0


def test_both_sides_side_by_side() -> None:
    rows = {r["policy"]: r for r in compare(DOC, lag_s=1.0)}
    assert rows["round_robin"]["topology"]["ratio"] == 1.0 and rows["round_robin"]["sim"]["ratio"] == 1.0
    # Topology: (21 + 22) / 2 = 21.5 s against 13 s. Model: round-robin runs each alone (10 s
    # after a 3 s delay); best_fit packs both onto one host, as the topology's packing did.
    assert rows["best_fit"]["topology"]["ratio"] == pytest.approx(21.5 / 13.0, abs=1e-3)
    assert rows["best_fit"]["sim"]["ratio"] > 1.3
    assert rows["round_robin"]["sim"]["mean_run_s"] == pytest.approx(10.0, abs=1e-6)
    # The bound on the same arrivals: no placement beats running both alone, round-robin's here.
    assert rows["oracle"]["topology"] is None and rows["oracle"]["sim"]["ratio"] == pytest.approx(1.0, abs=1e-6)
