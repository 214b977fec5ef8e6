"""Jobs placed within one sampling interval: what placement counts before the agents see them.

The default policy ranks hosts by measured CPU utilisation, and a measurement lags the jobs just
placed. Each case places ten jobs one after another on the same measurements, as the operator
does when ten tasks start within one interval: each placement reads the hosts' claims again
(folded by :func:`provider.reservations.rules.allocation`, production's reading), but the agents'
samples stay what they were.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from provider.reservations.rules import Claim, allocation
from provider.scheduling import GpuState, NodeState, PlacementRequest, get_policy, place
from provider.scheduling.accounting import UNRESERVED_CPU_MILLI, unseen_cpu_milli
from provider.scheduling.model import Resources

SAMPLED_AT = 1000.0


def measured(name: str, busy_pct: float, sampled: bool = True) -> NodeState:
    """A host of 4 cores and 8 GPUs as its agent last measured it."""
    return NodeState(name, cpu_milli=4000, memory_mb=65536, cpu_utilization_pct=busy_pct,
                     gpus=tuple(GpuState(i, "A100", memory_total_mb=81920) for i in range(8)),
                     measured_at=SAMPLED_AT if sampled else None)


def ten_jobs(hosts: list[NodeState], request: PlacementRequest) -> Counter[str]:
    """Where ten jobs arriving 0.1 s apart, right after the sample, go under the default policy."""
    claims: dict[str, list[Claim]] = {h.name: [] for h in hosts}
    for k in range(10):
        nodes = [allocation(h, claims[h.name]).node for h in hosts]
        chosen = place(request, nodes, get_policy("least_loaded"))
        claims[chosen.node].append(Claim(f"c{k}", f"o{k}", chosen.gpu_indices, 1000, request.cpu_milli,
                                         request.memory_mb, created=SAMPLED_AT + 0.1 * (k + 1)))
    return Counter({name: len(c) for name, c in claims.items()})


@pytest.mark.parametrize("cpu_milli", [0, 1000], ids=["gpu-only", "reserving-a-core"])
def test_ten_jobs_on_three_idle_hosts_spread(cpu_milli: int) -> None:
    placed = ten_jobs([measured(n, 0.0) for n in ("h1", "h2", "h3")], PlacementRequest(gpus=1, cpu_milli=cpu_milli))
    assert sorted(placed.values()) == [3, 3, 4]


def test_a_host_that_only_looks_idle_takes_its_share_not_the_herd() -> None:
    """h1 was idle at the sample, h2 and h3 half busy. Counting each new job as a core of load
    until it is measured, h1 takes the two cores it had spare and then shares with the others;
    reading the stale sample alone, every job piles onto h1 until its GPUs run out."""
    hosts = [measured("h1", 0.0), measured("h2", 50.0), measured("h3", 50.0)]
    placed = ten_jobs(hosts, PlacementRequest(gpus=1))
    assert 4 <= placed["h1"] <= 5 and placed["h2"] >= 2 and placed["h3"] >= 2
    # The same with no measurement time, so nothing counts as unseen: the herd.
    stale = ten_jobs([replace(h, measured_at=None) for h in hosts], PlacementRequest(gpus=1))
    assert stale["h1"] == 8


def test_unseen_load_is_the_reservation_or_one_core() -> None:
    assert unseen_cpu_milli(Resources(gpus=1, cpu_milli=500)) == 500
    assert unseen_cpu_milli(Resources(gpus=2)) == UNRESERVED_CPU_MILLI
    node = replace(measured("h", 10.0), cpu_unmeasured_milli=2000)
    assert node.cpu_busy_pct == 60.0
    assert replace(node, cpu_unmeasured_milli=8000).cpu_busy_pct == 100.0
