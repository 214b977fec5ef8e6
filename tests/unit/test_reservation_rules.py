"""Pure rules of reservations: claim labels, the fold through the accounting and placement's
capacity check, staleness, holds, and the one room decision."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from provider.scheduling.no_fit import NoFit
from provider.labels import CLAIM_LABEL, OWNER_LABEL
from provider.reservations.room import Verdict, advice, room
from provider.reservations.rules import (
    Claim,
    GpuProblem,
    allocation,
    claim_labels,
    claim_name,
    claim_shortfalls,
    hold_labels,
    live_owners,
    parse_claim,
    parse_hold,
    parse_problem,
    problem_labels,
    stale_claims,
    unreserved,
)
from provider.reservations.strict import CREATED_RESOLUTION_S
from provider.reservations.view import HostView, PoolView
from provider.scheduling import (
    MILLI_PER_GPU,
    Insufficient,
    InsufficientOnGpu,
    NoSuchGpu,
    PlacementContext,
    Reason,
    Resource,
    Resources,
    Unreachable,
    apply,
    get_policy,
)
from provider.scheduling.accounting import MEASURE_WINDOW_S, UNRESERVED_CPU_MILLI
from provider.scheduling.model import GpuState, NodeState, PlacementRequest
from provider.task_instance import MAP_INDEX_LABEL, TaskInstanceRef


DEPLOYMENT = "dep-a"


def claim(gpus: tuple[int, ...] = (0,), milli: int = 1000, owner: str = "o1", created: float = 100.0,
          cpu: int = 0, memory: int = 0) -> Claim:
    return Claim(container_id=f"c-{owner}", owner=owner, gpus=gpus, milli=milli, cpu_milli=cpu, memory_mb=memory,
                 created=created)


def host(gpus: int = 3, cpu: int = 4000, memory: int = 8192) -> NodeState:
    return NodeState("a", cpu_milli=cpu, memory_mb=memory, gpus=tuple(GpuState(i) for i in range(gpus)))


def test_one_claim_per_owner_and_host() -> None:
    assert claim_name("a") != claim_name("b") and claim_name("a").startswith("gpu-docker-claim-")


def test_labels_round_trip_with_cpu_memory_and_the_task() -> None:
    request = PlacementRequest(gpus=1, gpu_milli=500, cpu_milli=2000, memory_mb=4096)
    labels = claim_labels(request, (2,), "own", TaskInstanceRef("d", "t", "r", 3, 1), deployment=DEPLOYMENT)
    assert parse_claim({"Id": "x", "Created": 1234, "Labels": labels}) == Claim(
        "x", "own", (2,), 500, 2000, 4096, 1234.0 + CREATED_RESOLUTION_S, TaskInstanceRef("d", "t", "r", 3, 1), deployment=DEPLOYMENT)


def test_cpu_only_claim_round_trips() -> None:
    labels = claim_labels(PlacementRequest(cpu_milli=1000), (), "own", None, deployment=DEPLOYMENT)
    parsed = parse_claim({"Id": "x", "Created": 1, "Labels": labels})
    assert parsed is not None and parsed.gpus == () and parsed.cpu_milli == 1000 and parsed.task is None
    assert parsed.malformed is None


def test_a_container_without_the_claim_label_is_no_claim() -> None:
    assert parse_claim({"Id": "x", "Created": 1, "Labels": {OWNER_LABEL: "o"}}) is None


def test_allocation_folds_claims_through_apply() -> None:
    """The fold is the simulator's: the same result as applying each claim's request in turn."""
    node = host()
    claims = [claim((0,)), claim((2,), 300, "x", cpu=1000, memory=512), claim((2,), 200, "y", cpu=500)]
    folded = allocation(node, claims)
    expected = node
    for c in claims:
        expected = apply(expected, c.resources, c.gpus)
    assert folded.node == expected
    assert [g.allocated_milli for g in folded.node.gpus] == [1000, 0, 500]
    assert (folded.node.cpu_allocated_milli, folded.node.memory_allocated_mb) == (1500, 512)
    assert [g.allocated_milli for g in node.gpus] == [0, 0, 0]  # input untouched


@pytest.mark.parametrize(
    ("claims", "refused"),
    [
        pytest.param([claim((0,), owner="old", created=1), claim((0,), owner="new", created=2)], ["new"],
                     id="two-whole-claims-of-one-gpu-the-later-loses"),
        pytest.param([claim((0,), 600, "new", created=2), claim((0,), 600, "old", created=1)], ["new"],
                     id="shares-over-one-gpu-in-any-list-order"),
        pytest.param([claim((), owner=f"o{i}", created=i, cpu=1000) for i in range(5)], ["o4"],
                     id="cpu-over-capacity"),
        pytest.param([claim((), owner="a", created=1, memory=8000), claim((), owner="b", created=2, memory=500)],
                     ["b"], id="memory-over-capacity"),
        pytest.param([claim((9,))], ["o1"], id="gpu-the-host-no-longer-has"),
    ],
)
def test_the_oldest_claims_win(claims: list[Claim], refused: list[str]) -> None:
    assert [c.owner for c in allocation(host(), claims).refused] == refused


def test_claims_made_since_the_measurement_are_load_it_does_not_show_yet() -> None:
    """A claim newer than the host's measurement (less than MEASURE_WINDOW_S before it) is
    counted as unseen CPU load: its reserved milli-CPUs, or one core when it reserves none.
    Older claims are in the measurement already, and without a measurement time nothing is."""
    claims = [claim((0,), owner="old", created=100 - MEASURE_WINDOW_S - 0.1, cpu=2000),
              claim((1,), owner="reserving", created=100 - MEASURE_WINDOW_S + 0.1, cpu=500),
              claim((2,), owner="gpu_only", created=103)]
    measured = replace(host(), measured_at=100.0)
    assert allocation(measured, claims).node.cpu_unmeasured_milli == 500 + UNRESERVED_CPU_MILLI
    assert allocation(host(), claims).node.cpu_unmeasured_milli == 0
    assert unreserved(allocation(measured, claims).node).cpu_unmeasured_milli == 0


def test_unreachable_node_is_left_as_is() -> None:
    node = NodeState("a", unreachable="down")
    assert allocation(node, [claim()]).node is node


@pytest.mark.parametrize(
    ("taken", "request_", "gpus", "expected"),
    [
        pytest.param([], PlacementRequest(gpus=1, cpu_milli=4000), (0,), (), id="fits-exactly"),
        pytest.param([claim((0,), 300, "x")], PlacementRequest(gpus=1), (0,),
                     (InsufficientOnGpu(Resource.GPU_MILLI, 1000, 700, MILLI_PER_GPU, gpu=0),), id="whole-on-share"),
        pytest.param([claim((0,), 300, "x"), claim((0,), 400, "y")], PlacementRequest(gpus=1, gpu_milli=300), (0,),
                     (), id="shares-fit"),
        pytest.param([claim((), cpu=3500)], PlacementRequest(cpu_milli=1000), (),
                     (Insufficient(Resource.CPU, 1000, 500, 4000),), id="cpu"),
        pytest.param([claim((), memory=8000)], PlacementRequest(memory_mb=500), (),
                     (Insufficient(Resource.MEMORY, 500, 192, 8192),), id="memory"),
        pytest.param([], PlacementRequest(gpus=2), (0, 7), (NoSuchGpu(7),), id="a-gpu-the-host-lacks"),
        pytest.param([], PlacementRequest(gpus=2), (1, 1), (InsufficientOnGpu(Resource.GPU_MILLI, 2000, 1000, 1000, gpu=1),),
                     id="one-gpu-named-twice-holds-both-parts"),
    ],
)
def test_claim_shortfalls(
    taken: list[Claim], request_: PlacementRequest, gpus: tuple[int, ...], expected: tuple[object, ...]
) -> None:
    """A claim is checked by placement's capacity check, on the GPUs it names."""
    base = allocation(host(), taken).node
    assert claim_shortfalls(base, request_.resources, gpus) == expected


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        pytest.param(InsufficientOnGpu(Resource.GPU_MILLI, 1000, 700, MILLI_PER_GPU, gpu=0), "gpu 0 free 700m < 1000m",
                     id="named-gpu"),
        pytest.param(Insufficient(Resource.CPU, 1000, 500, 4000), "cpu free 500m < 1000m", id="cpu"),
        pytest.param(NoSuchGpu(7), "no GPU with index 7", id="missing-gpu"),
    ],
)
def test_a_claim_is_refused_in_the_words_of_placement(reason: object, text: str) -> None:
    assert str(reason) == text


