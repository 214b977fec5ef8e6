"""The names of the reservation labels: the bottom of the reservation layer.

Every container the provider creates on an engine carries labels under ``LABEL_PREFIX``:
the task container (its task instance's labels, :mod:`provider.task_instance`), the claims
that reserve resources for it, the holds of waiting tasks and the short-lived lock that orders
claims on one engine. Whoever reads an engine (placement, the
cluster page, the tests) finds them by these names, so they are defined once, here, and
imported downward by everything else.
"""

from __future__ import annotations

from provider.task_instance import LABEL_PREFIX

OWNER_LABEL = f"{LABEL_PREFIX}.claim.owner"
"""Carried by a claim *and* by its task container, which ties the claim to a running task."""

CLAIM_LABEL = f"{LABEL_PREFIX}.claim"
CLAIM_GPUS_LABEL = f"{LABEL_PREFIX}.claim.gpus"
CLAIM_MILLI_LABEL = f"{LABEL_PREFIX}.claim.milli"
CLAIM_CPU_LABEL = f"{LABEL_PREFIX}.claim.cpu-milli"
CLAIM_MEMORY_LABEL = f"{LABEL_PREFIX}.claim.memory-mb"
CREATED_LABEL = f"{LABEL_PREFIX}.claim.created"

LOCK_LABEL = f"{LABEL_PREFIX}.claim-lock"

HOLD_LABEL = f"{LABEL_PREFIX}.hold"
HOLD_OWNER_LABEL = f"{LABEL_PREFIX}.hold.owner"
HOLD_SINCE_LABEL = f"{LABEL_PREFIX}.hold.since"
HOLD_EXPIRES_LABEL = f"{LABEL_PREFIX}.hold.expires"

PROBLEM_LABEL = f"{LABEL_PREFIX}.gpu-problem"
"""On a host-problem marker: why the engine could not start a GPU container there."""
PROBLEM_EXPIRES_LABEL = f"{LABEL_PREFIX}.gpu-problem.expires"
PROBLEM_OWNER = "host-problem"
"""The owner label of a problem marker, so the one list of a host's containers finds it."""

RESERVATION_LABEL = f"{LABEL_PREFIX}.reservation"
"""On claims, holds, problem markers and the lock: what each is (``claim``, ``hold``, ``problem``,
``lock``), for anyone listing a host's containers by hand (``docker ps -a --filter label=...``)."""

CLAIM_PREFIX = "gpu-docker-claim-"
HOLD_PREFIX = "gpu-docker-hold-"
LOCK_NAME = "gpu-docker-lock"
PROBLEM_NAME = "gpu-docker-gpu-problem"
