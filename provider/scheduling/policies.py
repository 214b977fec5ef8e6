"""Scoring policies: how to rank the nodes that passed the filter, and on which GPUs.

A policy is a plain callable (see :class:`Policy`), a pure function of the request, one
feasible node and a :class:`PlacementContext`, returning a :class:`Choice`: a score in
[0, 100], higher is better, and the GPU indices it would use on that node. Weights are the
policy's own constructor arguments, never globals, so two operators in one process can run
differently tuned policies. Ties between nodes are broken by :func:`~provider.scheduling.place.place`
(node name, then GPU indices), ties between GPUs of one node by the lowest index.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import fmean
from typing import Protocol

from provider.scheduling.accounting import free_state_after
from provider.scheduling.filters import eligible_gpus, gpu_sets
from provider.scheduling.model import MILLI_PER_GPU, FreeState, NodeState, PlacementRequest, free_state
from provider.scheduling.taskmix import TaskMix, TaskType

MAX_SCORE = 100.0

DEFAULT_PULL_PENALTY_PER_GB = 10.0
"""Score points a host loses per GB of image it would have to pull: a few GB outweigh a
moderately busier host, as minutes of pulling outweigh a somewhat slower start."""

_TIE_SHARE = 0.99
"""Share of one rounding step a tie-break term may use, so it never reorders FGD's scores."""


@dataclass(frozen=True, slots=True)
class PlacementContext:
    """What a policy may know beyond the request and the node.

    ``task_mix`` describes the workload (needed by the fragmentation-aware policies; without
    one they treat the request itself as the whole mix). ``rng`` is the only source of
    randomness any policy may use. ``cpu_task_gpu_node_factor`` multiplies the score of a
    GPU node for a CPU-only request, so CPU work prefers CPU hosts and leaves GPU hosts to
    GPU work without being refused when only GPU hosts have room (1.0 disables it).
    ``pull_penalty_per_gb`` is the locality term, added to every policy's score as
    kube-scheduler's ImageLocality plugin is added to the others: a node loses that many
    points per GB its engine would have to pull before the task can start (``pull_bytes``);
    0 ignores where images are.
    """

    task_mix: TaskMix | None = None
    rng: random.Random | None = None
    cpu_task_gpu_node_factor: float = 0.5
    pull_penalty_per_gb: float = DEFAULT_PULL_PENALTY_PER_GB

    def __post_init__(self) -> None:
        if not 0.0 <= self.cpu_task_gpu_node_factor <= 1.0:
            raise ValueError(
                f"cpu_task_gpu_node_factor must be in [0, 1], got {self.cpu_task_gpu_node_factor}"
            )
        if not self.pull_penalty_per_gb >= 0.0:
            raise ValueError(f"pull_penalty_per_gb must be >= 0, got {self.pull_penalty_per_gb}")


@dataclass(frozen=True, slots=True)
class Choice:
    """A policy's verdict on one node: its score and the GPUs it would use there."""

    score: float
    gpu_indices: tuple[int, ...]


class Policy(Protocol):
    """A scoring policy. ``cacheable`` is true when the result depends only on the inputs
    (not on ``context.rng``), so a caller may remember it per node snapshot.

    A policy that is not cacheable may also offer ``draw(sets, context) -> Choice``: its
    random part alone, given the node's GPU candidates (:func:`~provider.scheduling.filters.gpu_sets`),
    which depend only on the node and the request's shape and so can be remembered instead.
    """

    @property
    def name(self) -> str: ...

    @property
    def cacheable(self) -> bool: ...

    def __call__(
        self, request: PlacementRequest, node: NodeState, context: PlacementContext
    ) -> Choice: ...


def _clamp(score: float) -> float:
    return min(MAX_SCORE, max(0.0, score))


def _sets(request: PlacementRequest, node: NodeState) -> tuple[tuple[int, ...], ...]:
    """The GPU candidates of a node that passed the filter (never empty)."""
    sets = gpu_sets(request, node)
    if not sets:
        raise ValueError(f"{node.name} cannot host the request; filter nodes before scoring")
    return sets


