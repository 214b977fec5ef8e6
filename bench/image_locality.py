"""Job completion time with the image-locality term on and off, pulling 1 GB over 1 Gbit/s.

Three private Docker engines with simulated NVIDIA runtimes and node agents (four simulated GPUs
each) form the GPU pool ``loc_a``, ``loc_b``, ``loc_c``. A registry
(:class:`tools.registry.PrivateRegistry`: TLS and a login) serves from a network namespace that
the benchmark creates, reached over a veth pair whose two ends ``tc`` limits to 1 Gbit/s (tbf),
so the push and every pull cross a 1 Gbit/s link. The image is the test image plus four layers
of 256 MiB of random (incompressible) bytes, built on ``loc_c`` through the Docker API and pushed
from there: ``loc_c`` is the one host that holds it, and the other two lose it (removed by image
id) before each pass. The holder's name sorts last, so placements that tie and are broken by
name favour a host *without* the image; locality has to win on its score.

Twelve short training runs (``gpus=1``, ``sleep 3`` in that image, pulled with a
``docker_conn_id`` login as users pull) go through the real ``GpuDockerOperator`` in threads.
They arrive in waves of three, the arrivals within a wave spread by a seeded draw, and are placed
by ``least_loaded``: once with ``pull_penalty_per_gb=10`` (the locality term on, the default) and
once with 0 (off), on the same schedule, in one invocation. A run's job completion time (JCT) is
from its arrival to the operator's return, so it includes any pull. Per run: the host, whether
its task log shows a pull and how long the pull took (a run that loses its claim to a concurrent
one after pulling is placed again, maybe elsewhere), and the placement record's ``pull_bytes``
for its host (locality on only: with 0 the engines are not asked). Per pass: mean
and p95 JCT (interpolated), runs that waited on a pull, engines that pulled, and the bytes that
crossed the link (the veth's counters).

    python bench/image_locality.py [--json PATH] [--waves N] [--wave-gap-s S] [--seed N] [--layer-mib M]

``--waves 1 --per-wave 2 --wave-gap-s 0 --layer-mib 2`` is a smoke run of well under a minute
(tests/integration/test_bench_smoke.py).

Assumptions: the link is the registry's one uplink, shared by all hosts, not a link per host.
The three hosts share this machine's CPUs and disk, so their agents measure the same CPUs and
``least_loaded`` sees them alike up to sampling noise (the simulated GPUs report a flat 10 %);
the agents sample over 2 s to keep that noise small. An engine shares one transfer among the
runs that pull the same image on it at once. The registry's blobs are in the page cache (they
were just pushed). The passes run one after the other, locality on first.

Needs root, iproute2 (``ip``, ``tc`` with the tbf qdisc), dockerd, ``docker-registry``,
``htpasswd``, the test image saved by ``images/build.sh`` and about 6 GB of free disk. Every
namespace, veth, qdisc, engine, agent and registry it starts is removed or stopped by name or
pid at the end, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import MutableMapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provider.operators.gpu_docker import GpuDockerOperator  # noqa: E402
from tests.integration.agents import gpus, start_agent, stop_agent  # noqa: E402
from tools.bench_ti import BenchTI  # noqa: E402
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd  # noqa: E402
from tools.netns import veth_namespace  # noqa: E402
from tools.registry import PrivateRegistry  # noqa: E402

HOSTS = ("loc_a", "loc_b", "loc_c")
HOLDER = "loc_c"
"""Builds and pushes the image, so the only host that has it; last by name on purpose."""
GPUS_PER_HOST = 4
LINK_RATE = "1gbit"
LAYERS = 4
LAYER_MIB = 256
MIB = 1024 * 1024
CHUNK_MIB = 16
LOCAL_TAG = "gpu-docker-locality:1.0"
REPOSITORY = "bench/locality:1.0"
REGISTRY_CONN = "locality_registry"
RUN_COMMAND = ("sleep", "3")
PASSES = (("on", 10.0), ("off", 0.0))
"""(name, pull_penalty_per_gb) in the order they run."""
AGENT_INTERVAL_S = 2.0
RUN_LOGGER = "run-"
"""Start of each run's operator logger name, by which :class:`PullWatch` knows the runs' task logs."""


@dataclass
class Run:
    """One training run of a pass, as measured."""

    index: int
    arrival_s: float
    host: str = ""
    jct_s: float = 0.0
    pulled: bool = False
    pull_s: float | None = None
    pull_bytes: int | None = None
    scores: dict[str, float] = field(default_factory=dict)


class PullWatch:
    """A structlog processor that reads the runs' task logs: per run, when its log showed a pull
    begin (the engine's "Pulling from" line) and end (its "Status:" line). The task log is where
    a user sees that a run pulled, and it says so with locality off too, where the placement
    record cannot. The runs' lines are consumed here, not printed (the table is the output);
    other loggers' warnings still reach the terminal."""

    def __init__(self) -> None:
        self.began: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    def __call__(self, logger: logging.Logger, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        run = logger.name.rpartition(".")[2]
        if run.startswith(RUN_LOGGER):
            text = str(event.get("event", ""))
            if text.startswith("Pulling from"):
                self.began.setdefault(run, time.monotonic())
            elif text.startswith("Status: "):
                self.ended[run] = time.monotonic()
            raise structlog.DropEvent
        if method in ("debug", "info"):
            raise structlog.DropEvent
        return event


def build_image(engine: PrivateDockerd, workdir: Path, layer_mib: int = LAYER_MIB) -> None:
    """Build ``LOCAL_TAG`` on ``engine``: the test image plus ``LAYERS`` COPY layers of
    ``layer_mib`` MiB of random bytes, so that neither the push nor a pull gains anything from
    compression."""
    context = workdir / "context"
    context.mkdir()
    dockerfile = [f"FROM {TESTBOX_IMAGE}"]
    for i in range(LAYERS):
        with open(context / f"layer{i}", "wb") as f:
            for written in range(0, layer_mib, CHUNK_MIB):
                f.write(os.urandom(min(CHUNK_MIB, layer_mib - written) * MIB))
        dockerfile.append(f"COPY layer{i} /weights/layer{i}")
    (context / "Dockerfile").write_text("\n".join(dockerfile) + "\n")
    with engine.client() as c:
        for doc in c.api.build(path=str(context), tag=LOCAL_TAG, rm=True, decode=True):
            if doc.get("error"):
                raise RuntimeError(f"building {LOCAL_TAG} on {engine.name} failed: {doc['error']}")
    for path in context.iterdir():
        path.unlink()
    context.rmdir()


def forget_image(engines: dict[str, PrivateDockerd]) -> None:
    """Remove every image, by id, from the hosts other than the holder: they start a pass without it."""
    for name in HOSTS:
        if name != HOLDER:
            with engines[name].client() as c:
                for image in c.api.images():
                    c.api.remove_image(image["Id"], force=True)


def has_image(engine: PrivateDockerd, image: str) -> bool:
    """Whether ``engine`` has ``image``: after a pass, a host other than the holder has it only if it pulled."""
    with engine.client() as c:
        return bool(c.api.images(name=image, quiet=True))


def schedule(waves: int, per_wave: int, gap_s: float, spread_s: float, seed: int) -> list[float]:
    """Arrival offsets (seconds from the pass start): ``per_wave`` runs per wave, ``gap_s``
    between waves, each run within ``spread_s`` of its wave's start by a seeded draw."""
    rng = random.Random(seed)
    return sorted(w * gap_s + rng.uniform(0.0, spread_s) for w in range(waves) for _ in range(per_wave))


def run_pass(name: str, penalty: float, image: str, arrivals: Sequence[float], watch: PullWatch) -> list[Run]:
    """Start one operator per arrival, each in its own thread; return the runs once all are done."""
    runs = [Run(i, round(a, 3)) for i, a in enumerate(arrivals)]
    errors: list[BaseException] = []
    start = time.monotonic()

    def one(run: Run) -> None:
        label = f"{RUN_LOGGER}{name}-{run.index:02d}"  # the operator's logger name, which PullWatch sees
        op = GpuDockerOperator(
            task_id="train", image=image, gpu_pool=list(HOSTS), placement_policy="least_loaded", gpus=1,
            command=list(RUN_COMMAND), log_archive=None, docker_conn_id=REGISTRY_CONN,
            pull_penalty_per_gb=penalty, logger_name=label,
        )
        arrival = start + run.arrival_s
        time.sleep(max(0.0, arrival - time.monotonic()))
        ti = BenchTI(run_id=label, dag_id="image_locality")
        try:
            out = op.execute({"ti": ti})  # type: ignore[typeddict-item]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            return
        run.jct_s = round(time.monotonic() - arrival, 3)
        record = ti.xcoms["placement"]
        run.host, run.scores = out["host"], {h: round(s, 2) for h, s in record["scores"].items()}
        run.pull_bytes = record["pull_bytes"].get(run.host)
        run.pulled = label in watch.began
        if run.pulled and label in watch.ended:
            run.pull_s = round(watch.ended[label] - watch.began[label], 3)

    # Daemon threads: after Ctrl-C the engines are stopped under them, and they must not keep
    # the process alive once the clean-up is done.
    threads = [threading.Thread(target=one, args=(run,), daemon=True) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"pass {name}: {len(errors)} runs failed; first: {errors[0]!r}")
    return runs


def summary(runs: Sequence[Run], engine_pulls: int, link_bytes: int) -> dict[str, Any]:
    """A pass's figures: JCT (p95 interpolated between the slowest runs), pulls, bytes over the link."""
    jct = [r.jct_s for r in runs]
    pulls = [r.pull_s for r in runs if r.pull_s is not None]
    return {
        "mean_jct_s": round(statistics.fmean(jct), 3),
        "p95_jct_s": round(statistics.quantiles(jct, n=20, method="inclusive")[18], 3),
        "runs_pulled": sum(r.pulled for r in runs),
        "engine_pulls": engine_pulls,
        "link_bytes": link_bytes,
        "mean_pull_s": round(statistics.fmean(pulls), 3) if pulls else None,
    }


def _terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the clean-ups run."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--waves", type=int, default=4, help="waves of arrivals (default 4)")
    parser.add_argument("--per-wave", type=int, default=3, help="runs per wave (default 3)")
    parser.add_argument("--wave-gap-s", type=float, default=10.0, help="seconds between waves (default 10)")
    parser.add_argument("--spread-s", type=float, default=1.0, help="arrivals within a wave spread over this (default 1)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the arrivals within each wave")
    parser.add_argument("--layer-mib", type=int, default=LAYER_MIB,
                        help=f"MiB of random bytes in each of the image's {LAYERS} layers (default %(default)s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("This benchmark creates a network namespace and starts dockerd: it needs root.")
    signal.signal(signal.SIGTERM, _terminated)
    watch = PullWatch()
    structlog.configure(
        processors=[watch, structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    # The provider's info lines (claims lost to concurrent runs, expected here) would bury the table.
    logging.getLogger("provider").setLevel(logging.WARNING)
    began, load_before = time.monotonic(), os.getloadavg()
    arrivals = schedule(args.waves, args.per_wave, args.wave_gap_s, args.spread_s, args.seed)
    passes: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="image-locality-")))
        link = stack.enter_context(veth_namespace(str(os.getpid()), rate=LINK_RATE))
        registry = PrivateRegistry(ip=link.peer_ip, netns=link.netns)
        stack.callback(registry.stop)
        registry.start()
        engines: dict[str, PrivateDockerd] = {}
        for name in HOSTS:
            engines[name] = PrivateDockerd(name, simulated_gpus=True,
                                           extra_args=[f"--insecure-registry={registry.address}"])
            stack.callback(engines[name].stop)
            engines[name].start()
            agent = start_agent(workdir, name, gpus(GPUS_PER_HOST, "A100-80GB", 81920), interval_s=AGENT_INTERVAL_S)
            stack.callback(stop_agent, agent.process)
            conn = {"conn_type": "gpu_docker_host", "host": engines[name].url, "extra": {"agent_url": agent.url}}
            os.environ[f"AIRFLOW_CONN_{name.upper()}"] = json.dumps(conn)
        os.environ[f"AIRFLOW_CONN_{REGISTRY_CONN.upper()}"] = json.dumps(
            {"conn_type": "docker", "host": registry.address, "login": registry.user, "password": registry.password})
        holder = engines[HOLDER]
        holder.load(TESTBOX_IMAGE)
        t = time.monotonic()
        build_image(holder, workdir, args.layer_mib)
        build_s = time.monotonic() - t
        t, sent = time.monotonic(), link.sent_bytes()
        image = registry.push(holder, LOCAL_TAG, REPOSITORY)
        push_s, push_bytes = time.monotonic() - t, link.sent_bytes() - sent
        with holder.client() as c:
            image_bytes = int(c.api.inspect_image(image)["Size"])
        print(f"image {image}: {image_bytes / 1e9:.2f} GB on {HOLDER}, built in {build_s:.0f} s; pushed "
              f"{push_bytes / 1e9:.2f} GB in {push_s:.1f} s ({push_bytes * 8 / push_s / 1e9:.2f} Gbit/s)", flush=True)
        time.sleep(2 * AGENT_INTERVAL_S)  # the agents' first full samples
        for name, penalty in PASSES:
            forget_image(engines)
            received = link.received_bytes()
            runs = run_pass(name, penalty, image, arrivals, watch)
            engine_pulls = sum(has_image(engines[h], image) for h in HOSTS if h != HOLDER)
            passes[name] = {"pull_penalty_per_gb": penalty,
                            **summary(runs, engine_pulls, link.received_bytes() - received),
                            "runs": [asdict(r) for r in runs]}
            placed = " ".join(f"{r.host[-1]}{'*' if r.pulled else ''}" for r in runs)
            print(f"locality {name:>3}: hosts {placed}  (*: its task log shows a pull)", flush=True)
            time.sleep(AGENT_INTERVAL_S)  # the next pass starts from idle readings
    runtime_s, load_after = time.monotonic() - began, os.getloadavg()
    ratio = passes["on"]["mean_jct_s"] / passes["off"]["mean_jct_s"]
    print(f"\n{'locality':>8} {'penalty/GB':>10} {'mean JCT s':>10} {'p95 JCT s':>9} {'runs pulled':>11} "
          f"{'engine pulls':>12} {'GB pulled':>9}")
    for name, doc in passes.items():
        print(f"{name:>8} {doc['pull_penalty_per_gb']:>10.1f} {doc['mean_jct_s']:>10.2f} {doc['p95_jct_s']:>9.2f} "
              f"{doc['runs_pulled']:>11} {doc['engine_pulls']:>12} {doc['link_bytes'] / 1e9:>9.2f}")
    print(f"mean JCT on/off: {ratio:.2f}   ({len(arrivals)} runs per pass, image {image_bytes / 1e9:.2f} GB, "
          f"link {LINK_RATE}, runtime {runtime_s:.0f} s, load {load_before[0]:.1f} -> {load_after[0]:.1f})")
    if args.json:
        doc = {
            "hosts": list(HOSTS), "holder": HOLDER, "gpus_per_host": GPUS_PER_HOST, "policy": "least_loaded",
            "command": list(RUN_COMMAND), "link_rate": LINK_RATE, "arrivals_s": [round(a, 3) for a in arrivals],
            "image": {"reference": image, "bytes": image_bytes, "build_s": round(build_s, 1),
                      "push_s": round(push_s, 1), "push_link_bytes": push_bytes},
            "passes": passes, "mean_jct_ratio_on_off": round(ratio, 3), "runtime_s": round(runtime_s, 1),
            "loadavg_1min": {"before": load_before[0], "after": load_after[0]},
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
