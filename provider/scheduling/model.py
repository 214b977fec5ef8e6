"""Typed, immutable inputs and outputs of placement.

Everything placement decides is a pure function of these values, so the same code serves the
operator (snapshots read from node agents plus reservations read from Docker hosts) and the
trace-driven simulator (snapshots built from a cluster trace). Nothing here reads a clock,
a socket or a global.

GPU sharing is counted in *milli-GPUs*: a whole GPU is 1000, a task that needs a fifth of one
asks for ``gpu_milli=200``. This is the accounting of the openb trace and of the FGD study,
and it is what reservations record, so a request reads the same in a DAG and in a trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from provider.errors import SpecError


MILLI_PER_GPU = 1000

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU of a node: what the agent measured and what placements have reserved.

    ``allocated_milli`` is the sum of reservations on this GPU (0 to 1000). Measured values
    (memory used, utilisation) lag a job that has just started, which is why placement counts
    reservations first and measurements second.
    """

    index: int
    model: str = ""
    uuid: str = ""
    memory_total_mb: int = 0
    memory_used_mb: int = 0
    utilization_pct: float = 0.0
    allocated_milli: int = 0

    @property
    def free_milli(self) -> int:
        """Unreserved share of this GPU, in milli-GPUs."""
        return max(0, MILLI_PER_GPU - self.allocated_milli)

    @property
    def memory_free_mb(self) -> int:
        """Memory not in use according to the last measurement."""
        return max(0, self.memory_total_mb - self.memory_used_mb)


@dataclass(frozen=True, slots=True)
class NodeState:
    """One host of the pool at one instant.

    Capacities and reservations decide feasibility; ``cpu_utilization_pct`` and the GPUs'
    measured utilisation only rank feasible nodes. A node the hook could not read keeps its
    place in the list with ``unreachable`` set to the reason, so a no-fit message can name it.
    ``held`` says why the node is held back for a task that has waited long enough to go
    first (:mod:`provider.scheduling.waiting`); a held node takes no other request.
    ``unmeasured`` says why the node's capacity is unknown (a host without a node agent): it
    takes CPU-only work unchecked, scores below every measured node, and offers no GPUs.
    ``gpu_unusable`` says why its engine cannot give GPUs to a container (no NVIDIA runtime),
    so GPU requests go elsewhere; ``gpu_suspended`` says why it should get none *for now* (its
    engine failed to start a GPU container lately), which a waiting request may outlast. ``pull_bytes`` is what the node's engine would have to pull
    before the request's image can start there (0: it has the image; None: not known), for the
    locality term of :func:`~provider.scheduling.place.place`.
    ``measured_at`` is when the measurements were taken (seconds since the epoch, by the host's
    clock; None when not known). ``cpu_unmeasured_milli`` is the CPU of work placed on the node
    too recently to show in ``cpu_utilization_pct`` (see
    :func:`~provider.scheduling.accounting.unseen_cpu_milli`): placement counts it as load, so
    jobs placed within one sampling interval do not all go to the host that still looks idle.
    """

    name: str
    cpu_milli: int = 0
    memory_mb: int = 0
    gpus: tuple[GpuState, ...] = ()
    cpu_allocated_milli: int = 0
    memory_allocated_mb: int = 0
    cpu_utilization_pct: float = 0.0
    memory_available_mb: int | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    unreachable: str | None = None
    held: str | None = None
    unmeasured: str | None = None
    gpu_unusable: str | None = None
    gpu_suspended: str | None = None
    pull_bytes: int | None = None
    measured_at: float | None = None
    cpu_unmeasured_milli: int = 0

    @property
    def cpu_free_milli(self) -> int:
        return max(0, self.cpu_milli - self.cpu_allocated_milli)

    @property
    def memory_free_mb(self) -> int:
        """Unreserved memory, further limited by what the host measured as available."""
        free = max(0, self.memory_mb - self.memory_allocated_mb)
        if self.memory_available_mb is not None:
            free = min(free, self.memory_available_mb)
        return free

    @property
    def cpu_busy_pct(self) -> float:
        """CPU utilisation as last measured plus what was reserved since (at most 100)."""
        unseen = 100.0 * self.cpu_unmeasured_milli / self.cpu_milli if self.cpu_milli else 0.0
        return min(100.0, self.cpu_utilization_pct + unseen)

    @property
    def gpu_free_milli(self) -> int:
        return sum(g.free_milli for g in self.gpus)

    @property
    def gpu_model(self) -> str:
        """The node's GPU model ("" without GPUs); pools are homogeneous per node."""
        return self.gpus[0].model if self.gpus else ""


