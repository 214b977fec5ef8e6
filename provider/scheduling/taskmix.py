"""The task mix and a node's expected GPU fragmentation under it.

Fragmentation is not a property of a node alone: two free quarter-GPUs are useless to a
pool that only runs whole-GPU jobs and perfectly usable to one that runs notebooks on
quarter-GPU shares. Fragmentation Gradient Descent (FGD; Weng et al., USENIX ATC 2023)
therefore measures it against the *task mix*: task types ``m`` with popularity ``p_m``. The
expected fragmentation of a node is

    F(node) = sum over m of p_m * (unallocated GPU capacity of the node that m cannot use)

where ``m`` cannot use *any* of it if ``m`` cannot run on the node at all (too little CPU or
memory left, a GPU model it does not accept, too few GPUs with enough free capacity, or ``m``
needs no GPU), and otherwise cannot use the free slices of GPUs too small for one part of
``m``. Placement then prefers the node and GPUs where F grows least.

F has a blind spot: a type counts as able to use every GPU slice it fits as soon as the
node has CPU and memory for *one* task of it. Eight free GPUs beside sixteen free cores are
eight usable GPUs to F, although the GPU work of the openb trace brings about eleven cores per
GPU and those cores feed fewer than two. :meth:`TaskMix.stranded` measures that part: the free
GPU capacity that the node's free CPU (or memory) cannot feed at the rate the mix asks for
it, at two rates,

    S(node) = sum over r in (r_gpu, r_all) of max(0, G - C / r_cpu, G - M / r_memory)

with ``G`` the free milli-GPUs, ``C`` and ``M`` the free milli-CPUs and MB. ``r_gpu`` is the
CPU (memory) per milli-GPU of the mix's GPU types, popularity-weighted; ``r_all`` also counts
the CPU-only types' CPU (memory) against the same GPU demand. The first shortfall is GPU
capacity stranded already; the second is what will be once the CPU-only work arriving with
the GPU work takes its share of the node. Summed, S is zero while a node keeps ``r_all``
cores per free GPU, grows as it falls below that, and twice as fast below ``r_gpu``. S is one
number per node for the whole mix, not a sum over types: per-type counts of what a node could
feed are dominated by the smallest shares (sixty 160m slots on eight GPUs), which ask for
little CPU in all.

Evaluating F is the inner loop of every fragmentation-aware placement, so the mix is
precomputed once by *GPU-demand class* (GPU count, milli-GPUs per GPU, accepted models):
the GPU part of the test is done once per class and only the CPU/memory thresholds once per
type. Results are remembered per distinct node resource state, a value-level cache that does
not change what the function returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from provider.scheduling.filters import model_matches
from provider.scheduling.model import FreeState, NodeState, PlacementRequest, Resources, free_state

DEFAULT_COVERAGE = 0.95
"""Share of the workload that the most popular task types must cover (FGD's default)."""

_MEMO_LIMIT = 500_000

@dataclass(frozen=True, slots=True)
class TaskType(Resources):
    """One kind of task in a workload: the resource vector it asks for, and the GPU models it
    accepts. GPU memory and labels do not tell types apart (``gpu_memory_mb`` stays 0)."""

    gpu_model: str | None = None

    @classmethod
    def of(cls, request: PlacementRequest, with_memory: bool = True) -> TaskType:
        """The type of a request (labels and GPU memory do not define a type)."""
        return cls(
            gpus=request.gpus,
            gpu_milli=request.gpu_milli,
            cpu_milli=request.cpu_milli,
            memory_mb=request.memory_mb if with_memory else 0,
            gpu_model=request.gpu_model or None,
        )


@dataclass(frozen=True, slots=True)
class _Class:
    """Task types sharing one GPU demand: ``gpus`` GPUs with ``milli`` free each."""

    gpus: int
    milli: int
    model: str | None
    members: tuple[tuple[int, int, float], ...]  # (cpu_milli, memory_mb, popularity)
    popularity: float


def _sort_key(item: tuple[TaskType, float]) -> tuple[float, int, int, int, int, str]:
    t, weight = item
    return (-weight, t.gpus, t.gpu_milli, t.cpu_milli, t.memory_mb, t.gpu_model or "")


@dataclass(frozen=True, slots=True)
class TaskMix:
    """Task types and their popularity (normalised to sum to 1)."""

    types: tuple[TaskType, ...]
    popularity: tuple[float, ...]
    _classes: tuple[_Class, ...] = field(init=False, repr=False, compare=False)
    _gpuless: float = field(init=False, repr=False, compare=False)
    _memo: dict[FreeState, float] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _rates: tuple[tuple[float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.types) != len(self.popularity):
            raise ValueError(
                f"{len(self.types)} task types but {len(self.popularity)} popularity values"
            )
        if any(p < 0 for p in self.popularity) or not sum(self.popularity) > 0:
            raise ValueError("popularity must be >= 0 and not all zero")
        total = sum(self.popularity)
        norm = tuple(p / total for p in self.popularity)
        object.__setattr__(self, "popularity", norm)
        groups: dict[tuple[int, int, str | None], list[tuple[int, int, float]]] = {}
        gpuless = 0.0
        for t, p in zip(self.types, norm):
            if t.gpus == 0:
                gpuless += p
                continue
            groups.setdefault((t.gpus, t.gpu_milli, t.gpu_model), []).append(
                (t.cpu_milli, t.memory_mb, p)
            )
        classes = tuple(
            _Class(k[0], k[1], k[2], tuple(v), sum(m[2] for m in v))
            for k, v in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or ""))
        )
        object.__setattr__(self, "_classes", classes)
        object.__setattr__(self, "_gpuless", gpuless)
        demand = sum(share * kind.gpu_milli_total for kind, share in zip(self.types, norm) if kind.gpus)
        rates = []
        for with_cpu_only in (False, True):  # r for the GPU work, then for all the work
            work = [(kind, share) for kind, share in zip(self.types, norm) if kind.gpus or with_cpu_only]
            cpu = sum(share * kind.cpu_milli for kind, share in work)
            memory = sum(share * kind.memory_mb for kind, share in work)
            rates.append((cpu / demand, memory / demand) if demand else (0.0, 0.0))
        object.__setattr__(self, "_rates", tuple(rates))

    @classmethod
    def from_requests(
        cls,
        requests: Iterable[PlacementRequest],
        coverage: float = DEFAULT_COVERAGE,
        weigh_by_gpu: bool = False,
        with_memory: bool = False,
    ) -> TaskMix:
        """The mix of a workload: its most popular types covering ``coverage`` of it.

        Popularity is the share of tasks of each type; with ``weigh_by_gpu`` it is the share
        of the workload's GPU demand instead, i.e. the chance that a unit of arriving GPU
        demand belongs to the type. Rare types are dropped (they add cost, not signal) and
        the rest renormalised. Ties in popularity are ordered by the type's fields, so the
        result does not depend on the order of ``requests``.

        Types are told apart by GPU and CPU demand, as in FGD; ``with_memory`` also tells them
        apart (and tests them) by memory. On the openb trace that makes the mix longer and the
        placements measurably worse, because memory is rarely what strands a GPU there.
        """
        if not 0 < coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        weights: Counter[TaskType] = Counter()
        for r in requests:
            t = TaskType.of(r, with_memory)
            weights[t] += t.gpu_milli_total if weigh_by_gpu else 1
        ranked = sorted(((t, float(w)) for t, w in weights.items() if w > 0), key=_sort_key)
        if not ranked:
            raise ValueError("cannot derive a task mix from an empty workload")
        total = sum(w for _, w in ranked)
        kept: list[tuple[TaskType, float]] = []
        covered = 0.0
        for t, w in ranked:
            if covered >= coverage * total:
                break
            kept.append((t, w))
            covered += w
        return cls(tuple(t for t, _ in kept), tuple(w for _, w in kept))

    def fragmentation(self, node: NodeState) -> float:
        """Expected unusable GPU capacity of ``node`` in milli-GPUs (see the module text)."""
        return self.fragmentation_of(free_state(node))

    def fragmentation_of(self, state: FreeState) -> float:
        """:meth:`fragmentation` of a node in free ``state``."""
        return _remembered(self._memo, state, self._fragmentation)

    def stranded(self, node: NodeState) -> float:
        """Free GPU capacity of ``node``, in milli-GPUs, that its free CPU and memory cannot
        feed at the rate the mix's GPU work needs them, plus what they cannot feed at the rate
        all its work needs them (S in the module text)."""
        return self.stranded_of(free_state(node))

    def stranded_of(self, state: FreeState) -> float:
        """:meth:`stranded` of a node in free ``state``."""
        _, cpu, memory, frees = state
        idle = sum(frees)
        total = 0.0
        for cpu_rate, memory_rate in self._rates:
            short = 0.0
            for free, rate in ((cpu, cpu_rate), (memory, memory_rate)):
                if rate:
                    short = max(short, idle - free / rate)
            total += short
        return total

    def _fragmentation(self, model: str, cpu: int, memory: int, frees: tuple[int, ...]) -> float:
        idle = sum(frees)
        if idle == 0:
            return 0.0
        total = self._gpuless * idle
        for c in self._classes:
            if not model_matches(c.model, model) or sum(1 for f in frees if f >= c.milli) < c.gpus:
                total += c.popularity * idle
                continue
            stranded = sum(f for f in frees if f < c.milli)
            for cpu_need, memory_need, p in c.members:
                total += p * (stranded if cpu_need <= cpu and memory_need <= memory else idle)
        return total


def _remembered(
    memo: dict[FreeState, float], state: FreeState, measure: Callable[[str, int, int, tuple[int, ...]], float]
) -> float:
    """``measure`` of a free state, remembered per distinct state."""
    cached = memo.get(state)
    if cached is None:
        cached = measure(*state)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[state] = cached
    return cached
