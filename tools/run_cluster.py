"""Airflow with Celery workers and GPU hosts on a network, on this machine: ``./run cluster``.

Brings up the topology of :mod:`tools.cluster.topology` (a control machine, 3 Celery workers, 3
GPU hosts with simulated GPUs, each machine a network namespace of its own), triggers the
mapped ``train_on_pool`` DAG over the REST API, prints where each training ran (worker, host,
GPUs) and how to reach the UI, then keeps it all up until Ctrl-C (``--once``: stops at once).

    python -m tools.run_cluster [--once] [--runs N]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from tools.cluster.topology import POOL, Cluster, ClusterSpec
from tools.run_example import raise_interrupt, print_sign_in, wait_for_interrupt

DAG_ID = "train_on_pool"
MIX = ({"gpus": 1}, {"gpus": 2}, {"gpu_milli": 500})


def runs(count: int) -> list[dict[str, Any]]:
    """``count`` runs cycling through whole GPUs, pairs of GPUs and half GPUs."""
    return [{**MIX[k % len(MIX)], "epochs": 60, "seed": k} for k in range(count)]


def report(cluster: Cluster, run_id: str, planned: list[dict[str, Any]]) -> bool:
    """Print one line per training task: where it ran and how it ended; True when all succeeded."""
    api = cluster.api
    print(f"{'task':<10} {'state':<9} {'worker':<7} {'host':<7} {'GPUs':<10} {'share':<6} accuracy")
    ok = True
    for ti in api.mapped_instances(DAG_ID, run_id, "train"):
        k = int(ti["map_index"])
        ok &= ti["state"] == "success"
        outcome: dict[str, Any] = api.xcom(DAG_ID, run_id, "train", map_index=k) if ti["state"] == "success" else {}
        result = outcome.get("result") or {}
        share = planned[k].get("gpu_milli", "")
        print(f"{f'train[{k}]':<10} {ti['state']:<9} {ti.get('hostname') or '-':<7} "
              f"{outcome.get('host', '-'):<7} {','.join(map(str, outcome.get('gpus') or [])) or '-':<10} "
              f"{share!s:<6} {result.get('test_accuracy', '-')}")
    return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="stop everything after the run")
    parser.add_argument("--runs", type=int, default=12, help="training runs to map (default 12)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_interrupt)

    cluster = Cluster(ClusterSpec())
    print("Starting the cluster (PostgreSQL, Redis, Airflow, 3 Celery workers, 3 GPU hosts) ...", flush=True)
    started = time.monotonic()
    try:
        cluster.start()
        print(f"Up in {time.monotonic() - started:.0f} s. Machines (each a network namespace):")
        print(cluster.describe())
        conf: dict[str, Any] = {"pool": POOL, "runs": runs(args.runs)}
        run_id = cluster.api.trigger(DAG_ID, conf)
        print(f"Triggered {DAG_ID} run {run_id} with {args.runs} training runs on pool {POOL}; waiting ...",
              flush=True)
        state = cluster.api.wait_for_run(DAG_ID, run_id, timeout=1800)
        print(f"Run {run_id}: {state}")
        ok = report(cluster, run_id, conf["runs"]) and state == "success"
        print_sign_in(cluster.api)
        print(f"Prometheus:       {cluster.prometheus_url}/ (GPU metrics by task: docs/metrics.md)")
        if not args.once:
            print("The cluster stays up; press Ctrl-C to stop it.", flush=True)
            wait_for_interrupt()
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("Interrupted.")
        return 130
    finally:
        print("Stopping the cluster ...", flush=True)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
