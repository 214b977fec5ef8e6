"""Labels read strictly, ages on the engine's clock, and the deployment id.

Anyone who can create a container on a host's engine can write any label on it. These tables
are the attacks: ``nan``, ``inf``, huge and negative numbers, missing and unknown keys, and what
each reader then does (docs/security/labels.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import pytest

from provider.errors import GpuDockerError, HostConfigError, LabelError
from provider.labels import (
    CLAIM_CPU_LABEL,
    CLAIM_GPUS_LABEL,
    CLAIM_LABEL,
    CLAIM_MEMORY_LABEL,
    CLAIM_MILLI_LABEL,
    DEPLOYMENT_LABEL,
    HOLD_LEASE_LABEL,
    HOLD_SINCE_LABEL,
    OWNER_LABEL,
    PROBLEM_LEASE_LABEL,
)
from provider.clients.hosts import HostConfig
from provider.reservations import strict
from provider.reservations.adopt import earlier_of
from provider.reservations.deployment import checked_id, current_deployment, derived_id
from provider.reservations.engine_clock import EngineInfo, engine_seconds
from provider.reservations.rules import (
    LEGACY_CREATED_LABEL,
    allocation,
    claim_labels,
    claim_shortfalls,
    hold_labels,
    line_labels,
    parse_claim,
    parse_hold,
    parse_place_in_line,
    parse_problem,
    problem_labels,
    stale_claims,
)
from provider.reservations.view import HostView, PoolView
from provider.scheduling.model import GpuState, NodeState, PlacementRequest, Resources
from provider.scheduling.queues import Amounts, Waiting
from provider.task_instance import TaskInstanceRef

MINE, THEIRS = "dep-a", "dep-b"
TASK = TaskInstanceRef("train", "fit", "run1", -1, 1)
CREATED = 1_800_000_000


def claim_entry(damage: dict[str, Any] | None = None, *, created: object = CREATED, owner: str = "o1",
                gpus: tuple[int, ...] = (1,), deployment: str = MINE, queue: str | None = None) -> dict[str, Any]:
    """A claim as the engine lists it, its labels as the provider writes them, then damaged."""
    labels = claim_labels(PlacementRequest(gpus=len(gpus), cpu_milli=1000, memory_mb=512), gpus, owner, TASK, queue,
                          deployment=deployment)
    entry: dict[str, Any] = {"Id": f"c-{owner}", "State": "created", "Labels": {**labels, **(damage or {})}}
    if created is not None:
        entry["Created"] = created
    return entry


def host(gpus: int = 4) -> NodeState:
    return NodeState("h", cpu_milli=8000, memory_mb=16384, gpus=tuple(GpuState(i) for i in range(gpus)))


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        pytest.param({CLAIM_MILLI_LABEL: "nan"}, CLAIM_MILLI_LABEL, id="milli-nan"),
        pytest.param({CLAIM_MILLI_LABEL: "inf"}, CLAIM_MILLI_LABEL, id="milli-inf"),
        pytest.param({CLAIM_MILLI_LABEL: "-1000"}, CLAIM_MILLI_LABEL, id="milli-negative"),
        pytest.param({CLAIM_MILLI_LABEL: "0"}, CLAIM_MILLI_LABEL, id="milli-zero"),
        pytest.param({CLAIM_MILLI_LABEL: "1001"}, CLAIM_MILLI_LABEL, id="milli-above-a-gpu"),
        pytest.param({CLAIM_CPU_LABEL: "-5"}, CLAIM_CPU_LABEL, id="cpu-negative"),
        pytest.param({CLAIM_CPU_LABEL: "1e30"}, CLAIM_CPU_LABEL, id="cpu-float-huge"),
        pytest.param({CLAIM_CPU_LABEL: "9" * 40}, CLAIM_CPU_LABEL, id="cpu-integer-huge"),
        pytest.param({CLAIM_MEMORY_LABEL: "-1"}, CLAIM_MEMORY_LABEL, id="memory-negative"),
        pytest.param({CLAIM_MEMORY_LABEL: "NaN"}, CLAIM_MEMORY_LABEL, id="memory-nan"),
        pytest.param({CLAIM_GPUS_LABEL: "-1"}, CLAIM_GPUS_LABEL, id="gpu-index-negative"),
        pytest.param({CLAIM_GPUS_LABEL: "5000"}, CLAIM_GPUS_LABEL, id="gpu-index-huge"),
        pytest.param({CLAIM_GPUS_LABEL: "1,1"}, CLAIM_GPUS_LABEL, id="gpu-index-twice"),
        pytest.param({CLAIM_GPUS_LABEL: "x"}, CLAIM_GPUS_LABEL, id="gpu-index-not-a-number"),
        pytest.param({OWNER_LABEL: ""}, OWNER_LABEL, id="owner-empty"),
        pytest.param({f"{CLAIM_LABEL}.gpus-extra": "0,1,2,3"}, f"{CLAIM_LABEL}.gpus-extra", id="unknown-key"),
    ],
)
def test_a_malformed_claim_is_kept_and_says_which_label(damage: dict[str, str], named: str) -> None:
    claim = parse_claim(claim_entry(damage))
    assert claim is not None and claim.malformed is not None and named in claim.malformed


@pytest.mark.parametrize("missing", [CLAIM_GPUS_LABEL, CLAIM_MILLI_LABEL, CLAIM_CPU_LABEL, CLAIM_MEMORY_LABEL,
                                     OWNER_LABEL])
def test_a_claim_missing_a_key_is_malformed(missing: str) -> None:
    entry = claim_entry()
    del entry["Labels"][missing]
    claim = parse_claim(entry)
    assert claim is not None and claim.malformed is not None and missing in claim.malformed


def test_a_well_formed_claim_and_a_legacy_created_label() -> None:
    """A claim made before ages were the engine's keeps its worker-written time, which nobody reads."""
    claim = parse_claim(claim_entry({LEGACY_CREATED_LABEL: "nan"}))
    assert claim is not None and claim.malformed is None
    assert (claim.gpus, claim.milli, claim.cpu_milli, claim.memory_mb) == ((1,), 1000, 1000, 512)
    assert (claim.created, claim.deployment, claim.task) == (CREATED + strict.CREATED_RESOLUTION_S, MINE, TASK)


