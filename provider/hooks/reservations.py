"""GPU reservations kept on the Docker hosts themselves, so every worker sees the same ones.

A reservation ("claim") is a container that is created and never started: it uses no CPU,
no memory and no GPU, survives worker crashes, and is visible to anyone who can list the
engine's containers. One claim per GPU:

* a **whole GPU** is claimed by creating a container named ``gpu-docker-claim-gpu<N>``. The
  engine refuses a second container of that name (HTTP 409), atomically, so two workers can
  never both hold GPU N, whatever their clocks or their snapshots said;
* a **share** (``gpu_milli < 1000``) is a container named ``...-gpu<N>-share-<owner>``; its
  check-and-create runs while holding the lock container ``gpu-docker-claim-lock-gpu<N>``
  (created by name the same way), so shares never add up beyond one GPU;
* whole claims and shares exclude each other by *create, then verify*: each claimant lists
  the GPU's claims after creating its own and backs off on conflict
  (:func:`~provider.hooks.claim_rules.conflict`); whichever lists last sees the other.

Claims carry the task's identity, the GPU, the milli-GPUs, an owner token and a creation
time as labels. The task container carries the same owner token. A claim older than
``grace_s`` whose owner has no running container is **stale** (the worker died between
claiming and cleaning up) and is removed by whoever reads the host next
(:mod:`provider.hooks.pool_state`).

The claim container is created from the task's own image, which the operator has made
present on the host before claiming (``GpuDockerHook.ensure_image``): no extra image needs
to exist on any host. It is never started, so its command does not matter.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import requests
from docker.errors import APIError, NotFound

from provider.errors import ClaimTaken
from provider.hooks.claim_rules import (
    CLAIM_LABEL,
    CREATED_LABEL,
    GPU_LABEL,
    LOCK_LABEL,
    Claim,
    claim_labels,
    claim_name,
    conflict,
    lock_name,
    parse_claim,
)
from provider.hooks.docker_host import GpuDockerHook
from provider.scheduling.model import MILLI_PER_GPU

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 120.0
LOCK_STALE_S = 30.0
LOCK_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """The claims one task holds on one host."""

    host: str
    owner: str
    gpu_ids: tuple[int, ...]
    milli: int
    container_ids: tuple[str, ...]


def new_owner() -> str:
    """A fresh owner token: unique per placement attempt, valid in a container name."""
    return uuid.uuid4().hex[:16]


class Reservations:
    """Claims on one host's engine, through its :class:`GpuDockerHook`.

    :param docker: the host's hook (all I/O goes through its API client).
    :param clock: wall-clock seconds; claims compare times written by different workers.
    """

    def __init__(self, docker: GpuDockerHook, clock: Callable[[], float] = time.time) -> None:
        self.docker = docker
        self.clock = clock

    def reserve(self, gpu_ids: Sequence[int], milli: int, owner: str, image: str,
                identity: Mapping[str, str]) -> Reservation:
        """Claim ``milli`` of each GPU in ``gpu_ids`` for ``owner``, all or nothing.

        Raises :class:`ClaimTaken` when any GPU is taken; claims already made are removed.
        """
        made: list[str] = []
        try:
            for gpu in sorted(gpu_ids):
                made.append(self._claim_one(gpu, milli, owner, image, identity))
        except BaseException:
            for cid in made:
                self.docker.remove(cid)
            raise
        return Reservation(self.docker.host.name, owner, tuple(sorted(gpu_ids)), milli, tuple(made))

    def release(self, reservation: Reservation) -> None:
        """Remove the reservation's claims (a missing claim was already reclaimed)."""
        for cid in reservation.container_ids:
            self.docker.remove(cid)

    def _claim_one(self, gpu: int, milli: int, owner: str, image: str, identity: Mapping[str, str]) -> str:
        name = claim_name(gpu, milli, owner)
        labels = claim_labels(gpu, milli, owner, self.clock(), identity)
        if milli >= MILLI_PER_GPU:
            cid = self._create(name, image, labels)
            return self._verified(cid, gpu, milli, owner)
        lock = self._lock(gpu, image)
        try:
            reason = conflict(self._on_gpu(gpu), gpu, milli, owner)
            if reason:
                raise ClaimTaken(f"{self.docker.host.name}: {reason}")
            cid = self._create(name, image, labels)
            return self._verified(cid, gpu, milli, owner)
        finally:
            self.docker.remove(lock)

    def _verified(self, cid: str, gpu: int, milli: int, owner: str) -> str:
        reason = conflict(self._on_gpu(gpu), gpu, milli, owner)
        if reason:
            self.docker.remove(cid)
            raise ClaimTaken(f"{self.docker.host.name}: {reason}")
        return cid

    def _create(self, name: str, image: str, labels: Mapping[str, str]) -> str:
        """Create (never start) a container by name; a name in use means the GPU is taken."""
        try:
            res = self.docker.api.create_container(
                image=image, command=["true"], name=name, labels=dict(labels), network_disabled=True,
                host_config=self.docker.api.create_host_config(network_mode="none"),
            )
        except APIError as exc:
            if exc.status_code == 409:
                raise ClaimTaken(f"{self.docker.host.name}: {name} exists (GPU already reserved)") from exc
            raise
        return str(res["Id"])

    def _lock(self, gpu: int, image: str) -> str:
        """Hold the GPU's share lock; a lock older than ``LOCK_STALE_S`` is broken."""
        deadline = time.monotonic() + LOCK_WAIT_S
        labels = {LOCK_LABEL: "true", GPU_LABEL: str(gpu), CREATED_LABEL: f"{self.clock():.3f}"}
        while True:
            try:
                return self._create(lock_name(gpu), image, labels)
            except ClaimTaken:
                self._break_if_stale(lock_name(gpu))
                if time.monotonic() > deadline:
                    raise ClaimTaken(
                        f"{self.docker.host.name}: the share lock of GPU {gpu} stayed busy for {LOCK_WAIT_S:g} s"
                    ) from None
                time.sleep(0.05)

    def _break_if_stale(self, name: str) -> None:
        try:
            labels = self.docker.api.inspect_container(name)["Config"]["Labels"] or {}
        except (NotFound, requests.exceptions.RequestException):
            return
        if self.clock() - float(labels.get(CREATED_LABEL, "0")) > LOCK_STALE_S:
            log.warning("Breaking stale lock %s on %s", name, self.docker.host.name)
            self.docker.remove(name)

    def _on_gpu(self, gpu: int) -> list[Claim]:
        return self._list({CLAIM_LABEL: "true", GPU_LABEL: str(gpu)})

    def _list(self, labels: Mapping[str, str]) -> list[Claim]:
        return [c for c in map(parse_claim, self.docker.containers(labels)) if c is not None]
