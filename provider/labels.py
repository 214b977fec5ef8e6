"""The names of the reservation labels, at the bottom of the layers.

Every container the provider creates on an engine carries labels under ``LABEL_PREFIX``:
the task container (its task instance's labels, :mod:`provider.task_instance`), the claims
that reserve resources for it, the holds and places in line of waiting tasks and the
short-lived locks that order claims on one engine. Whoever reads an engine (placement, the
cluster page, the node agent's series of waiting tasks, the tests) finds them by these names,
so they are defined once, here, below everything that reads them.
"""

from __future__ import annotations

from provider.task_instance import LABEL_PREFIX

DEPLOYMENT_LABEL = f"{LABEL_PREFIX}.deployment"
"""The Airflow deployment that made a container (``[gpu_docker] deployment_id``). Two
deployments that share hosts see each other's claims as used capacity, but adopt, reclaim,
sweep and lift only their own containers (docs/security/labels.md)."""

OWNER_LABEL = f"{LABEL_PREFIX}.claim.owner"
"""Carried by a claim *and* by its task container, which ties the claim to a running task."""

CLAIM_LABEL = f"{LABEL_PREFIX}.claim"
CLAIM_GPUS_LABEL = f"{LABEL_PREFIX}.claim.gpus"
CLAIM_MILLI_LABEL = f"{LABEL_PREFIX}.claim.milli"
CLAIM_CPU_LABEL = f"{LABEL_PREFIX}.claim.cpu-milli"
CLAIM_MEMORY_LABEL = f"{LABEL_PREFIX}.claim.memory-mb"
CLAIM_QUEUE_LABEL = f"{LABEL_PREFIX}.claim.queue"
"""The queue a claim counts against, on pools that declare queues (docs/queues.md)."""

LOCK_LABEL = f"{LABEL_PREFIX}.claim-lock"

HOLD_LABEL = f"{LABEL_PREFIX}.hold"
HOLD_OWNER_LABEL = f"{LABEL_PREFIX}.hold.owner"
HOLD_SINCE_LABEL = f"{LABEL_PREFIX}.hold.since"
HOLD_LEASE_LABEL = f"{LABEL_PREFIX}.hold.lease-s"
"""Seconds a hold lasts from its container's creation, on the engine's clock (docs/reservations.md)."""

WAIT_LABEL = f"{LABEL_PREFIX}.wait"
"""On a place in line: a task of a pool with queues waiting for room (docs/queues.md)."""
WAIT_POOL_LABEL = f"{LABEL_PREFIX}.wait.pool"
"""The pool connection whose line a place is in: pools that share a host keep separate lines."""
WAIT_QUEUE_LABEL = f"{LABEL_PREFIX}.wait.queue"
WAIT_PRIORITY_LABEL = f"{LABEL_PREFIX}.wait.priority"
WAIT_SINCE_LABEL = f"{LABEL_PREFIX}.wait.since"
WAIT_LEASE_LABEL = f"{LABEL_PREFIX}.wait.lease-s"
"""Seconds a place in line lasts from its container's creation, on the engine's clock."""
WAIT_REQUEST_LABEL = f"{LABEL_PREFIX}.wait.request"
"""What the waiting task asks, as JSON, so that every reader can tell whether it fits."""

PROBLEM_LABEL = f"{LABEL_PREFIX}.gpu-problem"
"""On a host-problem marker: why the engine could not start a GPU container there."""
PROBLEM_LEASE_LABEL = f"{LABEL_PREFIX}.gpu-problem.lease-s"
"""Seconds a host-problem marker lasts from its container's creation, on the engine's clock."""
PROBLEM_OWNER = "host-problem"
"""The owner label of a problem marker, so the one list of a host's containers finds it."""

RESERVATION_LABEL = f"{LABEL_PREFIX}.reservation"
"""On claims, holds, places in line, problem markers and the locks: what each is (``claim``,
``hold``, ``wait``, ``problem``, ``lock``), for anyone listing a host's containers by hand (``docker ps -a --filter label=...``)."""

CLAIM_PREFIX = "gpu-docker-claim-"
HOLD_PREFIX = "gpu-docker-hold-"
WAIT_PREFIX = "gpu-docker-wait-"
LOCK_NAME = "gpu-docker-lock"
QUEUE_LOCK_NAME = "gpu-docker-queue-lock"
"""The lock that orders admissions to a pool's queues, kept on the pool's first host that answers."""
PROBLEM_NAME = "gpu-docker-gpu-problem"