def test_a_claim_is_checked_against_capacity_not_measured_availability() -> None:
    """What the agent measures lags the tasks the claims are for: a claim is not refused for it."""
    node = replace(host(memory=8192), memory_available_mb=100)
    assert claim_shortfalls(node, Resources(memory_mb=4096), ()) == ()


def test_unmeasured_host_checks_gpus_only() -> None:
    node = NodeState("a", unmeasured="no agent")
    assert claim_shortfalls(node, Resources(cpu_milli=64000, memory_mb=10**6), ()) == ()
    assert claim_shortfalls(node, Resources(gpus=1), (0,)) == (NoSuchGpu(0),)


def test_a_claim_no_request_could_make_is_not_ours() -> None:
    labels = {**claim_labels(PlacementRequest(gpus=1).resources, (1, 2), "o", None, deployment=DEPLOYMENT),
              "airflow-gpu-docker.claim.milli": "500"}
    parsed = parse_claim({"Id": "x", "Created": 1, "Labels": labels})  # a share spread over two GPUs
    assert parsed is not None and parsed.malformed is not None and "gpu_milli" in parsed.malformed


def test_unreserved_forgets_reservations_not_capacity() -> None:
    node = allocation(host(), [claim((1,), cpu=100, memory=10)]).node
    empty = unreserved(node)
    assert empty == host()


