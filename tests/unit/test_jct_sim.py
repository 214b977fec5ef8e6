"""The time-based replay of ``bench/jct_sim.py``: its processor sharing and its measurements,
against cases computed by hand, so its figures rest on a model that does what it says."""

from __future__ import annotations

import pytest

from bench.jct_sim import (
    GPU_ONLY,
    RESERVED,
    Host,
    HostState,
    Job,
    Point,
    Running,
    Scenario,
    Spell,
    node_state,
    replay,
    scenario,
    water_fill,
)
from provider.scheduling.accounting import MEASURE_WINDOW_S, UNRESERVED_CPU_MILLI


@pytest.mark.parametrize(
    ("capacity", "demands", "rates"),
    [
        pytest.param(2.0, [(0.5, 1)] * 4, [0.5] * 4, id="room-for-every-cap"),
        pytest.param(2.0, [(0.5, 1)] * 4 + [(2.0, 2)], [1 / 3] * 4 + [2 / 3], id="hog-of-weight-2-beside-four-jobs"),
        pytest.param(2.0, [(0.5, 1), (2.0, 2)], [0.5, 1.5], id="capped-job-leaves-the-rest-to-the-hog"),
        pytest.param(1.0, [(0.5, 1), (1.0, 2)], [1 / 3, 2 / 3], id="one-core-shared-by-weight"),
        pytest.param(1.0, [(1.0, 1), (1.0, 1)], [0.5, 0.5], id="two-uncapped-jobs-halve"),
        pytest.param(1.0, [(0.0, 1), (1.0, 1)], [0.0, 1.0], id="nothing-asked-nothing-given"),
        pytest.param(1.0, [], [], id="nobody"),
    ],
)
def test_water_fill(capacity: float, demands: list[tuple[float, float]], rates: list[float]) -> None:
    assert water_fill(capacity, demands) == pytest.approx(rates)


def one_host(*jobs: Job, cores: float = 1.0, speed: float = 1.0, spells: tuple[Spell, ...] = ()) -> Scenario:
    return Scenario((Host("h1", cores, gpus=4, speed=speed),), jobs, spells, lag_s=0.0)


@pytest.mark.parametrize(
    ("case", "jct"),
    [
        pytest.param(one_host(Job(0, 0.0, 1.0)), [2.0], id="alone-at-its-half-core-quota"),
        pytest.param(one_host(Job(0, 0.0, 1.0), speed=2.0), [1.0], id="twice-as-fast-a-host"),
        pytest.param(one_host(Job(0, 0.0, 1.0, 1.0, 0), Job(1, 0.0, 1.0, 1.0, 0)), [2.0, 2.0], id="two-share-one-core"),
        pytest.param(one_host(Job(0, 0.0, 1.5, 1.0, 0), Job(1, 1.0, 0.25, 1.0, 0)), [1.75, 0.5],
                     id="a-late-one-slows-the-first-while-they-overlap"),
        pytest.param(one_host(Job(0, 0.0, 1.0), spells=(Spell("h1", 0.0, 100.0),)), [3.0], id="beside-the-hog"),
        pytest.param(one_host(Job(0, 0.0, 0.5), Job(1, 0.0, 0.5), Job(2, 0.0, 0.5)), [1.0, 1.0, 2.0],
                     id="the-third-waits-for-room"),
    ],
)
def test_processor_sharing(case: Scenario, jct: list[float]) -> None:
    """JCTs computed by hand: e.g. the late job runs at half speed from 1.0 to 1.5 (0.25 of work);
    the first did 1.0 alone, 0.25 shared, and its last 0.25 alone again, ending at 1.75."""
    assert replay(case, "least_loaded", seed=1) == pytest.approx(jct)


def test_a_sample_is_what_the_last_interval_used_and_is_read_lag_later() -> None:
    state = HostState.of(Host("h1", 2.0, gpus=1))
    state.busy, state.gpu_busy = 1.0, [0.5]  # one core-second used in the second before tick 1
    state.sample(tick=1.0, interval_s=1.0, lag_s=2.0)
    assert state.visible(2.9) == (0.0, 0.0, (0.0,))  # before anything is visible: idle
    assert state.visible(3.0) == (1.0, 50.0, (50.0,))


def test_placement_counts_jobs_started_since_the_visible_sample_as_unseen_load() -> None:
    state = HostState.of(Host("h1", 2.0))
    state.sample(tick=10.0, interval_s=1.0, lag_s=0.0)
    state.jobs = [Running(Job(0, 0.0, 1.0), 0, 1.0, started=10.0 - MEASURE_WINDOW_S - 0.5),
                  Running(Job(1, 0.0, 1.0), 1, 1.0, started=9.5),
                  Running(Job(2, 0.0, 1.0, 1.0, 0), 2, 1.0, started=10.2)]
    node = node_state(state, now=10.5)
    assert node.cpu_allocated_milli == 1000 and node.measured_at == 10.0
    assert node.cpu_unmeasured_milli == 500 + UNRESERVED_CPU_MILLI
    assert [g.allocated_milli for g in node.gpus] == [1000, 1000, 1000, 0]


@pytest.mark.parametrize("jobs", [RESERVED, GPU_ONLY])
def test_a_scenario_offers_the_load_it_is_asked_for(jobs: str) -> None:
    """Offered work over the arrival window is the load times what the background leaves."""
    s = scenario(Point(0.8, 1.0, 3, False, jobs), seed=7, jobs=1200)
    offered = sum(j.work for j in s.jobs) / s.jobs[-1].arrival
    left = sum(h.cores for h in s.hosts) * 60 / 90  # busy one spell in three on average
    assert offered / left == pytest.approx(0.8, rel=0.1)
    assert all((j.reserved_milli > 0) == (jobs == RESERVED) for j in s.jobs)