def test_a_malformed_claim_takes_the_whole_host_so_no_gpu_looks_free() -> None:
    """The attack: a ``nan`` in a claim on GPU 1. Ignoring the claim would offer GPU 1 to the
    next task; it takes every GPU, CPU and megabyte instead, and the next claim is refused."""
    bad = parse_claim(claim_entry({CLAIM_MILLI_LABEL: "nan"}))
    good = parse_claim(claim_entry(owner="o2", gpus=(0,), created=CREATED + 5))
    assert bad is not None and good is not None
    folded = allocation(host(), [good, bad])
    assert [g.allocated_milli for g in folded.node.gpus] == [1000] * 4
    assert (folded.node.cpu_allocated_milli, folded.node.memory_allocated_mb) == (8000, 16384)
    assert set(folded.counted) == {good, bad} and folded.refused == ()
    assert claim_shortfalls(folded.node, Resources(gpus=1), (2,)) != ()


@pytest.mark.parametrize(
    ("created", "age_s", "live", "stale"),
    [
        pytest.param(CREATED, 121.5, False, True, id="dead-owner-past-grace"),
        pytest.param(CREATED, 120.5, False, False, id="dead-owner-past-grace-only-if-created-first-thing-that-second"),
        pytest.param(CREATED, 60.0, False, False, id="dead-owner-within-grace"),
        pytest.param(CREATED, 10_000.0, True, False, id="running-owner"),
        pytest.param(None, 10_000.0, False, False, id="engine-did-not-say-when"),
        pytest.param(float("nan"), 10_000.0, False, False, id="engine-created-nan"),
    ],
)
def test_a_malformed_claim_is_stale_by_the_engines_clock_like_any(created: object, age_s: float, live: bool,
                                                                  stale: bool) -> None:
    """A ``nan`` cannot make a claim never stale: its age is the engine's, not a label's."""
    claim = parse_claim(claim_entry({CLAIM_CPU_LABEL: "inf"}, created=created))
    assert claim is not None and claim.malformed is not None
    found = stale_claims([claim], {"o1"} if live else set(), CREATED + age_s, grace_s=120.0)
    assert found == ([claim] if stale else [])


