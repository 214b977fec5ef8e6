"""bench/replay_memo.py: remembering verdicts never changes a decision of provider.scheduling.place."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from provider.scheduling.no_fit import NoFit  # noqa: E402
from provider.scheduling import (  # noqa: E402
    POLICIES,
    GpuState,
    NodeState,
    PlacementContext,
    PlacementRequest,
    TaskMix,
    apply,
    get_policy,
    place,
)
from replay_memo import PlacementMemo  # noqa: E402


def node(name: str, allocated: tuple[int, ...] = (0, 0), cpu: int = 16000) -> NodeState:
    gpus = tuple(GpuState(index=i, model="V100", allocated_milli=a) for i, a in enumerate(allocated))
    return NodeState(name=name, cpu_milli=cpu, memory_mb=64000, gpus=gpus)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_memo_gives_the_same_answers(name: str) -> None:
    # Place a stream of requests twice, with and without a memo: identical decisions.
    requests = [PlacementRequest(gpus=g, gpu_milli=m, cpu_milli=c) for g, m, c in
                [(1, 300, 1000), (2, 1000, 2000), (1, 1000, 500), (1, 300, 1000), (0, 1000, 3000), (1, 700, 0)] * 3]
    mix = TaskMix.from_requests(requests)
    outcomes = []
    for use_memo in (False, True):
        nodes = [node(f"n{i}", (0, 0, 0, 0)) for i in range(4)]
        policy = get_policy(name)
        context = PlacementContext(task_mix=mix, rng=random.Random(7))
        memo = PlacementMemo(policy, context)
        decisions = []
        for r in requests:
            try:
                chosen = memo.place(r, nodes) if use_memo else place(r, nodes, policy, context)
            except NoFit as exc:
                decisions.append(exc.rejections)
                continue
            i = [n.name for n in nodes].index(chosen.node)
            nodes[i] = apply(nodes[i], r, chosen.gpu_indices)
            decisions.append((chosen.node, chosen.gpu_indices, chosen.scores, chosen.rejections))
        outcomes.append(decisions)
    assert outcomes[0] == outcomes[1]


def test_a_memo_follows_nodes_that_move_leave_and_repeat() -> None:
    """The memo's view of the node list is matched by position: a node list reordered, shortened,
    or with a name repeated (refused) must still give what placing without a memo gives."""
    policy = get_policy("fragmentation")
    request = PlacementRequest(gpus=1, gpu_milli=500, cpu_milli=1000)
    context = PlacementContext(task_mix=TaskMix.from_requests([request]))
    memo = PlacementMemo(policy, context)
    a, b, c = node("a", (0, 500)), node("b", (0, 0)), node("c", (1000,))
    full = node("d", (1000, 1000))
    for nodes in ([a, b, c], [b, a, c], [b, full, c], [c, b], [a, a, b], [a, b, full]):
        try:
            fresh = place(request, nodes, policy, context)
        except (NoFit, ValueError) as exc:
            with pytest.raises(type(exc)):
                memo.place(request, nodes)
            continue
        remembered = memo.place(request, nodes)
        assert (remembered.node, remembered.gpu_indices, remembered.scores, remembered.rejections) == \
            (fresh.node, fresh.gpu_indices, fresh.scores, fresh.rejections), [n.name for n in nodes]
