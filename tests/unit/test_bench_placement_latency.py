"""The placement latency benchmark runs end to end on a tiny pool, kept-alive, every host read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.placement_latency", "--sizes", "3,5", "--reps", "3", "--budget-s", "10",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert set(figures["p50_ms"]) == {"3", "5"} and set(figures["with_image_p95_ms"]) == {"3", "5"}
    assert "Traceback" not in done.stderr