@pytest.mark.parametrize(
    ("owner", "created", "live", "stale"),
    [
        pytest.param("o1", 0.0, set(), True, id="old-no-task"),
        pytest.param("o1", 95.0, set(), False, id="young-no-task-yet"),
        pytest.param("o1", 0.0, {"o1"}, False, id="old-task-running"),
    ],
)
def test_stale_means_old_and_taskless(owner: str, created: float, live: set[str], stale: bool) -> None:
    c = claim(owner=owner, created=created)
    assert stale_claims([c], live, now=100.0, grace_s=10.0) == ([c] if stale else [])


def test_live_owners_are_running_task_containers() -> None:
    owned = [
        {"Id": "c1", "State": "created", "Labels": {CLAIM_LABEL: "true", OWNER_LABEL: "a"}},
        {"Id": "t1", "State": "running", "Labels": {OWNER_LABEL: "a"}},
        {"Id": "t2", "State": "exited", "Labels": {OWNER_LABEL: "b"}},
    ]
    assert live_owners(owned) == {"a"}


def test_hold_round_trips_and_is_listed_with_the_owner_label() -> None:
    labels = hold_labels("w1", 10.0, 60.0, TaskInstanceRef("d", "t", "r", -1, 1), deployment=DEPLOYMENT)
    record = parse_hold("a", {"Id": "h", "Created": 10, "Labels": labels})
    assert record is not None and record.hold.owner == "w1" and record.expires == 70.0 + CREATED_RESOLUTION_S  # created + lease
    assert record.deployment == DEPLOYMENT
    assert record.task == TaskInstanceRef("d", "t", "r", -1, 1) and labels[OWNER_LABEL] == "w1"


@pytest.mark.parametrize(
    ("labels", "ref"),
    [
        pytest.param(TaskInstanceRef("d", "t", "r", 4, 2).to_labels(), TaskInstanceRef("d", "t", "r", 4, 2), id="full"),
        pytest.param({"x": "y"}, None, id="no-task"),
        pytest.param({**TaskInstanceRef("d", "t", "r", 4, 2).to_labels(), MAP_INDEX_LABEL: "x"}, None, id="malformed"),
    ],
)
def test_task_ref(labels: dict[str, str], ref: TaskInstanceRef | None) -> None:
    assert TaskInstanceRef.from_labels(labels) == ref


def view_of(*hosts: tuple[NodeState, tuple[Claim, ...]]) -> PoolView:
    return PoolView(tuple(HostView(node=allocation(n, c).node, measured=n, claims=c) for n, c in hosts))


