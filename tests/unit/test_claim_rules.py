"""Pure rules of GPU reservations: names, parsing, accounting, staleness, conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from provider.hooks.claim_rules import (
    CLAIM_LABEL,
    OWNER_LABEL,
    Claim,
    claim_labels,
    claims_and_live_owners,
    claim_name,
    conflict,
    parse_claim,
    stale_claims,
    with_claims,
)
from provider.scheduling.model import GpuState, NodeState


def claim(gpu: int, milli: int = 1000, owner: str = "o1", created: float = 100.0) -> Claim:
    return Claim(container_id=f"c-{owner}-{gpu}", gpu=gpu, milli=milli, owner=owner, created=created)


def test_whole_gpu_has_one_name_shares_have_one_each() -> None:
    assert claim_name(3, 1000, "a") == claim_name(3, 1000, "b") == "gpu-docker-claim-gpu3"
    assert claim_name(3, 250, "a") != claim_name(3, 250, "b")


def test_labels_round_trip() -> None:
    labels = claim_labels(2, 500, "own", 1234.5, {"airflow-gpu-docker.task_id": "t"})
    assert parse_claim({"Id": "x", "Labels": labels}) == Claim("x", 2, 500, "own", 1234.5)


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param({}, id="not-a-claim"),
        pytest.param({"airflow-gpu-docker.claim": "true"}, id="missing-fields"),
        pytest.param({**claim_labels(1, 1000, "o", 1.0, {}), "airflow-gpu-docker.claim.gpu": "x"}, id="bad-gpu"),
    ],
)
def test_foreign_or_malformed_containers_are_not_claims(labels: dict[str, Any]) -> None:
    assert parse_claim({"Id": "x", "Labels": labels}) is None


def test_claims_set_allocated_milli_per_gpu() -> None:
    node = NodeState("a", gpus=tuple(GpuState(i) for i in range(3)))
    out = with_claims(node, [claim(0), claim(2, 300, "x"), claim(2, 200, "y"), claim(9)])
    assert [g.allocated_milli for g in out.gpus] == [1000, 0, 500]
    assert [g.allocated_milli for g in node.gpus] == [0, 0, 0]


def test_unreachable_node_is_left_as_is() -> None:
    node = NodeState("a", unreachable="down")
    assert with_claims(node, [claim(0)]) is node


@pytest.mark.parametrize(
    ("owner", "created", "live", "stale"),
    [
        pytest.param("o1", 0.0, set(), True, id="old-no-task"),
        pytest.param("o1", 95.0, set(), False, id="young-no-task-yet"),
        pytest.param("o1", 0.0, {"o1"}, False, id="old-task-running"),
    ],
)
def test_stale_means_old_and_taskless(owner: str, created: float, live: set[str], stale: bool) -> None:
    c = claim(0, owner=owner, created=created)
    assert stale_claims([c], live, now=100.0, grace_s=10.0) == ([c] if stale else [])


@pytest.mark.parametrize(
    ("others", "milli", "expected"),
    [
        pytest.param([], 1000, None, id="alone-whole"),
        pytest.param([claim(0, 300, "x")], 1000, "already reserved", id="whole-vs-share"),
        pytest.param([claim(0, 1000, "x")], 300, "already reserved", id="share-vs-whole"),
        pytest.param([claim(0, 300, "x"), claim(0, 400, "y")], 300, None, id="shares-fit"),
        pytest.param([claim(0, 300, "x"), claim(0, 500, "y")], 300, "200m unreserved < 300m", id="shares-overflow"),
        pytest.param([claim(1, 1000, "x")], 1000, None, id="other-gpu"),
    ],
)
def test_conflict(others: list[Claim], milli: int, expected: str | None) -> None:
    mine = claim(0, milli, "me")
    reason = conflict([*others, mine], 0, milli, "me")
    assert (reason is None) if expected is None else (reason is not None and expected in reason)


def test_claims_and_live_owners_split_one_container_list() -> None:
    owned = [
        {"Id": "c1", "State": "created", "Labels": {CLAIM_LABEL: "true", OWNER_LABEL: "a"}},
        {"Id": "t1", "State": "running", "Labels": {OWNER_LABEL: "a"}},
        {"Id": "t2", "State": "exited", "Labels": {OWNER_LABEL: "b"}},
    ]
    claims, live = claims_and_live_owners(owned)
    assert [c["Id"] for c in claims] == ["c1"] and live == {"a"}
