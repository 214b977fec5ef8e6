"""bench/transport.py in its smoke mode: 5 hosts, every transport, plain and TLS, in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"transport", "tls", "hosts", "p50_ms", "p95_ms", "cpu_ms"}


def test_smoke_run_writes_every_configuration(tmp_path: Path) -> None:
    out = tmp_path / "transport.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.transport", "--smoke", "--oneshot", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    rows = figures["configurations"]
    assert {(r["transport"], r["tls"]) for r in rows} == {
        (t, tls) for t in ("http10", "aiohttp", "http11") for tls in (False, True)
    }
    for row in rows:
        assert KEYS <= row.keys(), row
        assert row["hosts"] == 5
        assert row["errors"] == 0
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["cpu_ms"] > 0
    kept_alive = [r for r in rows if r["transport"] != "http10"]
    assert all(r["open_sockets"] == 10 for r in kept_alive), kept_alive  # one per agent and per engine
    assert all(r["time_wait"] == 0 for r in kept_alive), kept_alive
    assert all(r["oneshot_ms"] > 0 for r in rows)
    assert {u["transport"] for u in figures["unix_socket"]} == {"http10", "aiohttp", "http11"}
    assert {(d["hosts"], d["tls"]) for d in figures["decisions"]} == {(5, False), (5, True)}
