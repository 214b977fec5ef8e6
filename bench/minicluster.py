"""Job completion time by placement policy on a real two-host mini-cluster.

Two private Docker engines, each confined to one CPU through a cgroup v1 cpuset
(``--cgroup-parent``; the first engine's containers run on CPU 0, the second's on CPU 1), act as
two one-core hosts. Each has a node agent that reports only its own CPU (``--cpus``). The
first host is busy: a CPU hog container runs there for the whole experiment. Eight runs of the
example trainer arrive at staggered times and are each placed by one policy, through the real
``GpuDockerOperator``: fixed on one host, round-robin, seeded random, or ``least_loaded``
(placement on the agents' measured CPU utilisation). A run's job completion time (JCT) is
from its arrival to the end of its container. Policies run one after another in one
invocation, so they see the same machine.

    python bench/minicluster.py [--json PATH] [--epochs N] [--gap-s S] [--runs N]

``--smoke`` runs one short busy loop of the test image per policy instead of the trainer (the
trainer's image takes half a minute to load into two engines): every policy, host and figure,
in seconds, meaning nothing (tests/integration/test_bench_smoke.py).

Needs root, dockerd, cgroup v1 with the cpuset controller, two CPUs, and the images saved by
``images/build.sh``. Bar: least_loaded mean JCT at least 20% lower than round-robin.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provider.operators.gpu_docker import GpuDockerOperator  # noqa: E402
from tests.integration.agents import start_agent, stop_agent  # noqa: E402
from tools.bench_ti import BenchTI  # noqa: E402
from tools.cgroups import remove_cgroup  # noqa: E402
from tools.dockerd import TESTBOX_IMAGE, TRAINER_IMAGE, PrivateDockerd  # noqa: E402

CPUSET = Path("/sys/fs/cgroup/cpuset")
HOSTS = ("mc_a", "mc_b")
RUNS = 8
BAR = 0.20


@contextmanager
def pinned_cgroup(name: str, cpu: int) -> Iterator[str]:
    """A cpuset cgroup on one CPU; removed afterwards with what engines made under it."""
    if not (CPUSET / "cpuset.cpus").exists():
        sys.exit(f"{CPUSET} is not a cgroup v1 cpuset hierarchy; this benchmark needs cgroup v1.")
    path = CPUSET / name
    path.mkdir()
    try:
        (path / "cpuset.cpus").write_text(str(cpu))
        (path / "cpuset.mems").write_text("0")
        yield f"/{name}"
    finally:
        remove_cgroup(name)


def operator_for(policy: str, index: int, rng: random.Random, epochs: int, smoke: bool = False) -> GpuDockerOperator:
    """The operator of run ``index`` under ``policy``: a fixed host, or the pool and a policy."""
    common: dict[str, Any] = dict(task_id="train", image=TRAINER_IMAGE, pull="never",
                                  command=["--epochs", str(epochs), "--seed", str(index)])
    if smoke:
        common.update(image=TESTBOX_IMAGE, command=["sh", "-c", f"seq 1 {epochs * 10000} >/dev/null"])
    if policy == "least_loaded":
        return GpuDockerOperator(gpu_pool=list(HOSTS), placement_policy="least_loaded", **common)
    host = {"fixed_a": HOSTS[0], "fixed_b": HOSTS[1], "round_robin": HOSTS[index % 2],
            "random": rng.choice(HOSTS)}[policy]
    return GpuDockerOperator(host=host, **common)


def run_policy(policy: str, epochs: int, gap_s: float, seed: int, runs: int = RUNS, smoke: bool = False
               ) -> tuple[list[float], list[str], list[Any]]:
    """Start the runs ``gap_s`` apart; return each run's JCT, host and placement scores."""
    rng = random.Random(seed)
    jct: list[float] = [0.0] * runs
    hosts: list[str] = [""] * runs
    scores: list[Any] = [None] * runs
    errors: list[BaseException] = []
    start = time.monotonic()

    def one(i: int) -> None:
        op = operator_for(policy, i, rng, epochs, smoke)
        arrival = start + i * gap_s
        time.sleep(max(0.0, arrival - time.monotonic()))
        ti = BenchTI(run_id=f"{policy}-{i}", dag_id="minicluster")
        try:
            out = op.execute({"ti": ti})  # type: ignore[typeddict-item]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            return
        jct[i], hosts[i] = time.monotonic() - arrival, out["host"]
        scores[i] = ti.xcoms["placement"]["scores"] if policy == "least_loaded" else None

    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{policy}: {len(errors)} runs failed; first: {errors[0]}")
    return jct, hosts, scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--epochs", type=int, default=60, help="trainer epochs per run (default 60)")
    parser.add_argument("--gap-s", type=float, default=4.0, help="seconds between arrivals (default 4)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the random policy")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs per policy (default {RUNS})")
    parser.add_argument("--smoke", action="store_true", help="the test image's busy loop instead of the trainer")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("This benchmark pins one host to CPU 0 and one to CPU 1: it needs two CPUs.")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tag = f"gdbench-{os.getpid()}"
    policies = ("fixed_a", "fixed_b", "round_robin", "random", "least_loaded")
    mean: dict[str, float] = {}
    worst: dict[str, float] = {}
    placed: dict[str, list[str]] = {}
    least_loaded_scores: list[Any] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="minicluster-")))
        for cpu, name in enumerate(HOSTS):
            parent = stack.enter_context(pinned_cgroup(f"{tag}-{name}", cpu))
            engine = PrivateDockerd(name, cgroup_parent=parent).start()
            stack.callback(engine.stop)
            engine.load(TESTBOX_IMAGE, *(() if args.smoke else (TRAINER_IMAGE,)))
            agent = start_agent(workdir, name, [], interval_s=0.5, cpus=str(cpu))
            stack.callback(stop_agent, agent.process)
            conn = {"conn_type": "gpu_docker_host", "host": engine.url, "extra": {"agent_url": agent.url}}
            os.environ[f"AIRFLOW_CONN_{name.upper()}"] = json.dumps(conn)
            if cpu == 0:
                with engine.client() as c:
                    hog = c.containers.run(TESTBOX_IMAGE, ["sh", "-c", "while :; do :; done"],
                                           detach=True, network_mode="none")
                stack.callback(_remove, engine, hog.id)
        time.sleep(2)  # let the agents see the hog
        for policy in policies:
            jct, hosts, scores = run_policy(policy, args.epochs, args.gap_s, args.seed, args.runs, args.smoke)
            least_loaded_scores = scores if policy == "least_loaded" else least_loaded_scores
            mean[policy], worst[policy], placed[policy] = sum(jct) / len(jct), max(jct), hosts
            print(f"{policy:>13}: mean {mean[policy]:6.2f} s  hosts {' '.join(h[-1] for h in hosts)}", flush=True)
    rr = mean["round_robin"]
    print(f"\n{'policy':>13} {'mean JCT s':>10} {'max JCT s':>10} {'vs RR':>6}")
    for policy in policies:
        print(f"{policy:>13} {mean[policy]:>10.2f} {worst[policy]:>10.2f} {mean[policy] / rr:>6.2f}")
    gain = 1 - mean["least_loaded"] / rr
    ok = gain >= BAR
    print(f"least_loaded vs round_robin: {gain:.0%} lower mean JCT (bar {BAR:.0%}): {'met' if ok else 'NOT met'}")
    if args.json:
        doc = {"mean_jct_s": {k: round(v, 3) for k, v in mean.items()},
               "max_jct_s": {k: round(v, 3) for k, v in worst.items()},
               "hosts": placed, "least_loaded_scores": least_loaded_scores, "epochs": args.epochs, "gap_s": args.gap_s, "runs": args.runs}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if ok else 1


def _remove(engine: PrivateDockerd, container_id: str) -> None:
    with engine.client() as c:
        c.containers.get(container_id).remove(force=True)


if __name__ == "__main__":
    sys.exit(main())
