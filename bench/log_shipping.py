"""Log shipping cost: the stock DockerOperator against GpuDockerOperator, same container.

Each operator's ``execute`` runs in a fresh ``python -c`` process against a private dockerd,
with logging configured the way the Airflow task runner does it
(``airflow.sdk.log.configure_logging(json_output=True, output=<unbuffered binary file>,
sending_to_supervisor=True)``: one JSON line and one write per event, as to the supervisor's
socket). Measured per process: wall time of ``execute``, lines found in the task-log file,
peak RSS (``ru_maxrss``). RSS growth is the peak of an N-line run minus that of a 10-line run.
``archive_lines_per_s`` comes from a run with ``log_live_rate=100``, where the task log is
nearly idle and the archive carries every line.

    python bench/log_shipping.py --lines 1000000 [--json PATH] [--with-5m]

``--lines 2000 --with-5m --big-lines 3000`` is a smoke run (tests/integration/test_bench_smoke.py).

Bars: task-log throughput >= 1.0x DockerOperator's; archive >= 200,000 lines/s; RSS growth
<= 32 MB at 1M lines and not larger at 5M; zero lost lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
from airflow.sdk.log import configure_logging
kind, n, url, log_path, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
configure_logging(json_output=True, output=open(log_path, "wb", buffering=0), sending_to_supervisor=True)
command = ["seq", "1", str(n)]
if kind == "dockeroperator":
    from airflow.providers.docker.operators.docker import DockerOperator
    op = DockerOperator(task_id="bench", image=sys.argv[6], command=command, docker_url=url,
                        network_mode="none", mount_tmp_dir=False, auto_remove="success")
else:
    from provider.operators.gpu_docker import GpuDockerOperator
    os.environ["AIRFLOW_CONN_BENCH_HOST"] = json.dumps({"conn_type": "gpu_docker_host", "host": url})
    op = GpuDockerOperator(task_id="bench", image=sys.argv[6], command=command, host="bench_host",
                           pull="never", log_live_rate=float(rate) if rate != "none" else None)
from tools.bench_ti import BenchTI
ti = BenchTI(run_id=f"r{time.time_ns()}", dag_id="bench", task_id="bench")
t, cpu = time.perf_counter(), time.process_time()
out = op.execute({"ti": ti})
seconds = time.perf_counter() - t
record = {"seconds": seconds, "cpu_s": time.process_time() - cpu, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
if isinstance(out, dict):
    record["archive"] = out.get("log_manifest")
print("RESULT " + json.dumps(record))
"""


def run_child(kind: str, n: int, engine: PrivateDockerd, home: Path, rate: str = "none") -> dict[str, Any]:
    log_path = home / f"{kind}-{n}-{rate}.log"
    env = {**os.environ, "AIRFLOW_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(n), engine.url, str(log_path), rate, TESTBOX_IMAGE],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    result = next((line for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"{kind} with {n} lines failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    record: dict[str, Any] = json.loads(result[len("RESULT "):])
    record["task_log_lines"] = _count_numbers(log_path, n)
    log_path.unlink()
    if record.get("archive"):
        manifest = json.loads(Path(record["archive"].removeprefix("file://")).read_text())
        record["archive_lines"] = manifest["lines"]
    return record


def _count_numbers(path: Path, n: int) -> int:
    """Container lines in a JSON-lines task log (events that are the numbers 1..n)."""
    count = 0
    with open(path, "rb") as f:
        for raw in f:
            event = json.loads(raw).get("event")
            if isinstance(event, str) and event.isdigit() and 1 <= int(event) <= n:
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--with-5m", action="store_true", help="also measure our RSS growth at 5,000,000 lines")
    parser.add_argument("--big-lines", type=int, default=5_000_000, help="lines of the --with-5m run")
    args = parser.parse_args()
    n = args.lines
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp, PrivateDockerd("bench") as engine:
        engine.load(TESTBOX_IMAGE)
        home = Path(tmp)
        runs = {
            "stock_base": run_child("dockeroperator", 10, engine, home),
            "stock": run_child("dockeroperator", n, engine, home),
            "ours_base": run_child("provider", 10, engine, home),
            "ours": run_child("provider", n, engine, home),
            "ours_archive": run_child("provider", n, engine, home, rate="100"),
        }
        if args.with_5m:
            runs["ours_5m"] = run_child("provider", args.big_lines, engine, home)
    mb = 1024.0
    stock, ours = runs["stock"], runs["ours"]
    report: dict[str, Any] = {
        "lines": n,
        "dockeroperator": {
            "task_log_lines_per_s": round(stock["task_log_lines"] / stock["seconds"]),
            "rss_growth_mb": round((stock["maxrss_kb"] - runs["stock_base"]["maxrss_kb"]) / mb, 1),
        },
        "provider": {
            "task_log_lines_per_s": round(ours["task_log_lines"] / ours["seconds"]),
            "archive_lines_per_s": round(runs["ours_archive"]["archive_lines"] / runs["ours_archive"]["seconds"]),
            "rss_growth_mb": round((ours["maxrss_kb"] - runs["ours_base"]["maxrss_kb"]) / mb, 1),
        },
        "lost_lines": max(
            n - ours["task_log_lines"], n - ours["archive_lines"], n - runs["ours_archive"]["archive_lines"]
        ),
        "dockeroperator_lost_lines": n - stock["task_log_lines"],
    }
    if "ours_5m" in runs:
        five = runs["ours_5m"]
        report["provider"]["rss_growth_mb_5m"] = round((five["maxrss_kb"] - runs["ours_base"]["maxrss_kb"]) / mb, 1)
        report["lost_lines_5m"] = max(args.big_lines - five["task_log_lines"], args.big_lines - five["archive_lines"])
    report["cpu_share_of_wall"] = {
        name: round(r["cpu_s"] / r["seconds"], 2) for name, r in runs.items() if not name.endswith("_base")
    }
    _print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _print_table(r: dict[str, Any]) -> None:
    s, o = r["dockeroperator"], r["provider"]
    print(f"container: seq 1 {r['lines']}")
    print(f"{'':28}{'DockerOperator':>16}{'ours':>12}{'ours/stock':>12}")
    print(f"{'task log lines/s':28}{s['task_log_lines_per_s']:>16,}{o['task_log_lines_per_s']:>12,}"
          f"{o['task_log_lines_per_s'] / s['task_log_lines_per_s']:>12.2f}")
    print(f"{'archive lines/s':28}{'-':>16}{o['archive_lines_per_s']:>12,}{'':>12}")
    print(f"{'RSS growth MB':28}{s['rss_growth_mb']:>16}{o['rss_growth_mb']:>12}"
          f"{o['rss_growth_mb'] / s['rss_growth_mb'] if s['rss_growth_mb'] else float('nan'):>12.2f}")
    if "rss_growth_mb_5m" in o:
        print(f"{'RSS growth MB at 5M':28}{'-':>16}{o['rss_growth_mb_5m']:>12}")
    print(f"lost lines: ours {r['lost_lines']}, DockerOperator {r['dockeroperator_lost_lines']}")
    print(f"operator process CPU / wall: {r['cpu_share_of_wall']}")


if __name__ == "__main__":
    main()
