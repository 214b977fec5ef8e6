"""A local spool for archive objects that storage did not accept, uploaded when it answers again.

The task's outcome must not depend on object storage, and nothing may be lost while storage is
away. An object that could not be written is kept on the worker's disk as two files: the bytes
(``ID.data``) and their record (``ID.json``: the archive prefix, the object's key below it, the
connection id, the size and the sha256). The ``.json`` is written last, by an atomic rename, so
a half-written entry is never uploaded. Any process may flush the spool (the task itself during
the run and at its end, or the next task on that worker); uploading the same bytes to the same
key twice is harmless.

A flush uploads with the worker's storage credentials, so it trusts no entry as written: the
directory must be the worker user's own and closed to others; an entry must be two regular
files (no symbolic link) of that user, with a record of exactly the known fields, a key that is
an archive object's name (it cannot leave its prefix), and bytes whose size and sha256 match
the record. An entry that fails is moved to ``quarantine/`` with the reason beside it and
reported, never uploaded and never deleted, and the flush goes on with the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any, Protocol

from airflow.sdk import ObjectStoragePath

from provider.errors import SpoolEntryError

ENTRY_ID = re.compile(r"[0-9a-f]{32}")
OBJECT_KEY = re.compile(r"chunk-\d{6}\.log|manifest\.json")
"""The only objects an archive writes below its prefix (provider/logs/archive.py)."""
RECORD_FIELDS = frozenset({"prefix", "key", "conn_id", "size", "sha256"})
MAX_RECORD_BYTES = 64 * 1024
MAX_OBJECT_BYTES = 1024 * 1024 * 1024
QUARANTINE = "quarantine"


class Reporter(Protocol):
    """Where a flush reports what it refused: the task log, or this module's logger."""

    def warning(self, __event: str, *args: Any) -> Any: ...

    def error(self, __event: str, *args: Any) -> Any: ...


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
    """Objects waiting for storage, in the directory ``root``; ``problems`` lists what flushes
    refused (each also reported to ``log``)."""

    def __init__(self, root: Path, log: Reporter | None = None) -> None:
        self.root = root
        self.log: Reporter = log or logging.getLogger(__name__)
        self.problems: list[str] = []

    def put(self, prefix: ObjectStoragePath, key: str, data: bytes) -> None:
        """Keep ``data`` for ``prefix / key``; on failure (a full disk) leave no partial entry behind."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry = self.root / uuid.uuid4().hex
        record = {"prefix": str(prefix), "key": key, "conn_id": prefix.conn_id, "size": len(data),
                  "sha256": hashlib.sha256(data).hexdigest()}
        write_whole(entry.with_suffix(".data"), data)
        try:
            write_whole(entry.with_suffix(".json"), json.dumps(record).encode())
        except OSError:
            entry.with_suffix(".data").unlink(missing_ok=True)
            raise

    def pending(self) -> int:
        return sum(1 for _ in self.root.glob("*.json")) if self.root.is_dir() else 0

    def flush(self) -> int:
        """Upload the spooled objects that pass the checks, oldest first; return how many went.
        Quarantines the others. Stops at the first failed upload and raises it, since storage is
        evidently still away."""
        if not os.path.lexists(self.root):
            return 0
        unsafe = unsafe_directory(self.root)
        if unsafe is not None:
            self._report(f"The log spool {self.root} is not uploaded: {unsafe}. Nothing in it is trusted until "
                         f"it is a directory of this worker's user closed to others (chown, chmod 700).")
            return 0
        done = 0
        for meta_path in self._entries():
            try:
                dest, data = checked_entry(meta_path)
            except FileNotFoundError:  # another process flushed it meanwhile
                continue
            except SpoolEntryError as bad:
                self._quarantine(meta_path, str(bad))
                continue
            write_object(dest, data)
            meta_path.unlink(missing_ok=True)
            meta_path.with_suffix(".data").unlink(missing_ok=True)
            done += 1
        return done

    def _entries(self) -> list[Path]:
        """The records to upload, oldest first; a file that is no part of an entry is quarantined
        (``.part`` files are writes in progress, a ``.data`` alone an entry being written)."""
        records: list[tuple[int, Path]] = []
        for item in os.scandir(self.root):
            stem, _, suffix = item.name.partition(".")
            if item.name == QUARANTINE or (ENTRY_ID.fullmatch(stem) and suffix in ("data", "data.part", "json.part")):
                continue
            path = Path(item.path)
            if ENTRY_ID.fullmatch(stem) and suffix == "json":
                try:
                    records.append((item.stat(follow_symlinks=False).st_mtime_ns, path))
                except FileNotFoundError:
                    continue
            else:
                self._quarantine(path, "not a spool entry (ID.json and ID.data, ID 32 hex digits)")
        return [path for _, path in sorted(records)]

    def _quarantine(self, path: Path, why: str) -> None:
        """Move ``path`` (and its ``.data``) to ``quarantine/`` with the reason; report it."""
        where = self.root / QUARANTINE
        try:
            where.mkdir(mode=0o700, exist_ok=True)
            for part in (path, path.with_suffix(".data")) if path.suffix == ".json" else (path,):
                if os.path.lexists(part):
                    os.replace(part, where / part.name)
            (where / f"{path.name}.reason").write_text(why + "\n")
        except OSError as exc:
            why = f"{why}; it could not be moved to {where} ({exc}) and stays in place"
        self._report(f"Log spool entry {path.name} was not uploaded and is quarantined in {where}: {why}. "
                     "Check who writes to the spool; a good entry can be moved back.")

    def _report(self, problem: str) -> None:
        self.problems.append(problem)
        self.log.warning("%s", problem)


def unsafe_directory(root: Path) -> str | None:
    """Why ``root`` cannot be trusted (a link, another user's, writable by others), or None."""
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return "it is a symbolic link or not a directory"
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to this worker's uid {os.geteuid()}"
    if st.st_mode & 0o022:
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def read_own_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of this user (no link followed) of at most ``limit``
    bytes; :class:`SpoolEntryError` says why not. FileNotFoundError when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise SpoolEntryError(f"{path.name} cannot be opened as a regular file ({exc.strerror}; a symbolic link?)") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SpoolEntryError(f"{path.name} is not a regular file")
        if st.st_uid != os.geteuid():
            raise SpoolEntryError(f"{path.name} belongs to uid {st.st_uid}, not to this worker's uid {os.geteuid()}")
        if st.st_size > limit:
            raise SpoolEntryError(f"{path.name} holds {st.st_size} bytes, more than {limit}")
        return f.read(limit + 1)


def checked_entry(meta_path: Path) -> tuple[ObjectStoragePath, bytes]:
    """The destination and bytes of one entry, after every check in the module's docstring."""
    try:
        record = json.loads(read_own_file(meta_path, MAX_RECORD_BYTES))
    except ValueError as exc:
        raise SpoolEntryError(f"its record is not JSON ({exc})") from exc
    if not isinstance(record, dict) or set(record) != RECORD_FIELDS:
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise SpoolEntryError(f"its record must have exactly the fields {sorted(RECORD_FIELDS)}, has {found}")
    prefix, key, conn_id, size, digest = (record[k] for k in ("prefix", "key", "conn_id", "size", "sha256"))
    if not isinstance(prefix, str) or "://" not in prefix or any(
            part in (".", "..") for part in prefix.split("://", 1)[1].split("/")):
        raise SpoolEntryError(f"prefix {prefix!r} is not an archive URL without . or .. segments")
    if not isinstance(key, str) or not OBJECT_KEY.fullmatch(key):
        raise SpoolEntryError(f"key {key!r} is not an archive object (chunk-NNNNNN.log or manifest.json)")
    if conn_id is not None and not isinstance(conn_id, str):
        raise SpoolEntryError(f"conn_id {conn_id!r} is not a connection id")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_OBJECT_BYTES:
        raise SpoolEntryError(f"size {size!r} is not a byte count from 0 to {MAX_OBJECT_BYTES}")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise SpoolEntryError(f"sha256 {digest!r} is not 64 lowercase hex digits")
    try:
        data = read_own_file(meta_path.with_suffix(".data"), size)
    except FileNotFoundError:
        if not os.path.lexists(meta_path):
            raise  # flushed by another process between our two reads
        raise SpoolEntryError("its .data file is missing") from None
    if len(data) != size:
        raise SpoolEntryError(f"its data holds {len(data)}{'+' if len(data) > size else ''} bytes, its record says {size}")
    if hashlib.sha256(data).hexdigest() != digest:
        raise SpoolEntryError("its data does not match the sha256 of its record")
    try:
        dest = ObjectStoragePath(prefix, conn_id=conn_id) / key
    except Exception as exc:  # noqa: BLE001 - any failure to name the destination refuses the entry
        raise SpoolEntryError(f"its destination {prefix}/{key} cannot be opened ({exc})") from exc
    return dest, data
