"""What a finished container leaves behind: the XCom record, or an error that explains it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any


def result_record(
    *,
    host: str,
    container_id: str,
    image: str,
    gpu_ids: Sequence[int],
    exit_code: int,
    started: datetime,
    finished: datetime,
    log_lines: int,
    result: dict[str, Any] | None,
) -> dict[str, Any]:
    """The task's XCom: where and how it ran, and what the container reported."""
    return {
        "host": host,
        "container_id": container_id,
        "image": image,
        "gpus": list(gpu_ids),
        "exit_code": exit_code,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "duration_s": round((finished - started).total_seconds(), 3),
        "log_lines": log_lines,
        "result": result,
    }