def test_room_names_who_holds_a_full_host_and_a_host_without_gpus_differently() -> None:
    busy = claim((0,), owner="x")
    busy = Claim(busy.container_id, "x", (0,), 1000, 0, 0, 1.0, TaskInstanceRef("train", "fit", "run1"))
    view = view_of((host(gpus=1), (busy,)), (NodeState("cpu", cpu_milli=4000, memory_mb=4096), ()))
    answer = room(PlacementRequest(gpus=1), view, get_policy("least_loaded"), PlacementContext(rng=random.Random(0)))
    assert answer.verdict is Verdict.WAIT and answer.no_fit is not None
    text = str(answer.no_fit)
    assert "a: gpu free 0 of 1 < 1 (held by train.fit run1)" in text
    assert "cpu: has no GPUs" in text


@pytest.mark.parametrize(
    ("request_", "verdict"),
    [
        pytest.param(PlacementRequest(gpus=1), Verdict.FITS, id="fits"),
        pytest.param(PlacementRequest(gpus=3), Verdict.WAIT, id="wait-for-the-busy-gpu"),
        pytest.param(PlacementRequest(gpus=4), Verdict.NEVER, id="never-more-than-the-host-has"),
    ],
)
def test_room_verdicts(request_: PlacementRequest, verdict: Verdict) -> None:
    view = view_of((host(gpus=3), (claim((0,)),)))
    answer = room(request_, view, get_policy("least_loaded"), PlacementContext(rng=random.Random(0)))
    assert answer.verdict is verdict
    assert (answer.placement is not None) == (verdict is Verdict.FITS)
    if verdict is Verdict.NEVER:
        assert answer.no_fit is not None and "even with nothing else running" in str(answer.no_fit)


def test_a_gpu_problem_marker_round_trips_and_is_listed_with_the_owner_label() -> None:
    labels = problem_labels("could not select device driver", 600.0, deployment=DEPLOYMENT)
    assert parse_problem({"Id": "p", "Created": 100, "Labels": labels}) == GpuProblem(
        "p", "could not select device driver", 700.0 + CREATED_RESOLUTION_S, DEPLOYMENT)
    assert OWNER_LABEL in labels and parse_claim({"Id": "p", "Labels": labels}) is None
    assert parse_problem({"Id": "c", "Created": 1, "Labels": claim_labels(PlacementRequest(gpus=1), (0,), "o", None,
                                                                          deployment=DEPLOYMENT)}) is None


def test_a_host_suspended_for_a_gpu_problem_is_worth_waiting_for_one_without_runtime_is_not() -> None:
    policy, context = get_policy("least_loaded"), PlacementContext(rng=random.Random(0))
    suspended = replace(host(gpus=1), gpu_suspended="GPU containers failed to start there lately: ...")
    no_runtime = replace(host(gpus=1), gpu_unusable="no NVIDIA runtime in its engine")
    assert room(PlacementRequest(gpus=1), view_of((suspended, ())), policy, context).verdict is Verdict.WAIT
    assert room(PlacementRequest(gpus=1), view_of((no_runtime, ())), policy, context).verdict is Verdict.NEVER


@pytest.mark.parametrize(
    ("rejections", "fix_hosts"),
    [
        pytest.param({"a": (Unreachable("timeout 2 s"),), "b": (Unreachable("refused"),)}, True, id="none-read"),
        pytest.param({"a": (Unreachable("timeout 2 s"),), "b": (Insufficient(Resource.GPUS, 1, 0, 1),)}, False,
                     id="one-full"),
        pytest.param({"a": (Insufficient(Resource.GPUS, 1, 0, 1),)}, False, id="all-full"),
    ],
)
def test_advice_tells_unreadable_hosts_from_full_ones_by_the_reasons_type(
    rejections: dict[str, tuple[Reason, ...]], fix_hosts: bool
) -> None:
    text = advice(NoFit(PlacementRequest(gpus=1), rejections))
    assert ("start or fix the agents" in text) is fix_hosts
    assert ("wait_for_resources=True" in text) is not fix_hosts
