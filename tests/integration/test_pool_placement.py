"""Placement and reservations on a pool of three real engines with real node agents.

Hosts: ``pool_a`` (4 simulated 80 GB GPUs), ``pool_b`` (2 of 16 GB), ``pool_c`` (none). The
GPUs are simulated at the two boundaries that need hardware: the agents' documented simulated
backend, and the engines' stand-in NVIDIA driver (``PrivateDockerd(simulated_gpus=True)``),
so claims are real containers on real engines and GPU containers really start with their
device request. Every engine, agent and container is started here and removed by id/pid.
"""

from __future__ import annotations

import asyncio

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk import BaseHook

from provider.errors import ContainerFailed, NoGpuRuntime

from provider.scheduling.no_fit import NoFit
from provider.clients.engine import AsyncEngine
from provider.clients.hosts import HostConfig, pool_extra, resolve_pool
from provider.operators.gpu_docker import GpuDockerOperator
from provider.labels import CLAIM_LABEL, RESERVATION_LABEL
from provider.reservations.engine_clock import engine_info
from provider.reservations.pool import read_pool_view
from provider.reservations.placement import Reserved
from provider.reservations.queueing import QueueTicket
from provider.reservations.rules import parse_claim
from provider.scheduling.accounting import MEASURE_WINDOW_S, UNRESERVED_CPU_MILLI
from provider.scheduling.model import NodeState, PlacementRequest
from tests.conftest import FakeTI, TaskLog, eventually, release_now, reserve_now, run_task
from tests.integration.agents import RunningAgent, gpus, start_agent, stop_agent
from tests.integration.conftest import define_host
from tools.cgroups import CGROUP_ROOT, make_cpu_quota_group, remove_cgroup
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd, stop_engines

pytestmark = pytest.mark.integration

POOL = ["pool_a", "pool_b", "pool_c"]
INVENTORIES: dict[str, list[dict[str, Any]]] = {
    "pool_a": gpus(4, "A100-80GB", 81920),
    "pool_b": gpus(2, "T4", 16384),
    "pool_c": [],
}



def contenders() -> Any:
    """The multiprocessing context the races start their processes with.

    Each contender is a process of its own, with its own I/O loop and connections, as tasks on
    Celery workers are. They fork from a server that imported this module (and Airflow) once,
    instead of each importing them afresh (about 3 s of CPU each, 24 times a race). The server
    ends with the test session. A contender takes the test's environment as an argument
    (:func:`in_env`): the server's own is the one of the test that started it."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def in_env(env: dict[str, str], target: Any, *args: Any) -> None:
    """Run ``target(*args)`` in a contender with the test's environment (its connections)."""
    os.environ.clear()
    os.environ.update(env)
    target(*args)

@dataclass
class Cluster:
    workdir: Path
    engines: dict[str, PrivateDockerd]
    agents: dict[str, RunningAgent]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("pool"), {}, {})
    try:
        for name, inventory in INVENTORIES.items():
            c.engines[name] = PrivateDockerd(name, simulated_gpus=True).start()
            c.engines[name].load(TESTBOX_IMAGE)
            c.agents[name] = start_agent(c.workdir, name, inventory)
        yield c
    finally:
        for agent in c.agents.values():
            stop_agent(agent.process)
        stop_engines(c.engines.values())


