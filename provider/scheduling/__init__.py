"""Pure placement core: filter nodes, score the feasible ones, choose host and GPUs.

No I/O, no clock, no globals; randomness only from a ``random.Random`` passed in. A request
and a claim are one resource vector (:class:`Resources`), with one rule for what a share of a
GPU is (:func:`is_share`). The operator and the trace simulator (``bench/placement_sim.py``) both decide as :func:`place`
does (the simulator remembering verdicts between arrivals, ``bench/replay_memo.py``), and
both account reservations with :func:`apply` (the operator by folding each host's claims
through it, :func:`provider.reservations.rules.allocation`), so what the benchmark measures
is what production runs.
"""

from provider.errors import NoFit
from provider.scheduling.accounting import apply, release
from provider.scheduling.filters import eligible_gpus, gpu_sets, reasons
from provider.scheduling.model import (
    MILLI_PER_GPU,
    GpuState,
    NodeState,
    Placement,
    PlacementRequest,
    Resources,
    is_share,
)
from provider.scheduling.place import place
from provider.scheduling.policies import (
    BestFit,
    Choice,
    Fragmentation,
    FragmentationBalanced,
    LeastLoaded,
    PlacementContext,
    Policy,
    RandomPolicy,
)
from provider.scheduling.policy_names import POLICIES, get_policy
from provider.scheduling.taskmix import TaskMix, TaskType

__all__ = [
    "MILLI_PER_GPU",
    "POLICIES",
    "BestFit",
    "Choice",
    "Fragmentation",
    "FragmentationBalanced",
    "GpuState",
    "LeastLoaded",
    "NoFit",
    "NodeState",
    "Placement",
    "PlacementContext",
    "PlacementRequest",
    "Policy",
    "RandomPolicy",
    "Resources",
    "TaskMix",
    "TaskType",
    "apply",
    "eligible_gpus",
    "get_policy",
    "gpu_sets",
    "is_share",
    "place",
    "reasons",
    "release",
]
