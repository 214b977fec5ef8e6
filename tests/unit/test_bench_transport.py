"""bench/transport.py in its smoke mode: 5 hosts, both transports, plain and TLS, in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"transport", "tls", "hosts", "p50_ms", "p95_ms", "cpu_ms"}
TRANSPORTS = {"provider", "aiohttp"}


def test_smoke_run_writes_every_configuration(tmp_path: Path) -> None:
    out = tmp_path / "transport.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.transport", "--smoke", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    rows = figures["configurations"]
    assert {(r["transport"], r["tls"]) for r in rows} == {(t, tls) for t in TRANSPORTS for tls in (False, True)}
    for row in rows:
        assert KEYS <= row.keys(), row
        assert row["hosts"] == 5
        assert row["errors"] == 0
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["cpu_ms"] > 0
        assert row["open_sockets"] == 10, row  # one kept connection per agent and per engine
        assert row["time_wait"] == 0, row
    assert {u["transport"] for u in figures["unix_socket"]} == TRANSPORTS
    assert all(u["p50_ms"] > 0 for u in figures["unix_socket"])
    decisions = figures["decisions"]
    assert {(d["hosts"], d["tls"]) for d in decisions} == {(5, False), (5, True)}
    assert all(d["speedup_wall"] > 0 and isinstance(d["keep_hand_written"], bool) for d in decisions), decisions
