"""What a finished container leaves behind: the XCom record, or an error that explains it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow.sdk.exceptions import AirflowException


class ContainerFailed(AirflowException):
    """A training container exited non-zero; the message carries what is needed to act on it."""

    def __init__(
        self,
        *,
        image: str,
        host: str,
        container_id: str,
        exit_code: int,
        duration_s: float,
        tail: Sequence[str],
        oom_killed: bool = False,
    ) -> None:
        self.exit_code = exit_code
        self.tail = list(tail)
        why = " (killed for running out of memory: raise mem_limit)" if oom_killed else ""
        lines = "\n".join(f"  {line}" for line in tail) or "  (the container printed nothing)"
        super().__init__(
            f"Container {container_id[:12]} of image {image!r} on host {host!r} exited with code "
            f"{exit_code}{why} after {duration_s:.1f} s. Last {len(tail)} lines of its output:\n"
            f"{lines}"
        )


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