def test_nothing_is_stale_when_the_engines_time_is_unknown() -> None:
    claim = parse_claim(claim_entry())
    assert claim is not None and stale_claims([claim], set(), None, 0.0) == []


def hold_entry(damage: dict[str, str] | None = None, created: object = CREATED) -> dict[str, Any]:
    labels = hold_labels("w1", 1.0, 600.0, TASK, deployment=MINE)
    return {"Id": "h", "Created": created, "Labels": {**labels, **(damage or {})}}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param({HOLD_LEASE_LABEL: "inf"}, id="lease-inf"),
        pytest.param({HOLD_LEASE_LABEL: "nan"}, id="lease-nan"),
        pytest.param({HOLD_LEASE_LABEL: "-600"}, id="lease-negative"),
        pytest.param({HOLD_LEASE_LABEL: "1e12"}, id="lease-huge"),
        pytest.param({HOLD_SINCE_LABEL: "-inf"}, id="since-minus-inf"),
        pytest.param({"airflow-gpu-docker.hold.expires": "1e12"}, id="unknown-key-the-old-expiry"),
    ],
)
def test_a_malformed_hold_holds_nothing(damage: dict[str, str]) -> None:
    """The attack: a hold that never lapses would keep a host from every other task."""
    assert parse_hold("h", hold_entry()) is not None
    assert parse_hold("h", hold_entry(damage)) is None


def test_a_hold_lapses_its_lease_after_the_engine_created_it() -> None:
    record = parse_hold("h", hold_entry())
    assert record is not None and record.expires == CREATED + strict.CREATED_RESOLUTION_S + 600.0 and record.deployment == MINE
    assert parse_hold("h", hold_entry(created="yesterday")) is None


@pytest.mark.parametrize("lease", ["inf", "nan", "0", "-1", "1e40"])
def test_a_problem_marker_with_a_bad_lease_is_ignored(lease: str) -> None:
    labels = problem_labels("no driver", 600.0, deployment=MINE)
    assert parse_problem({"Id": "p", "Created": CREATED, "Labels": labels}) is not None
    assert parse_problem({"Id": "p", "Created": CREATED, "Labels": {**labels, PROBLEM_LEASE_LABEL: lease}}) is None


@pytest.mark.parametrize(
    ("reader", "labels"),
    [
        pytest.param(lambda ls: strict.number(ls, "k", 0, 10), {"k": "nan"}, id="number-nan"),
        pytest.param(lambda ls: strict.number(ls, "k", 0, 10), {"k": "11"}, id="number-above"),
        pytest.param(lambda ls: strict.integer(ls, "k", 0, 10), {"k": "1.5"}, id="integer-fraction"),
        pytest.param(lambda ls: strict.integer(ls, "k", 0, 10), {"k": "1_0"}, id="integer-underscore"),
        pytest.param(lambda ls: strict.integer(ls, "k", 0, 10), {}, id="missing"),
        pytest.param(lambda ls: strict.lease(ls, "k"), {"k": "0"}, id="lease-zero"),
        pytest.param(lambda ls: strict.created({"Created": ls.get("k")}), {"k": "1"}, id="created-text"),
        pytest.param(lambda ls: strict.created({"Created": True}), {}, id="created-bool"),
    ],
)
def test_the_strict_readers_raise_a_provider_error_naming_the_label(reader: Any, labels: dict[str, str]) -> None:
    with pytest.raises(LabelError) as caught:
        reader(labels)
    assert isinstance(caught.value, GpuDockerError)
    assert "k" in str(caught.value) or "Created" in str(caught.value)


