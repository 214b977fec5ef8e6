"""Pure placement core: filter nodes, score the feasible ones, choose host and GPUs.

No I/O, no clock, no globals; randomness only from a ``random.Random`` passed in. A request
and a claim are one resource vector (:class:`Resources`), with one rule for what a share of a
GPU is (:func:`is_share`). Why a node cannot take a request is a typed :class:`Reason`, worded
only where it is shown; every shortage comes from one capacity check (:func:`shortfalls`).
The operator and the trace simulator (``bench/placement_sim.py``) both decide as :func:`place`
does (the simulator remembering verdicts between arrivals, ``bench/replay_memo.py``), and both
account reservations with :func:`apply` (the operator by folding each host's claims through
it after that same capacity check, :func:`provider.reservations.rules.allocation`), so what
the benchmark measures is what production runs.
"""

from provider.scheduling.no_fit import NoFit
from provider.scheduling.accounting import apply, release
from provider.scheduling.capacity import shortfalls
from provider.scheduling.filters import eligible_gpus, gpu_sets, reasons
from provider.scheduling.model import (
    MILLI_PER_GPU,
    GpuState,
    NodeState,
    PlacementRequest,
    Resources,
    is_share,
)
from provider.scheduling.place import Placement, place
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
from provider.scheduling.reasons import (
    GpusUnknown,
    GpuSuspended,
    GpuUnusable,
    Held,
    Insufficient,
    InsufficientGpuMemory,
    InsufficientOnGpu,
    LabelMismatch,
    ModelMismatch,
    NoGpus,
    NoSuchGpu,
    Reason,
    Resource,
    Unreachable,
)
from provider.scheduling.taskmix import TaskMix, TaskType

__all__ = [
    "MILLI_PER_GPU",
    "POLICIES",
    "BestFit",
    "Choice",
    "Fragmentation",
    "FragmentationBalanced",
    "GpuState",
    "GpuSuspended",
    "GpuUnusable",
    "GpusUnknown",
    "Held",
    "Insufficient",
    "InsufficientGpuMemory",
    "InsufficientOnGpu",
    "LabelMismatch",
    "LeastLoaded",
    "ModelMismatch",
    "NoFit",
    "NoGpus",
    "NoSuchGpu",
    "NodeState",
    "Placement",
    "PlacementContext",
    "PlacementRequest",
    "Policy",
    "RandomPolicy",
    "Reason",
    "Resource",
    "Resources",
    "TaskMix",
    "TaskType",
    "Unreachable",
    "apply",
    "eligible_gpus",
    "get_policy",
    "gpu_sets",
    "is_share",
    "place",
    "reasons",
    "release",
    "shortfalls",
]
