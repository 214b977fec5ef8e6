"""A stand-in task instance for benchmarks that call ``GpuDockerOperator.execute`` in threads.

A benchmark runs the real operator without an Airflow scheduler; the operator reads only a
task instance's identity (to label its claims and containers) and pushes its XComs
(``placement``, the record of where the run went and why), which the benchmark then reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BenchTI:
    """The task-instance fields the operator reads; one per run."""

    run_id: str
    dag_id: str
    task_id: str = "train"
    try_number: int = 1
    map_index: int = -1
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value