@pytest.fixture(autouse=True)
def connections(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in POOL:
        define_host(monkeypatch, name, cluster.engines[name].url, cluster.agents[name].url)
    yield
    for engine in cluster.engines.values():  # every test leaves no claim behind
        assert claims(engine) == []


def claims(engine: PrivateDockerd) -> list[str]:
    return [x["Id"] for x in engine.containers(f"{CLAIM_LABEL}=true")]


def claimed_gpus(engine: PrivateDockerd) -> int:
    """GPUs reserved on the engine, read from its claims' labels."""
    parsed = [parse_claim(x) for x in engine.containers(f"{CLAIM_LABEL}=true")]
    return sum(len(c.gpus) for c in parsed if c is not None)


def reserve(request: PlacementRequest, pool: list[str] = POOL, **kwargs: Any) -> Reserved:
    hosts = resolve_pool(pool, BaseHook.get_connection)
    return reserve_now(hosts, request, image=TESTBOX_IMAGE, **kwargs)


@pytest.mark.parametrize(
    ("request_", "host", "claimed"),
    [
        pytest.param(PlacementRequest(gpus=3), "pool_a", 3, id="3-gpus-only-a-has"),
        pytest.param(PlacementRequest(gpus=2, gpu_model="T4"), "pool_b", 2, id="model-t4"),
        pytest.param(PlacementRequest(gpus=1, gpu_memory_mb=40000), "pool_a", 1, id="gpu-memory-40g"),
        pytest.param(PlacementRequest(gpus=0), "pool_c", 0, id="cpu-only-stays-off-gpu-hosts"),
    ],
)
def test_requests_land_where_they_fit(cluster: Cluster, request_: PlacementRequest, host: str, claimed: int) -> None:
    reserved = reserve(request_)
    try:
        assert reserved.host.name == host
        assert claimed_gpus(cluster.engines[host]) == claimed
        assert set(reserved.placement.scores) | set(reserved.placement.rejections) == set(POOL)
    finally:
        release_now(reserved)


def test_no_fit_names_every_host_and_reason(cluster: Cluster) -> None:
    with pytest.raises(NoFit) as err:
        reserve(PlacementRequest(gpus=5))
    text = str(err.value)
    for part in ("pool_a: gpu free 4 of 4 < 5", "pool_b: gpu free 2 of 2 < 5", "pool_c: has no GPUs"):
        assert part in text


def test_operator_runs_on_the_chosen_host_and_gpus(cluster: Cluster, ti: FakeTI, task_log: TaskLog) -> None:
    op = GpuDockerOperator(
        task_id="train", image=TESTBOX_IMAGE, pull="never", gpu_pool=POOL, gpus=2, gpu_model="T4",
        command=["sh", "-c", 'echo "visible=$NVIDIA_VISIBLE_DEVICES"; sleep 1.5'], log_chunk_s=0.5,
    )
    out = run_task(op, ti)
    assert out["host"] == "pool_b" and out["gpus"] == [0, 1] and out["exit_code"] == 0
    assert "visible=0,1" in task_log.texts("stdout")
    placement = ti.xcoms["placement"]
    assert placement["host"] == "pool_b" and placement["gpu_ids"] == [0, 1]
    assert placement["policy"] == "least_loaded" and set(placement["scores"]) == {"pool_b"}
    assert "gpu model A100-80GB != T4" in placement["rejections"]["pool_a"]
    assert placement["rejections"]["pool_c"]
    # The archive's manifest records the chosen GPUs' utilisation, sampled from the host's agent.
    samples = json.loads(Path(out["log_manifest"].removeprefix("file://")).read_text())["gpu_samples"]
    assert samples and all([g["index"] for g in s["gpus"]] == [0, 1] for s in samples)
    assert samples[0]["gpus"][0]["utilization_pct"] == 10.0  # the simulated inventory's value


def test_failed_container_releases_its_gpus(cluster: Cluster, ti: FakeTI) -> None:
    op = GpuDockerOperator(task_id="train", image=TESTBOX_IMAGE, pull="never", gpu_pool=POOL, gpus=1,
                           command=["sh", "-c", "exit 4"])
    with pytest.raises(ContainerFailed, match="code 4"):
        run_task(op, ti)


def test_kill_frees_the_gpus(
    cluster: Cluster, ti: FakeTI, task_log: TaskLog, marked_failed: None
) -> None:
    op = GpuDockerOperator(task_id="train", image=TESTBOX_IMAGE, pull="never", gpu_pool=POOL, gpus=4,
                           command=["sh", "-c", "echo started; sleep 600"])
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_task(op, ti)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    task_log.wait_for("started", timeout=30)
    assert claimed_gpus(cluster.engines["pool_a"]) == 4
    with pytest.raises(NoFit, match="pool_a: gpu free 0 of 4 < 4"):
        reserve(PlacementRequest(gpus=4))
    op.on_kill()
    worker.join(30)
    assert not worker.is_alive() and errors and isinstance(errors[0], ContainerFailed)
    release_now(again := reserve(PlacementRequest(gpus=4)))
    assert again.host.name == "pool_a"


def contend(pool: list[str], barrier: Any, results: Any) -> None:
    """One contender: wait for all, place one GPU, report (granted or the no-fit message)."""
    barrier.wait()
    try:
        r = reserve(PlacementRequest(gpus=1), pool)
    except NoFit as exc:
        results.put(("nofit", str(exc)))
        return
    results.put(("granted", r.host.name, r.placement.gpu_indices, r.reservation.claim_id))


def settle(cluster: Cluster, outcomes: list[tuple[Any, ...]]) -> None:
    granted = [o for o in outcomes if o[0] == "granted"]
    try:
        assert len(outcomes) == 24 and len(granted) == 6
        assert sorted((o[1], o[2]) for o in granted) == sorted(
            [("pool_a", (i,)) for i in range(4)] + [("pool_b", (i,)) for i in range(2)]
        )
        assert all("No host fits gpus=1" in o[1] for o in outcomes if o[0] == "nofit")
        assert claimed_gpus(cluster.engines["pool_a"]) == 4 and claimed_gpus(cluster.engines["pool_b"]) == 2
    finally:
        for o in granted:
            with cluster.engines[o[1]].client() as c:
                c.containers.get(o[3]).remove(force=True)


def test_24_threads_race_for_6_gpus(cluster: Cluster) -> None:
    import queue

    barrier, results = threading.Barrier(24), queue.Queue[tuple[Any, ...]]()
    threads = [threading.Thread(target=contend, args=(POOL, barrier, results)) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    settle(cluster, [results.get_nowait() for _ in range(results.qsize())])


def test_24_processes_race_for_6_gpus(cluster: Cluster) -> None:
    ctx = contenders()
    barrier, results = ctx.Barrier(24), ctx.Queue()
    procs = [ctx.Process(target=in_env, args=(dict(os.environ), contend, POOL, barrier, results)) for _ in range(24)]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=180) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    settle(cluster, outcomes)


def test_shares_never_add_up_beyond_one_gpu(cluster: Cluster) -> None:
    got: list[Reserved | NoFit] = []

    def share() -> None:
        try:
            got.append(reserve(PlacementRequest(gpus=1, gpu_milli=600), ["pool_b"]))
        except NoFit as exc:
            got.append(exc)

    threads = [threading.Thread(target=share) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    granted = [r for r in got if isinstance(r, Reserved)]
    try:
        assert sorted(r.placement.gpu_indices for r in granted) == [(0,), (1,)]
        assert all("gpu free 400m < 600m on one GPU (of 2 GPUs)" in str(e) for e in got if isinstance(e, NoFit))
    finally:
        for r in granted:
            release_now(r)


def test_a_claim_that_loses_its_race_is_reported_and_placed_again(cluster: Cluster) -> None:
    """Between placement's read and its claim another task takes every GPU of the chosen host: the
    claim loses, the caller is told on which host (the operator counts it in Airflow's metrics,
    ``gpu_docker.claim_retries``), and placement reads again and claims on the other host."""
    lost: list[str] = []
    taken: list[Reserved] = []

    def taken_meanwhile(host: HostConfig) -> None:
        if not taken:
            taken.append(reserve(PlacementRequest(gpus=len(INVENTORIES[host.name])), [host.name]))

    reserved = reserve(PlacementRequest(gpus=1), ["pool_a", "pool_b"], prepare=taken_meanwhile,
                       on_claim_lost=lost.append)
    try:
        assert lost == [taken[0].host.name]
        assert reserved.host.name != taken[0].host.name
    finally:
        release_now(reserved)
        release_now(taken[0])


def test_agent_down_host_is_skipped_with_reason(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = start_agent(cluster.workdir, "pool_b_gone", INVENTORIES["pool_b"])
    stop_agent(gone.process)
    define_host(monkeypatch, "pool_b", cluster.engines["pool_b"].url, gone.url)
    with pytest.raises(NoFit, match=r"pool_b: unreachable: agent .* refused the connection"):
        reserve(PlacementRequest(gpus=2, gpu_model="T4"))
    reserved = reserve(PlacementRequest(gpus=1))
    release_now(reserved)
    assert reserved.host.name == "pool_a" and "pool_b" in reserved.placement.rejections


def test_daemon_down_host_is_skipped_with_reason(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = PrivateDockerd("pool_d").start()
    agent = start_agent(cluster.workdir, "pool_d", gpus(8, "A100-80GB", 81920))
    try:
        define_host(monkeypatch, "pool_d", engine.url, agent.url)
        engine.stop()
        reserved = reserve(PlacementRequest(gpus=1), [*POOL, "pool_d"])
        release_now(reserved)
        # pool_d's 8 idle GPUs would win if its engine answered; which of pool_a and pool_b wins
        # instead turns on their agents' CPU samples of this one machine, so neither is named.
        assert reserved.host.name in ("pool_a", "pool_b") and "pool_d" not in reserved.placement.scores
        assert "Docker engine of host 'pool_d' at unix://" in str(reserved.placement.rejections["pool_d"][0])
    finally:
        stop_agent(agent.process)
        engine.stop()


def test_gpu_tasks_avoid_a_host_without_the_nvidia_runtime(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine without the NVIDIA runtime offers no GPUs, whatever its agent measures: placement
    goes elsewhere instead of failing there (and again on every retry)."""
    engine = PrivateDockerd("plain").start()
    agent = start_agent(cluster.workdir, "plain", gpus(8, "A100-80GB", 81920))
    try:
        engine.load(TESTBOX_IMAGE)
        define_host(monkeypatch, "plain", engine.url, agent.url)
        reserved = reserve(PlacementRequest(gpus=1), ["plain", "pool_a"])
        release_now(reserved)
        assert reserved.host.name == "pool_a"
        assert "no NVIDIA runtime in its engine" in str(reserved.placement.rejections["plain"][0])
        with pytest.raises(NoFit, match=r"plain: no NVIDIA runtime in its engine \(runtimes: .*runc.*\).*"
                                        "nvidia-ctk runtime configure.*even with nothing else running"):
            reserve(PlacementRequest(gpus=1), ["plain"])
        cpu_only = reserve(PlacementRequest(cpu_milli=100), ["plain"])  # CPU work still runs there
        release_now(cpu_only)
    finally:
        stop_agent(agent.process)
        engine.stop()


def test_an_nvidia_runtime_that_cannot_start_gpu_containers_is_a_host_problem(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, ti: FakeTI
) -> None:
    """A runtime named nvidia without the NVIDIA container hook: the engine refuses to start GPU
    containers; the task names the host and the fix, leaves no container or claim, and the
    host is offered no GPU work for a while, so the retry does not fail there again."""
    engine = PrivateDockerd("broken", extra_args=["--add-runtime=nvidia=runc"]).start()
    agent = start_agent(cluster.workdir, "broken", gpus(1, "A100-80GB", 81920))
    try:
        engine.load(TESTBOX_IMAGE)
        define_host(monkeypatch, "broken", engine.url, agent.url)
        op = GpuDockerOperator(task_id="train", image=TESTBOX_IMAGE, pull="never", gpu_pool=["broken"], gpus=1,
                               command=["true"], log_archive=None)
        with pytest.raises(NoGpuRuntime, match="'broken' has a runtime named nvidia but cannot start GPU containers"
                                               ".*problem of the host.*nvidia-ctk runtime configure"):
            run_task(op, ti)
        assert [c["Names"] for c in engine.containers()] == [["/gpu-docker-gpu-problem"]]  # no task, no claim
        # The host remembers it: the retry goes elsewhere, CPU work still goes there.
        retry = reserve(PlacementRequest(gpus=1), ["broken", "pool_a"])
        release_now(retry)
        assert retry.host.name == "pool_a"
        assert "GPU containers failed to start there lately" in str(retry.placement.rejections["broken"][0])
        release_now(cpu_work := reserve(PlacementRequest(cpu_milli=100), ["broken"]))
        assert cpu_work.host.name == "broken"
    finally:
        stop_agent(agent.process)
        engine.stop()


def claim_and_die(pool: list[str], results: Any) -> None:
    """A worker that reserves two GPUs and is killed before it can release them."""
    r = reserve(PlacementRequest(gpus=2, gpu_model="T4"), pool)
    results.put([r.reservation.claim_id])
    results.close()
    results.join_thread()  # the message must be out before the kill
    os.kill(os.getpid(), signal.SIGKILL)


def test_reservation_of_a_killed_worker_is_reclaimed_once_stale(cluster: Cluster) -> None:
    ctx = contenders()
    results = ctx.Queue()
    worker = ctx.Process(target=in_env, args=(dict(os.environ), claim_and_die, POOL, results))
    worker.start()
    orphaned = results.get(timeout=60)
    worker.join(30)
    assert worker.exitcode == -signal.SIGKILL
    assert sorted(claims(cluster.engines["pool_b"])) == sorted(orphaned)
    with pytest.raises(NoFit, match="pool_b: gpu free 0 of 2 < 2"):
        reserve(PlacementRequest(gpus=2, gpu_model="T4"))  # within the grace period: still held
    [claim] = [c for c in map(parse_claim, cluster.engines["pool_b"].containers(f"{CLAIM_LABEL}=true")) if c]
    hosts = resolve_pool(POOL, BaseHook.get_connection)
    # By the engine's clock as this process reads it, which is behind by the latency of the
    # engine's /info answer (ages are never overstated): that is the clock the reader judges by.
    engine_b = AsyncEngine(next(h for h in hosts if h.name == "pool_b"))
    eventually(lambda: (asyncio.run(engine_info(engine_b)).now() or 0.0) - (claim.created or 0.0) > 1.0, 10,
               interval_s=0.05, what="the orphaned claim older than the reader's grace of 1 s by its engine's clock")
    asyncio.run(read_pool_view(hosts, agent_timeout=2.0, grace_s=1.0))  # the next reader reclaims
    assert claims(cluster.engines["pool_b"]) == []
    release_now(reserve(PlacementRequest(gpus=2, gpu_model="T4")))


def test_a_claim_counts_as_load_until_the_agents_samples_show_it(cluster: Cluster) -> None:
    """The pool reader counts a claim made after (or just before) its host's agent sampled as
    CPU load the sample does not show yet: a core for a task that reserves none. Read from the
    engine's claim and the agent's ``sampled_at`` (both this machine's clock); once the agent
    has sampled past the window, the measurement is left to speak for itself."""
    hosts = resolve_pool(["pool_a"], BaseHook.get_connection)

    def host_a() -> NodeState:
        return asyncio.run(read_pool_view(hosts, tidy=False)).nodes[0]

    reserved = reserve(PlacementRequest(gpus=1), ["pool_a"])
    try:
        first = host_a()
        created = parse_claim(cluster.engines["pool_a"].containers(f"{CLAIM_LABEL}=true")[0])
        assert first.measured_at is not None and created is not None
        assert first.measured_at - created.created < MEASURE_WINDOW_S  # read right after the claim
        assert first.cpu_unmeasured_milli == UNRESERVED_CPU_MILLI
        later = eventually(host_a, 10, until=lambda n: n.cpu_unmeasured_milli == 0,
                           what="an agent sample taken after the claim's window")
        assert later.measured_at is not None and later.measured_at > created.created + MEASURE_WINDOW_S
        assert later.cpu_allocated_milli == 0 and later.gpus[reserved.placement.gpu_indices[0]].allocated_milli == 1000
    finally:
        release_now(reserved)


@pytest.mark.skipif(not (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists(), reason="needs cgroup v1's cpu hierarchy")
def test_jobs_placed_within_one_sample_spread_over_hosts_that_all_look_idle(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two jobs asking only for a GPU, placed back to back (well within one sampling interval
    of the agents), go to different hosts: the second sees the first's claim, read from the
    engine, as load the first host's reading does not show yet. The hosts' agents report cgroups
    of their own, idle, so both read 0% busy and only the claim tells them apart (agents that
    measure this whole machine would read whatever else runs on it, which decides nothing).
    ``pool_a``'s GPUs read idle and ``pool_b``'s 10% busy, so a policy that trusted the stale
    readings would put both on ``pool_a``."""
    inventories = {"pool_a": gpus(4, "A100-80GB", 81920, util=0.0), "pool_b": INVENTORIES["pool_b"]}
    groups = [f"gdt-{os.getpid()}-spread-{h}" for h in ("a", "b")]
    agents: list[RunningAgent] = []
    made: list[str] = []
    placed: list[Reserved] = []
    try:
        for group, host in zip(groups, ("pool_a", "pool_b")):
            make_cpu_quota_group(group, 1.0)
            made.append(group)
            agents.append(start_agent(cluster.workdir, f"{host}-cgroup", inventories[host], cgroup=group))
            define_host(monkeypatch, host, cluster.engines[host].url, agents[-1].url)
        eventually(lambda: [agent_busy_pct(a) for a in agents], 10, what="both groups' agents reading idle",
                   until=lambda busy: max(busy) < 5.0)
        began = time.monotonic()
        for _ in range(2):
            placed.append(reserve(PlacementRequest(gpus=1), ["pool_a", "pool_b"]))
        assert time.monotonic() - began < MEASURE_WINDOW_S, "too slow to test: the first claim's window had passed"
        assert {h: len(claims(cluster.engines[h])) for h in ("pool_a", "pool_b")} == {"pool_a": 1, "pool_b": 1}
    finally:
        for r in placed:
            release_now(r)
        for agent in agents:
            stop_agent(agent.process)
        for group in made:
            remove_cgroup(group)


def agent_busy_pct(agent: RunningAgent) -> float:
    """The CPU utilisation an agent reports now."""
    return float(httpx.get(f"{agent.url}/v1/node", timeout=5).json()["cpu"]["utilization_pct"])


# CPU and memory are reserved like GPUs. This machine has 2 CPUs, which every agent reports;
# tasks asking for half a CPU give each host 4 slots, as 4 CPUs and cpus=1 would.
CPU_POOL = ["pool_a", "pool_b"]


def host_load(engine: PrivateDockerd) -> tuple[int, int, dict[int, int]]:
    """CPU (milli), memory (MB) and milli per GPU reserved on ``engine``, from its claims."""
    parsed = [c for c in (parse_claim(x) for x in engine.containers(f"{CLAIM_LABEL}=true")) if c is not None]
    per_gpu: dict[int, int] = {}
    for c in parsed:
        for gpu in c.gpus:
            per_gpu[gpu] = per_gpu.get(gpu, 0) + c.milli
    return sum(c.cpu_milli for c in parsed), sum(c.memory_mb for c in parsed), per_gpu


def contend_for(shape: tuple[int, int, int, int], barrier: Any, results: Any) -> None:
    """One contender of a race: its request is ``(gpus, gpu_milli, cpu_milli, memory_mb)``."""
    gpus_, milli, cpu, memory = shape
    barrier.wait()
    try:
        r = reserve(PlacementRequest(gpus=gpus_, gpu_milli=milli, cpu_milli=cpu, memory_mb=memory), CPU_POOL)
    except NoFit as exc:
        results.put(("nofit", str(exc)))
        return
    results.put(("granted", r.host.name, r.reservation.claim_id))


def contend_watched(cluster: Cluster, target: Any, args: list[Any], look: Any) -> list[tuple[Any, ...]]:
    """One contender process per entry of ``args`` (``target(arg, barrier, results)``), all let
    go at once; ``look()`` reads the engines every 10 ms while they claim. Returns the outcomes,
    ``("granted", host, claim id, ...)`` or ``("nofit", message, ...)``; granted claims are
    removed at the end, by id."""
    ctx = contenders()
    barrier, results = ctx.Barrier(len(args)), ctx.Queue()
    env = dict(os.environ)
    procs = [ctx.Process(target=in_env, args=(env, target, arg, barrier, results)) for arg in args]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            look()
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    outcomes: list[tuple[Any, ...]] = []
    try:
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=180) for _ in procs]
    finally:
        for p in procs:
            if p.pid is not None:
                p.join(30)
                if p.is_alive():
                    p.kill()
        done.set()
        watcher.join()
        for o in outcomes:
            if o[0] == "granted":
                with cluster.engines[o[1]].client() as c:
                    c.containers.get(o[2]).remove(force=True)
    return outcomes


def race(cluster: Cluster, requests: list[PlacementRequest]) -> tuple[list[tuple[Any, ...]], dict[str, tuple[int, int, int]]]:
    """Start one process per request at once; while they claim, watch every engine's claims.

    Returns the outcomes and, per host, the most CPU, memory and milli on one GPU ever seen
    reserved at one instant. Granted claims are removed at the end, by id.
    """
    shapes = [(r.gpus, r.gpu_milli, r.cpu_milli, r.memory_mb) for r in requests]
    peak = {name: (0, 0, 0) for name in CPU_POOL}

    def look() -> None:
        for name in CPU_POOL:
            cpu, memory, per_gpu = host_load(cluster.engines[name])
            old = peak[name]
            peak[name] = (max(old[0], cpu), max(old[1], memory), max([old[2], *per_gpu.values()]))

    outcomes = contend_watched(cluster, contend_for, shapes, look)
    return outcomes, peak


def race_capacity() -> tuple[int, int]:
    """CPU (milli) and memory (MB) that both race hosts' agents report: this machine's."""
    nodes = asyncio.run(read_pool_view(resolve_pool(CPU_POOL, BaseHook.get_connection), tidy=False)).nodes
    assert all(n.unreachable is None for n in nodes) and len({(n.cpu_milli, n.memory_mb) for n in nodes}) == 1
    return nodes[0].cpu_milli, nodes[0].memory_mb


@pytest.mark.parametrize(("resource", "per_host"), [pytest.param("cpu", 4, id="cpu"), pytest.param("memory", 8, id="memory")])
def test_24_processes_race_for_cpu_or_memory_slots(cluster: Cluster, resource: str, per_host: int) -> None:
    """Each host has room for ``per_host`` such tasks: exactly that many win on each, never more
    are reserved at any instant, and the rest are told which resource ran out."""
    cpu, memory = race_capacity()
    if resource == "cpu":
        request, capacity, seen = PlacementRequest(cpu_milli=cpu // per_host), cpu, 0
    else:
        request, capacity, seen = PlacementRequest(memory_mb=memory // per_host), memory, 1
    outcomes, peak = race(cluster, [request] * 24)
    granted = [o for o in outcomes if o[0] == "granted"]
    assert len(outcomes) == 24 and len(granted) == 2 * per_host
    assert sorted(o[1] for o in granted) == ["pool_a"] * per_host + ["pool_b"] * per_host
    assert all(f"{resource} free" in o[1] for o in outcomes if o[0] == "nofit")
    assert all(p[seen] <= capacity for p in peak.values()), peak


def test_mixed_gpu_and_cpu_requests_never_overcommit(cluster: Cluster) -> None:
    cpu, _ = race_capacity()
    requests = [PlacementRequest(gpus=1, cpu_milli=cpu // 4), PlacementRequest(gpus=1, gpu_milli=600, cpu_milli=cpu // 8),
                PlacementRequest(cpu_milli=cpu // 4)] * 8
    outcomes, peak = race(cluster, requests)
    assert len(outcomes) == 24 and any(o[0] == "granted" for o in outcomes)
    for name, (cpu_peak, _, gpu_peak) in peak.items():
        assert cpu_peak <= cpu and gpu_peak <= 1000, (name, peak)


QUEUE_POOL = ["pool_a", "pool_b"]
QUEUE_CAPS = {"vision": 1500, "nlp": 1000}
"""What each queue may use at most, in milli-GPUs: ``vision`` its quota of one GPU and half a GPU
borrowed, ``nlp`` its quota of one GPU."""


def define_queue_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """``qpool``: pool_a (4 GPUs) and pool_b (2), shared by vision and nlp through queues."""
    queues = {"vision": {"quota": {"gpus": 1}, "borrowing_limit": {"gpus": 0.5}},
              "nlp": {"quota": {"gpus": 1}, "borrowing_limit": {"gpus": 0}}}
    monkeypatch.setenv("AIRFLOW_CONN_QPOOL", json.dumps(
        {"conn_type": "gpu_docker_pool", "extra": {"hosts": QUEUE_POOL, "queues": queues}}))


def queue_gpus(cluster: Cluster) -> dict[str, int]:
    """Milli-GPUs each queue's claims hold on the queue pool's engines, read from their labels."""
    used: dict[str, int] = {}
    for name in QUEUE_POOL:
        for claim in (parse_claim(x) for x in cluster.engines[name].containers(f"{CLAIM_LABEL}=true")):
            if claim is not None and claim.queue is not None:
                used[claim.queue] = used.get(claim.queue, 0) + claim.milli * len(claim.gpus)
    return used


def contend_in_queue(queue: str, barrier: Any, results: Any) -> None:
    """One contender of the queue race: a quarter of a GPU for ``queue`` of ``qpool``. Between reading the
    pool and claiming it spends half a second readying the host, as the operator does when it
    checks or pulls the image there: every contender has read the pool before the first claims."""
    ticket = QueueTicket.of("qpool", pool_extra("qpool", BaseHook.get_connection), queue, 1)
    barrier.wait()
    try:
        r = reserve_now(resolve_pool("qpool", BaseHook.get_connection), PlacementRequest(gpus=1, gpu_milli=250),
                        image=TESTBOX_IMAGE, ticket=ticket, prepare=lambda host: time.sleep(0.5))
    except NoFit as exc:
        results.put(("nofit", str(exc), queue))
        return
    results.put(("granted", r.host.name, r.reservation.claim_id, queue))


def test_24_processes_of_two_queues_never_take_more_than_their_quota_and_borrowing(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve processes per queue claim a quarter of a GPU each at once, on two hosts with room
    for all 24: only the queues limit them. The per-host claim lock alone would let a queue's
    tasks that read the pool at the same moment all claim. Read from the engines while they
    race, neither queue ever holds more than its quota plus what it may borrow; together they
    use the queues' two GPUs (vision borrows nlp's idle half if it gets there first), and the
    rest are told their place in line and why."""
    define_queue_pool(monkeypatch)
    peak: dict[str, int] = {}

    def look() -> None:
        for queue, n in queue_gpus(cluster).items():
            peak[queue] = max(peak.get(queue, 0), n)

    outcomes = contend_watched(cluster, contend_in_queue, ["vision", "nlp"] * 12, look)
    won = {q: sum(1 for o in outcomes if o[0] == "granted" and o[3] == q) for q in QUEUE_CAPS}
    assert len(outcomes) == 24 and sum(won.values()) == 8, outcomes
    assert all(won[q] * 250 <= cap for q, cap in QUEUE_CAPS.items()), won
    assert all(peak.get(q, 0) <= cap for q, cap in QUEUE_CAPS.items()), peak
    assert all(f"waits in line: queue {o[2]}" in o[1] for o in outcomes if o[0] == "nofit"), outcomes
    for name in QUEUE_POOL:  # no queue lock or place in line is left behind
        assert cluster.engines[name].containers(f"{RESERVATION_LABEL}") == []
