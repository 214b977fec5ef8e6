"""Why a host cannot take a request: typed reasons, worded only when shown.

A reason is a value, as Kubernetes' ``InsufficientResource`` is: a caller that must act on it
(advise fixing the hosts when none could be read, tell a shortage worth waiting for from a host
that will never do) tests its type and reads its fields, and never parses a message. The text
of each is its ``str()``; it is made at the edge only (the no-fit message, the task's XCom, the
cluster page), so every page and message reads as it always has.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from provider.scheduling.model import MILLI_PER_GPU


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason why a host cannot take a request; ``str()`` is its wording."""

    def __str__(self) -> str:
        raise NotImplementedError(type(self).__name__)


class Resource(enum.Enum):
    """What a host can have too little of; the value is the request argument that asks for it.

    Units of :class:`Insufficient`'s figures, per resource: ``GPUS`` counts whole GPUs (free:
    those with nothing reserved; capacity: the host's GPUs); ``GPU_MILLI`` counts milli-GPUs on
    one GPU (free: the most any one GPU has; capacity: the host's milli-GPUs); ``GPU_MEMORY``
    counts GPUs with the memory asked for free by measurement; ``CPU`` milli-CPUs; ``MEMORY`` MB.
    """

    GPUS = "gpus"
    GPU_MILLI = "gpu_milli"
    GPU_MEMORY = "gpu_memory_mb"
    CPU = "cpu_milli"
    MEMORY = "memory_mb"


@dataclass(frozen=True, slots=True)
class Insufficient(Reason):
    """Too little of one resource: ``requested`` but only ``free`` of ``capacity``, in the
    resource's unit (see :class:`Resource`)."""

    resource: Resource
    requested: int
    free: int
    capacity: int

    def __str__(self) -> str:
        r = self.resource
        if r is Resource.GPUS:
            return f"gpu free {self.free} of {self.capacity} < {self.requested}"
        if r is Resource.GPU_MILLI:
            return f"gpu free {self.free}m < {self.requested}m on one GPU (of {self.capacity // MILLI_PER_GPU} GPUs)"
        if r is Resource.GPU_MEMORY:
            return f"gpu memory free on {self.free} GPUs < {self.requested}"
        if r is Resource.CPU:
            return f"cpu free {self.free}m < {self.requested}m"
        return f"memory free {self.free}MB < {self.requested}MB"


@dataclass(frozen=True, slots=True)
class InsufficientGpuMemory(Insufficient):
    """Too few GPUs with ``per_gpu_mb`` free by measurement (``resource`` is ``GPU_MEMORY``)."""

    per_gpu_mb: int

    def __str__(self) -> str:
        return f"gpu memory free >= {self.per_gpu_mb}MB on {self.free} GPUs < {self.requested}"


@dataclass(frozen=True, slots=True)
class InsufficientOnGpu(Insufficient):
    """Too few milli-GPUs unreserved on GPU ``gpu``, one a claim names (``resource`` is
    ``GPU_MILLI``; capacity: that GPU's milli-GPUs)."""

    gpu: int

    def __str__(self) -> str:
        return f"gpu {self.gpu} free {self.free}m < {self.requested}m"


@dataclass(frozen=True, slots=True)
class Unreachable(Reason):
    """The host could not be read (agent or engine); nothing else about it is known."""

    cause: str

    def __str__(self) -> str:
        return f"unreachable: {self.cause}"


@dataclass(frozen=True, slots=True)
class Held(Reason):
    """The host is held back for a task that has waited longer (:mod:`provider.scheduling.waiting`)."""

    cause: str

    def __str__(self) -> str:
        return f"held: {self.cause}"


@dataclass(frozen=True, slots=True)
class LabelMismatch(Reason):
    """A label the request requires has another value on the host (``have`` None: unset)."""

    key: str
    have: str | None
    want: str

    def __str__(self) -> str:
        return f"label {self.key}={self.have if self.have is not None else '(unset)'} != {self.want}"


@dataclass(frozen=True, slots=True)
class ModelMismatch(Reason):
    """The host's GPU model is not one the request accepts (``have`` empty: no GPUs)."""

    have: str
    want: str

    def __str__(self) -> str:
        return f"gpu model {self.have or '(none)'} != {self.want}"


@dataclass(frozen=True, slots=True)
class GpusUnknown(Reason):
    """The host's capacity is unknown (no node agent), so it is offered no GPU work."""

    cause: str

    def __str__(self) -> str:
        return f"GPUs unknown: {self.cause}"


@dataclass(frozen=True, slots=True)
class NoGpus(Reason):
    """The host has no GPUs at all."""

    def __str__(self) -> str:
        return "has no GPUs"


@dataclass(frozen=True, slots=True)
class GpuUnusable(Reason):
    """The host's engine cannot give GPUs to a container (no NVIDIA runtime): not worth waiting for."""

    cause: str

    def __str__(self) -> str:
        return self.cause


@dataclass(frozen=True, slots=True)
class GpuSuspended(Reason):
    """The host gets no GPU work for now (its engine failed to start GPU containers lately)."""

    cause: str

    def __str__(self) -> str:
        return self.cause


@dataclass(frozen=True, slots=True)
class NoSuchGpu(Reason):
    """A claim names a GPU the host does not have (any longer)."""

    index: int

    def __str__(self) -> str:
        return f"no GPU with index {self.index}"