def test_the_engine_clock_does_not_follow_the_workers_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's clock set 10 minutes off does not move the engine's time as this process
    reckons it: it is carried forward on the monotonic clock."""
    info = EngineInfo(("runc",), float(CREATED), time.monotonic())
    before = info.now()
    real = time.time
    for skew in (600.0, -600.0):
        monkeypatch.setattr(time, "time", lambda: real() + skew)
        now = info.now()
        assert before is not None and now is not None and 0 <= now - before < 5
    assert EngineInfo((), None, 0.0).now() is None


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        pytest.param("2027-01-15T08:00:00.123456789Z", 1_800_000_000.123456, id="nanoseconds"),
        pytest.param("not a time", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param("0001-01-01T00:00:00Z", None, id="before-the-epoch"),
    ],
)
def test_engine_seconds(stamp: str, seconds: float | None) -> None:
    found = engine_seconds(stamp)
    assert found == seconds if seconds is None else (found is not None and math.isclose(found, seconds))


def test_the_derived_id_ignores_the_password_and_tells_addresses_apart() -> None:
    base = derived_id("https://api:secret@airflow.example.com:8443/execution/")
    assert base == derived_id("https://api:rotated@AIRFLOW.example.com:8443/execution")
    assert "secret" not in base and checked_id(base) == base
    others = {derived_id("https://api:secret@airflow2.example.com:8443/execution/"),
              derived_id("https://api:secret@airflow.example.com:9443/execution/"),
              derived_id("https://api:secret@airflow.example.com:8443/staging/execution/"),
              derived_id("http://localhost:8080/execution/")}
    assert base not in others and len(others) == 4


def test_an_api_address_with_a_bad_port_is_refused_naming_the_settings() -> None:
    with pytest.raises(HostConfigError, match="deployment_id"):
        derived_id("http://api:secret@airflow:port/execution/")


@pytest.mark.parametrize("value", ["", "-lead", "a b", "a=b", "x" * 64, "dep,other"])
def test_a_bad_deployment_id_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(HostConfigError, match=r"\[gpu_docker\] deployment_id"):
        checked_id(value)


def test_the_default_is_the_execution_apis_address_and_the_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The execution API's address, as task processes (which Airflow keeps from the database's
    address) and the api-server both know it."""
    monkeypatch.delenv("AIRFLOW__GPU_DOCKER__DEPLOYMENT_ID", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    from_base = current_deployment()
    assert from_base == derived_id("https://airflow.example.com/execution/")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "https://airflow.example.com/execution/")
    assert current_deployment() == from_base  # the same address, however it is configured
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "https://other.example.com/execution/")
    assert current_deployment() != from_base
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow-db-not-allowed:///")  # as in a task
    assert current_deployment() == derived_id("https://other.example.com/execution/")
    monkeypatch.setenv("AIRFLOW__GPU_DOCKER__DEPLOYMENT_ID", "prod-eu")
    assert current_deployment() == "prod-eu"
    monkeypatch.setenv("AIRFLOW__GPU_DOCKER__DEPLOYMENT_ID", "prod eu")
    with pytest.raises(HostConfigError):
        current_deployment()


def test_only_the_readers_deployment_counts_against_its_queues_but_every_claim_takes_room() -> None:
    """Another deployment's queue of the same name is not this one's, yet its GPUs are taken."""
    mine = parse_claim(claim_entry(queue="vision", gpus=(0,)))
    theirs = parse_claim(claim_entry(owner="o2", queue="vision", gpus=(1,), deployment=THEIRS))
    legacy = parse_claim(claim_entry(owner="o3", queue="vision", gpus=(2,)))
    assert mine is not None and theirs is not None and legacy is not None
    legacy = replace(legacy, deployment=None)
    folded = allocation(host(), [mine, theirs, legacy])
    view = PoolView((HostView(node=folded.node, measured=host(), claims=folded.counted, deployment=MINE),))
    assert view.queue_usage()["vision"].gpu_milli == 1000
    assert [g.allocated_milli for g in view.nodes[0].gpus] == [1000, 1000, 1000, 0]