@dataclass(frozen=True, slots=True)
class RandomPolicy:
    """Uniformly random among feasible nodes (and among fitting GPUs for a share): the
    baseline every other policy has to beat."""

    name = "random"
    cacheable = False

    def __call__(
        self, request: PlacementRequest, node: NodeState, context: PlacementContext
    ) -> Choice:
        return self.draw(_sets(request, node), context)

    def draw(self, sets: tuple[tuple[int, ...], ...], context: PlacementContext) -> Choice:
        """The random part alone: a trace replay remembers a node's GPU ``sets`` (they depend
        only on the node and the request's shape) and draws afresh for every task."""
        if context.rng is None:
            raise ValueError("the random policy needs PlacementContext(rng=random.Random(...))")
        gpus = context.rng.choice(sets) if len(sets) > 1 else sets[0]
        return Choice(context.rng.random() * MAX_SCORE, gpus)


@dataclass(frozen=True, slots=True)
class LeastLoaded:
    """Spread work by measured load: low GPU utilisation of the chosen GPUs, low host CPU
    utilisation, and most capacity left after placement, weighted by the arguments.

    Measurements lag a job that has just started, so the CPU term reads
    :attr:`~provider.scheduling.model.NodeState.cpu_busy_pct` (the work placed since the last
    sample counted as load) and the ``free`` term reservations: back-to-back placements do not
    pile onto the host that still *looks* idle (``docs/placement.md``, "Herding").
    """

    gpu_utilization: float = 1.0
    cpu_utilization: float = 1.0
    free: float = 1.0
    name = "least_loaded"
    cacheable = True

    def __call__(
        self, request: PlacementRequest, node: NodeState, context: PlacementContext
    ) -> Choice:
        by_index = {g.index: g for g in node.gpus}
        ranked = sorted(
            eligible_gpus(request, node),
            key=lambda i: (by_index[i].utilization_pct, -by_index[i].memory_free_mb, i),
        )
        gpus = tuple(sorted(ranked[: request.gpus]))
        looked_at = [by_index[i] for i in gpus] or list(node.gpus)
        gpu_idle = 1.0 - fmean(g.utilization_pct for g in looked_at) / 100.0 if looked_at else 1.0
        cpu_idle = 1.0 - node.cpu_busy_pct / 100.0
        left = [
            (node.cpu_free_milli - request.cpu_milli) / node.cpu_milli if node.cpu_milli else 0.0,
            (node.memory_free_mb - request.memory_mb) / node.memory_mb if node.memory_mb else 0.0,
        ]
        if node.gpus:
            gpu_left = node.gpu_free_milli - request.gpu_milli_total
            left.append(gpu_left / (MILLI_PER_GPU * len(node.gpus)))
        free = sum(left) / len(left)
        weights = self.gpu_utilization + self.cpu_utilization + self.free
        raw = self.gpu_utilization * gpu_idle + self.cpu_utilization * cpu_idle + self.free * free
        return Choice(_clamp(MAX_SCORE * raw / weights) if weights else 0.0, gpus)


def _tightest_share(request: PlacementRequest, node: NodeState) -> tuple[int, ...]:
    """For a share, the fitting GPU with least free capacity (packing within the node)."""
    sets = _sets(request, node)
    if not request.is_share:
        return sets[0]
    free = {g.index: g.free_milli for g in node.gpus}
    return min(sets, key=lambda s: (free[s[0]], s[0]))


@dataclass(frozen=True, slots=True)
class BestFit:
    """Packing: the node with least CPU and GPU left over after placement.

    Left-over capacity is normalised by ``max_cpu_milli`` / ``max_gpu_milli`` (the largest
    host shape one expects in the pool) and weighted; a share goes on the fullest GPU that
    still fits it.
    """

    cpu: float = 0.5
    gpu: float = 0.5
    max_cpu_milli: int = 128_000
    max_gpu_milli: int = 8 * MILLI_PER_GPU
    name = "best_fit"
    cacheable = True

    def __call__(
        self, request: PlacementRequest, node: NodeState, context: PlacementContext
    ) -> Choice:
        left = (
            self.cpu * (node.cpu_free_milli - request.cpu_milli) / self.max_cpu_milli
            + self.gpu * (node.gpu_free_milli - request.gpu_milli_total) / self.max_gpu_milli
        )
        weights = self.cpu + self.gpu
        score = MAX_SCORE * (1.0 - left / weights) if weights else 0.0
        return Choice(_clamp(score), _tightest_share(request, node))


