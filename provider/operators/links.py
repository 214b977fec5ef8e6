"""The "Container log" button on a GpuDockerOperator task: the archived container output."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink


class ContainerLogLink(BaseOperatorLink):
    """Links to the task attempt's archive prefix (chunks and ``manifest.json``).

    The task runner computes the link when the task ends (succeeded or failed) and stores it in
    the XCom ``_link_ContainerLogLink``, which the UI reads; the operator records the archive URL
    while it runs, so a failed container's output is linked too.
    """

    name = "Container log"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return str(getattr(operator, "log_archive_url", "") or "")
