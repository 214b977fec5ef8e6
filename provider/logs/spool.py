"""A local spool for archive objects that storage did not accept, uploaded when it answers again.

The task's outcome must not depend on object storage, and nothing may be lost while storage is
away. An object that could not be written is kept on the worker's disk as two files: the bytes
(``ID.data``) and where they belong (``ID.json``: URL and connection id). The ``.json`` is
written last, by an atomic rename, so a half-written entry is never uploaded. Any process may
flush the spool (the task itself during the run and at its end, or the next task on that
worker); uploading the same bytes to the same key twice is harmless.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from airflow.sdk import ObjectStoragePath


def write_object(dest: ObjectStoragePath, data: bytes) -> None:
    """Write ``data`` at ``dest``, whole or not at all.

    An object store stores a PUT whole or not at all. A local file is written next to its place
    and renamed there, so a disk that fills up mid-write leaves no truncated chunk behind (and
    local directories are created: object stores have none).
    """
    if dest.protocol not in ("file", "local", ""):
        dest.write_bytes(data)
        return
    path = Path(dest.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, data)


def write_whole(path: Path, data: bytes) -> None:
    """Write a local file under a temporary name and rename it into place; on failure (a full
    disk) remove the partial file and raise."""
    part = path.with_name(path.name + ".part")
    try:
        part.write_bytes(data)
        os.replace(part, path)
    except OSError:
        part.unlink(missing_ok=True)
        raise


class Spool:
    """Objects waiting for storage, in the directory ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, dest: ObjectStoragePath, data: bytes) -> None:
        """Keep ``data`` for ``dest``; on failure (a full disk) leave no partial entry behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        entry = self.root / uuid.uuid4().hex
        meta = json.dumps({"url": str(dest), "conn_id": dest.conn_id}).encode()
        write_whole(entry.with_suffix(".data"), data)
        try:
            write_whole(entry.with_suffix(".json"), meta)
        except OSError:
            entry.with_suffix(".data").unlink(missing_ok=True)
            raise

    def pending(self) -> int:
        return sum(1 for _ in self.root.glob("*.json")) if self.root.is_dir() else 0

    def flush(self) -> int:
        """Upload spooled objects, oldest first; return how many went. Stops at the first
        failure and raises it, since storage is evidently still away."""
        if not self.root.is_dir():
            return 0
        entries = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        done = 0
        for meta_path in entries:
            try:
                meta = json.loads(meta_path.read_text())
                data = meta_path.with_suffix(".data").read_bytes()
            except FileNotFoundError:  # another process flushed it meanwhile
                continue
            write_object(ObjectStoragePath(meta["url"], conn_id=meta["conn_id"]), data)
            meta_path.unlink(missing_ok=True)
            meta_path.with_suffix(".data").unlink(missing_ok=True)
            done += 1
        return done