def _sigmoid(x: float) -> float:
    if x < -700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


def _mix(request: PlacementRequest, context: PlacementContext) -> TaskMix:
    if context.task_mix is not None:
        return context.task_mix
    return TaskMix((TaskType.of(request),), (1.0,))


def _least_fragmenting(
    request: PlacementRequest, node: NodeState, mix: TaskMix
) -> tuple[float, tuple[int, ...], FreeState, FreeState]:
    """(increase of expected fragmentation, GPUs, free state before, free state after) for
    the GPU choice that increases it least."""
    before = free_state(node)
    fragmented = mix.fragmentation_of(before)
    afters = ((g, free_state_after(node, request, g)) for g in _sets(request, node))
    growths = ((mix.fragmentation_of(after) - fragmented, g, after) for g, after in afters)
    growth, gpus, after = min(growths, key=lambda triple: triple[0])  # the lowest index among equals
    return growth, gpus, before, after


def _quantised(score: float, resolution: float) -> float:
    return math.floor(score / resolution) * resolution if resolution > 0 else score


@dataclass(frozen=True, slots=True)
class Fragmentation:
    """FGD: the node and GPUs where the expected fragmentation grows least.

    The growth (in milli-GPUs) is mapped into [0, 100] by a sigmoid with ``scale`` milli-GPUs
    per unit, so a placement that *reduces* fragmentation (filling a slice nobody else could
    use) scores above 50 and one that strands capacity below. Scores are then rounded down to
    multiples of ``resolution`` points: Kubernetes scores are integers, the study's results
    were obtained with integer scores, and the rounding matters. It makes placements whose
    growth differs by a few tens of milli-GPUs tie, and the deterministic tie-break (node
    order) then keeps filling the same nodes instead of spreading over near-equal ones.
    ``resolution=0`` keeps the exact score.
    """

    scale: float = float(MILLI_PER_GPU)
    resolution: float = 1.0
    name = "fragmentation"
    cacheable = True

    def __call__(
        self, request: PlacementRequest, node: NodeState, context: PlacementContext
    ) -> Choice:
        growth, gpus, _, _ = _least_fragmenting(request, node, _mix(request, context))
        return Choice(self.score_of(growth), gpus)

    def score_of(self, growth: float) -> float:
        """The rounded score of a fragmentation growth of ``growth`` milli-GPUs."""
        return _quantised(MAX_SCORE * _sigmoid(-growth / self.scale), self.resolution)


@dataclass(frozen=True, slots=True)
class FragmentationBalanced:
    """FGD first; among placements FGD rates alike, keep CPU and memory able to feed the GPUs.

    FGD counts a task type as able to use every GPU slice it fits once the node has CPU and
    memory for *one* such task, so it cannot tell a host that keeps enough cores for its
    free GPUs from one that keeps two cores per GPU too few: both look unfragmented until
    the cores run out and the last GPUs strand. :meth:`TaskMix.stranded` measures the free
    GPU capacity that a host's free CPU and memory cannot feed at the rate the mix's GPU work
    asks for them, and at the rate all its work (CPU-only tasks included) does. Within one
    rounding step of FGD's score (see :class:`Fragmentation`) this policy prefers the
    placement where that measure grows least, so a task that brings more cores per GPU than
    the mix goes where cores are plentiful per free GPU, and one that brings fewer (or a
    CPU-only task) goes where they are short or where no GPU is left to feed. The term is
    mapped into less than one rounding step, so it never overrides FGD, and where it is
    equal (cores to spare on both) ties still go by node order as in FGD, whose habit of
    filling the same hosts first keeps the others whole.
    """

    fragmentation: Fragmentation = Fragmentation()
    name = "fragmentation_balanced"
    cacheable = True

    def __call__(
        self, request: PlacementRequest, node: NodeState, context: PlacementContext
    ) -> Choice:
        mix = _mix(request, context)
        growth, gpus, before, after = _least_fragmenting(request, node, mix)
        frag = self.fragmentation
        stranding = mix.stranded_of(after) - mix.stranded_of(before)
        balance = _sigmoid(-stranding / frag.scale)  # in (0, 1): 0.5 when unchanged
        return Choice(_clamp(frag.score_of(growth) + _TIE_SHARE * frag.resolution * balance), gpus)