FreeState = tuple[str, int, int, tuple[int, ...]]
"""What is free on a node, all that the fragmentation measures read: GPU model, free
milli-CPUs, free memory (MB), free milli-GPUs of each GPU in ascending order. Nodes in the same
free state measure alike, so the measures remember results per free state."""


def free_state(node: NodeState) -> FreeState:
    """The :data:`FreeState` of ``node``."""
    return (node.gpu_model, node.cpu_free_milli, node.memory_free_mb, tuple(sorted([g.free_milli for g in node.gpus])))


def is_share(gpus: int, gpu_milli: int) -> bool:
    """Whether ``gpus`` GPUs at ``gpu_milli`` each is a share of one GPU rather than whole GPUs.

    The one rule of GPU sharing: a share is part of *one* GPU (``gpus == 1``, fewer than
    :data:`MILLI_PER_GPU`); everything else takes whole GPUs. :class:`Resources` holds to it,
    and so do the readers of raw numbers (a trace, a container's environment).
    """
    return gpus == 1 and gpu_milli < MILLI_PER_GPU


@dataclass(frozen=True, slots=True)
class Resources:
    """One resource vector: what a request asks for, and what a claim takes on a host.

    ``gpus`` GPUs, each taking ``gpu_milli`` milli-GPUs: :data:`MILLI_PER_GPU` for whole GPUs,
    less for a share, which is only ever part of one GPU (:func:`is_share`).
    ``gpu_memory_mb`` asks that each chosen GPU has that much memory free by measurement (a
    constraint on measurement, which a claim does not record). ``cpu_milli`` and ``memory_mb``
    are for the whole task. The request, the claim read back from a host and a workload's task
    type are all this vector, so the accounting, the filter and the simulator read one shape.

    Numbers no task could ask for raise :class:`~provider.errors.SpecError` naming the argument:
    a DAG author meets this as a bad operator argument, a claim reader as a foreign container.
    """

    gpus: int = 0
    gpu_milli: int = MILLI_PER_GPU
    gpu_memory_mb: int = 0
    cpu_milli: int = 0
    memory_mb: int = 0

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise SpecError(f"gpus must be >= 0, got {self.gpus}")
        if not 0 < self.gpu_milli <= MILLI_PER_GPU:
            raise SpecError(f"gpu_milli must be in 1..{MILLI_PER_GPU}, got {self.gpu_milli}")
        if self.gpu_milli < MILLI_PER_GPU and not is_share(self.gpus, self.gpu_milli):
            raise SpecError(f"a GPU share (gpu_milli={self.gpu_milli}) needs gpus=1, got gpus={self.gpus}")
        for name in ("gpu_memory_mb", "cpu_milli", "memory_mb"):
            if getattr(self, name) < 0:
                raise SpecError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def is_share(self) -> bool:
        """Whether this is a share of one GPU (see :func:`is_share`)."""
        return is_share(self.gpus, self.gpu_milli)

    @property
    def gpu_milli_total(self) -> int:
        """Milli-GPUs taken in all (a share counts as its fraction)."""
        return self.gpus * self.gpu_milli

    def describe(self) -> str:
        """The vector as a DAG author writes it, e.g. ``gpus=1 gpu_milli=500 cpu_milli=2000``."""
        asked = f"gpus={self.gpus}"
        if self.is_share:
            asked += f" gpu_milli={self.gpu_milli}"
        for name in ("gpu_memory_mb", "cpu_milli", "memory_mb"):
            if getattr(self, name):
                asked += f" {name}={getattr(self, name)}"
        return asked


@dataclass(frozen=True, slots=True)
class PlacementRequest(Resources):
    """What one task needs: its :class:`Resources`, and where it may run.

    ``labels`` must all match the node's labels; ``gpu_model`` must equal the node's GPU model
    when given. The request *is* its resource vector (a subclass, built with the vector's
    keyword arguments plus these), so the accounting and the filter take it where they take a
    vector, and DAGs, triggers and traces build and serialise it field by field.
    """

    gpu_model: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def resources(self) -> Resources:
        """The resource vector alone, without the constraints on where it may run."""
        return Resources(self.gpus, self.gpu_milli, self.gpu_memory_mb, self.cpu_milli, self.memory_mb)
