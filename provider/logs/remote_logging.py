"""Airflow remote logging of the task logs themselves, to any ``ObjectStoragePath`` storage.

The container output already goes to object storage (:mod:`provider.logs.archive`); with this
module the Airflow task logs (the operator's own lines, the live container lines, trigger
logs) can go to the same place, on any storage Airflow's object storage reaches: ``file://``
(a shared volume) or ``s3://conn_id@bucket/prefix``. Configure::

    [logging]
    remote_logging = True
    remote_base_log_folder = file:///srv/airflow/task-logs      # or s3://conn_id@bucket/task-logs
    logging_config_class = provider.logs.remote_logging.LOGGING_CONFIG

Airflow's stock logging settings accept only the schemes of the providers they know and
raise for any other, so this module defines the logging configuration itself (the same
handlers and loggers as Airflow's default) and sets ``REMOTE_TASK_LOG``, which Airflow reads
from the module named by ``logging_config_class``.

A task log is uploaded when the task attempt ends (Airflow calls :meth:`upload`), appended to
what is already stored at that path, and the local copy is then emptied (or deleted with
``[logging] delete_local_logs``), as Airflow's S3 handler does. A storage failure keeps the
local copy and says so in the worker's log: the task's outcome does not depend on storage.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.configuration import conf
from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)


@dataclass
class ObjectStorageRemoteLogIO:
    """Airflow's ``RemoteLogIO`` on ``ObjectStoragePath``.

    :param base_log_folder: the local task-log folder (``[logging] base_log_folder``).
    :param remote_base: URL of the remote folder (``[logging] remote_base_log_folder``).
    :param conn_id: connection for the storage when the URL does not name one.
    :param delete_local_copy: delete the local file after a successful upload.
    """

    base_log_folder: Path
    remote_base: str
    conn_id: str | None = None
    delete_local_copy: bool = False

    processors: tuple[Any, ...] = ()

    @classmethod
    def from_config(cls) -> ObjectStorageRemoteLogIO:
        return cls(
            base_log_folder=Path(os.path.expanduser(conf.get_mandatory_value("logging", "base_log_folder"))),
            remote_base=conf.get_mandatory_value("logging", "remote_base_log_folder"),
            conn_id=conf.get("logging", "remote_log_conn_id", fallback=None) or None,
            delete_local_copy=conf.getboolean("logging", "delete_local_logs", fallback=False),
        )

    def _remote(self, relative: str | Path) -> ObjectStoragePath:
        return ObjectStoragePath(self.remote_base, conn_id=self.conn_id) / str(relative)

    def upload(self, path: os.PathLike[str] | str, ti: Any = None) -> None:
        """Append the local log at ``path`` to its remote copy, then empty the local one."""
        local = Path(path)
        if not local.is_absolute():
            local = self.base_log_folder / local
        try:
            relative = local.resolve().relative_to(self.base_log_folder.resolve())
        except ValueError:
            log.warning("Not uploading %s: it is outside base_log_folder %s", local, self.base_log_folder)
            return
        if not local.is_file():
            return
        data = local.read_bytes()
        remote = self._remote(relative)
        try:
            previous = remote.read_bytes() if remote.exists() else b""
            remote.parent.mkdir(parents=True, exist_ok=True)
            remote.write_bytes(previous + data)
        except Exception as exc:  # noqa: BLE001 - any storage failure: keep the local copy
            log.warning("Task log %s stays local: uploading it to %s failed (%s: %s)",
                        local, remote, type(exc).__name__, exc)
            return
        if self.delete_local_copy:
            shutil.rmtree(local.parent, ignore_errors=True)
        else:
            local.write_bytes(b"")

    def read(self, relative_path: str, ti: Any) -> tuple[list[str], list[str] | None]:
        """The stored log of ``relative_path`` and its trigger logs (``….log.trigger.N.log``)."""
        remote = self._remote(relative_path)
        try:
            found = sorted(p for p in remote.parent.iterdir() if p.name.startswith(remote.name))
            return [str(p) for p in found], [p.read_text(errors="replace") for p in found]
        except FileNotFoundError:
            return [], None
        except Exception as exc:  # noqa: BLE001 - the UI shows the reason among the sources
            return [f"could not read {remote}: {type(exc).__name__}: {exc}"], None


def _logging_config() -> dict[str, Any]:
    """The handlers and loggers of Airflow's default logging configuration."""
    level = conf.get_mandatory_value("logging", "logging_level").upper()
    formatter = {
        "format": conf.get_mandatory_value("logging", "log_format"),
        "class": conf.get("logging", "log_formatter_class", fallback="airflow.utils.log.timezone_aware.TimezoneAware"),
    }
    masked = ["mask_secrets_core"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"airflow": formatter},
        "filters": {"mask_secrets_core": {"()": "airflow._shared.secrets_masker._secrets_masker"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "airflow", "stream": "sys.stdout",
                        "filters": masked},
            "task": {"class": "airflow.utils.log.file_task_handler.FileTaskHandler", "formatter": "airflow",
                     "base_log_folder": os.path.expanduser(conf.get_mandatory_value("logging", "base_log_folder")),
                     "filters": masked},
        },
        "loggers": {"airflow.task": {"handlers": ["task"], "level": level, "propagate": True, "filters": masked}},
        "root": {"handlers": ["console"], "level": level, "filters": masked},
    }


LOGGING_CONFIG = _logging_config()
REMOTE_TASK_LOG = ObjectStorageRemoteLogIO.from_config() if conf.getboolean("logging", "remote_logging") else None
DEFAULT_REMOTE_CONN_ID = REMOTE_TASK_LOG.conn_id if REMOTE_TASK_LOG is not None else None
