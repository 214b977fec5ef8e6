"""One task instance, as Airflow names it and as the labels on its containers name it.

The operator labels every container it makes (the task container, its claims and holds) with
the task instance it belongs to; the adoption of an earlier try's container, the orphan sweep,
the waiting trigger and the cluster page read those labels back. :class:`TaskInstanceRef` is
that reference, written to labels by :meth:`~TaskInstanceRef.to_labels` and read back by
:meth:`~TaskInstanceRef.from_labels`, and nowhere else.

Pure: no Airflow import, so every layer can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

LABEL_PREFIX = "airflow-gpu-docker"
MANAGED_LABEL = f"{LABEL_PREFIX}.managed"

DAG_ID_LABEL = f"{LABEL_PREFIX}.dag_id"
TASK_ID_LABEL = f"{LABEL_PREFIX}.task_id"
RUN_ID_LABEL = f"{LABEL_PREFIX}.run_id"
TRY_NUMBER_LABEL = f"{LABEL_PREFIX}.try_number"
MAP_INDEX_LABEL = f"{LABEL_PREFIX}.map_index"
GPU_QUEUE_LABEL = f"{LABEL_PREFIX}.gpu_queue"
"""On a task container of a pool with queues: the queue its GPUs count against (docs/queues.md),
for the node agent, which names it in the task's GPU series (docs/metrics.md). The claim says
the same under a label of its own, which only claims carry, so that summing claims by queue
never counts the task container too."""


@dataclass(frozen=True, slots=True, order=True)
class TaskInstanceRef:
    """A task instance (``dag_id``, ``task_id``, ``run_id``, ``map_index``; -1 when not mapped)
    and the try that acts for it.

    Two references to one task instance are equal, hash alike and sort together whatever try
    they carry (``try_number`` takes no part in comparisons): a retry finds the container of an
    earlier try by the task instance, and the orphan sweep asks the metadata database about task
    instances, not tries.
    """

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int = field(default=0, compare=False)

    @classmethod
    def of(cls, ti: Any) -> TaskInstanceRef:
        """The reference of an Airflow task instance (``context["ti"]``)."""
        map_index = getattr(ti, "map_index", -1)
        return cls(
            dag_id=str(ti.dag_id),
            task_id=str(ti.task_id),
            run_id=str(ti.run_id),
            map_index=-1 if map_index is None else int(map_index),
            try_number=int(getattr(ti, "try_number", 1) or 1),
        )

    def at_try(self, try_number: int) -> TaskInstanceRef:
        """The same task instance, acted for by ``try_number``."""
        return replace(self, try_number=try_number)

    def to_labels(self) -> dict[str, str]:
        """The labels that tie a container to this task instance and try."""
        return {
            MANAGED_LABEL: "true",
            DAG_ID_LABEL: self.dag_id,
            TASK_ID_LABEL: self.task_id,
            RUN_ID_LABEL: self.run_id,
            TRY_NUMBER_LABEL: str(self.try_number),
            MAP_INDEX_LABEL: str(self.map_index),
        }

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> TaskInstanceRef | None:
        """The task instance a container's labels name; None when they do not name one fully
        (no container this provider makes lacks them: such a container is not the provider's)."""
        try:
            return cls(
                dag_id=labels[DAG_ID_LABEL],
                task_id=labels[TASK_ID_LABEL],
                run_id=labels[RUN_ID_LABEL],
                map_index=int(labels[MAP_INDEX_LABEL]),
                try_number=int(labels.get(TRY_NUMBER_LABEL, "0")),
            )
        except (KeyError, ValueError):
            return None

    def selector(self) -> list[str]:
        """Engine label filters that find every container of this task instance, of any try."""
        return [
            f"{MANAGED_LABEL}=true",
            f"{DAG_ID_LABEL}={self.dag_id}",
            f"{TASK_ID_LABEL}={self.task_id}",
            f"{RUN_ID_LABEL}={self.run_id}",
            f"{MAP_INDEX_LABEL}={self.map_index}",
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (a trigger's kwargs, a page's document)."""
        return {"dag_id": self.dag_id, "task_id": self.task_id, "run_id": self.run_id,
                "map_index": self.map_index, "try_number": self.try_number}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TaskInstanceRef:
        """Inverse of :meth:`to_dict`."""
        return cls(str(doc["dag_id"]), str(doc["task_id"]), str(doc["run_id"]), int(doc.get("map_index", -1)),
                   int(doc.get("try_number", 0)))

    def __str__(self) -> str:
        mapped = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{mapped} {self.run_id}"

    def describe(self) -> str:
        """In a sentence: ``task d.t of run r, map index 3``."""
        mapped = f", map index {self.map_index}" if self.map_index >= 0 else ""
        return f"task {self.dag_id}.{self.task_id} of run {self.run_id}{mapped}"