@pytest.mark.parametrize(
    ("labels", "adopted"),
    [
        pytest.param({**TASK.to_labels(), DEPLOYMENT_LABEL: MINE}, True, id="own"),
        pytest.param({**TASK.to_labels(), DEPLOYMENT_LABEL: THEIRS}, False, id="another-deployments-same-task"),
        pytest.param(TASK.to_labels(), False, id="made-before-deployments-were-labelled"),
    ],
)
def test_only_the_own_deployments_task_container_is_an_earlier_try(labels: dict[str, str], adopted: bool) -> None:
    entry = {"Id": "t1", "State": "running", "Labels": labels}
    assert (earlier_of(HostConfig("h", "unix:///run/h/docker.sock"), entry, MINE) is not None) == adopted


NASTY = ["", "0", "1", "-1", "1000", "1001", "nan", "NaN", "inf", "-inf", "1e308", "1e-308", "9" * 30, "0x10",
         "1_000", " 5 ", "1.5", "0,1", "1,1", "3,-2", ",", "true", "\x00", "é", "{}", '{"gpus": 1}', '{"gpus": "nan"}']


def test_seeded_fuzz_over_label_sets(report: Any) -> None:
    """Random label sets built from the provider's own labels (a claim's, a hold's, a problem
    marker's and a place in line's at once) with hostile values: every reader returns a record or
    None and never raises; a claim it cannot read is malformed and says
    which label; nothing read has a number that is not finite. Bounded to 2 s."""
    import random

    rng = random.Random(26)
    base = {**claim_labels(PlacementRequest(gpus=2, cpu_milli=500, memory_mb=64), (0, 1), "o", TASK, "q",
                           deployment=MINE), **hold_labels("w", 1.0, 60.0, TASK, deployment=MINE),
            **problem_labels("no driver", 60.0, deployment=MINE),
            **line_labels(Waiting("w", "vision", 2, 1.0, Amounts.of(Resources(gpus=1))), PlacementRequest(gpus=1),
                          90.0, TASK, "pool", deployment=MINE)}
    keys = sorted(base) + [f"{CLAIM_LABEL}.extra", "airflow-gpu-docker.hold.expires"]
    tried, deadline = 0, time.monotonic() + 2.0
    while time.monotonic() < deadline:
        labels = dict(base)
        for key in rng.sample(keys, rng.randint(1, 4)):
            if rng.random() < 0.2:
                labels.pop(key, None)
            else:
                labels[key] = rng.choice(NASTY)
        entry = {"Id": "x", "Created": rng.choice([CREATED, 0, -1, float("nan"), "x", None, 2**40]), "Labels": labels}
        found = parse_claim(entry)
        if found is not None:
            assert found.malformed is not None or (all(0 <= g <= 1023 for g in found.gpus)
                                                   and 1 <= found.milli <= 1000 and found.cpu_milli >= 0)
            assert found.malformed is None or "label" in found.malformed
            assert found.created is None or math.isfinite(found.created)
        hold = parse_hold("h", entry)
        assert hold is None or (math.isfinite(hold.expires) and math.isfinite(hold.hold.since))
        problem = parse_problem(entry)
        assert problem is None or math.isfinite(problem.expires)
        place = parse_place_in_line("h", entry)
        assert place is None or (math.isfinite(place.expires) and math.isfinite(place.waiting.since))
        tried += 1
    report(f"label fuzz: {tried} label sets tried, every one read or refused")
    assert tried > 100
