"""The complete container output in object storage: chunks while it runs, a manifest at the end.

Layout under the archive prefix (any ``ObjectStoragePath``: ``file://``, ``s3://conn@bucket/…``)::

    chunk-000001.log  chunk-000002.log  …  manifest.json

A chunk is written every ``chunk_s`` seconds or ``chunk_bytes`` bytes, whichever comes first,
so a worker that dies loses at most the lines of one unwritten chunk. A pulled pipeline only
runs when a line arrives, so while the container is silent a small ticker thread writes what
is buffered once it is due (a lock guards the buffer; it is uncontended almost always). Each record is one line::

    2026-01-02T03:04:05.123456789Z stdout epoch 1
    2026-01-02T03:04:05.123456790Z stderr+ first 64 KiB of a longer line…

``ts`` is the time the line arrived from the engine, then the stream; a ``+`` after the stream
means the line was longer than the split limit and continues in the next record of the same
stream (join the texts without a newline). Text is the container's output decoded as UTF-8 (invalid bytes become
U+FFFD), without the newline.

The manifest's ``sha256`` per stream is the hash of that stream's lines, each joined from its
pieces and followed by ``\\n``, in order. For stdout this equals the hash of the container's own
stdout when that is valid UTF-8 ending in a newline (``seq 1 N``), which lets anyone check the
archive against the program that printed it; a hash over both streams together would depend on
how the engine interleaved them, which nobody can reproduce.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow.sdk import ObjectStoragePath

from provider.logs.lines import LineBatch
from provider.logs.spool import Spool, write_object
from provider.logs.task_log import LineLogger

DEFAULT_CHUNK_S = 5.0
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_RETRY_S = 10.0
MANIFEST_NAME = "manifest.json"
MAX_GPU_SAMPLES = 720  # one an interval: an hour of samples at the default chunk interval


class StreamDigest:
    """Line count, content bytes and sha256 of one stream, as defined in the module doc."""

    __slots__ = ("lines", "bytes", "_sha")

    def __init__(self) -> None:
        self.lines = 0
        self.bytes = 0
        self._sha = hashlib.sha256()

    def add(self, text: bytes, lines: int, continued: bool) -> None:
        """``text``: ``lines`` lines joined by newlines, the last followed by one unless
        ``continued`` (a piece of a longer line, whose rest comes next)."""
        if not continued:
            text += b"\n"
            self.lines += lines
        self._sha.update(text)
        self.bytes += len(text)

    def summary(self) -> dict[str, Any]:
        return {"lines": self.lines, "bytes": self.bytes, "sha256": self._sha.hexdigest()}


def encode_records(batch: LineBatch, body: bytes) -> bytes:
    """The archive records of ``batch``, whose texts joined by newlines encode as ``body``."""
    prefix = b"".join((batch.ts.encode("ascii"), b" ", batch.stream.encode("ascii"), b"+ " if batch.continued else b" "))
    return prefix + body.replace(b"\n", b"\n" + prefix) + b"\n"


class ChunkedArchive:
    """Writes records in chunks to ``base``; spools what storage refuses; writes the manifest.

    :param base: the archive prefix of this task attempt.
    :param spool: where refused objects wait (shared by the tasks of one worker).
    :param log: the task log, told when storage fails and when it answers again.
    :param gpu_samples: called once per chunk; what it returns (a mapping, or None to skip)
        goes into the manifest's ``gpu_samples`` (the last ``MAX_GPU_SAMPLES``).
    :param clock: monotonic seconds, for the chunk interval and the retry interval.
    """

    def __init__(
        self,
        base: ObjectStoragePath,
        spool: Spool,
        log: LineLogger,
        chunk_s: float = DEFAULT_CHUNK_S,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        retry_s: float = DEFAULT_RETRY_S,
        gpu_samples: Callable[[], Mapping[str, Any] | None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if chunk_s <= 0 or chunk_bytes <= 0:
            raise ValueError(f"log chunks need chunk_s > 0 and chunk_bytes > 0, got {chunk_s}, {chunk_bytes}")
        self.base = base
        self.spool = spool
        self.log = log
        self.chunk_s = chunk_s
        self.chunk_bytes = chunk_bytes
        self.retry_s = retry_s
        self.gpu_samples = gpu_samples
        self.clock = clock or time.monotonic
        self.streams = {"stdout": StreamDigest(), "stderr": StreamDigest()}
        self.samples: deque[Mapping[str, Any]] = deque(maxlen=MAX_GPU_SAMPLES)
        self.first_ts = ""
        self.last_ts = ""
        self.records = 0
        self.bytes = 0
        self.chunks = 0
        self.spooled = 0
        self.lost: list[str] = []  # objects neither storage nor the spool took (both disks full)
        self.lost_bytes = 0
        self._buf = bytearray()
        self._due = self.clock() + chunk_s
        self._retry_at: float | None = None  # set while storage is failing
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="log-archive-ticker", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(min(self.chunk_s, 1.0)):
            with self._lock:
                if self._buf and self.clock() >= self._due:
                    self.flush()

    @property
    def url(self) -> str:
        return str(self.base)

    def add(self, batch: LineBatch) -> None:
        body = "\n".join(batch.texts).encode("utf-8")
        records = encode_records(batch, body)
        with self._lock:
            self.streams[batch.stream].add(body, len(batch.texts), batch.continued)
            self._buf += records
            self.records += len(batch.texts)
            self.bytes += len(records)
            if not self.first_ts:
                self.first_ts = batch.ts
            self.last_ts = batch.ts
            if len(self._buf) >= self.chunk_bytes or self.clock() >= self._due:
                self.flush()

    def carry_on(self) -> dict[str, int]:
        """Continue an archive an earlier try of the task began (it adopted that try's container):
        take its chunks as this archive's first ones, so the digests, counts and chunk numbers go
        on from them. Returns the content bytes archived per stream, which following the
        container's log then skips; call before any :meth:`add`."""
        chunks = sorted(p for p in self.base.iterdir() if p.name.startswith("chunk-")) if self.base.exists() else []
        for chunk in chunks:
            self.chunks += 1
            for record in chunk.read_bytes().splitlines():
                ts, stream, text = (record.split(b" ", 2) + [b""])[:3]
                self.streams[stream.rstrip(b"+").decode()].add(text, 1, stream.endswith(b"+"))
                self.records += 1
                self.bytes += len(record) + 1
                self.first_ts = self.first_ts or ts.decode()
                self.last_ts = ts.decode()
        return {name: d.bytes for name, d in self.streams.items()}

    def drain(self, batches: Iterable[LineBatch]) -> Iterable[LineBatch]:
        """Archive each batch as it passes: a stage in the pulled pipeline."""
        for batch in batches:
            self.add(batch)
            yield batch

    def flush(self) -> None:
        """Write the buffered records as the next chunk (or spool them) and sample the GPUs.

        Called with the lock held (or after the ticker stopped)."""
        self._due = self.clock() + self.chunk_s
        if self.gpu_samples is not None:
            sample = self.gpu_samples()
            if sample is not None:
                self.samples.append(sample)
        if not self._buf:
            return
        self.chunks += 1
        data = bytes(self._buf)
        self._buf.clear()
        self._put(self.base / f"chunk-{self.chunks:06d}.log", data)

    def hand_over(self) -> None:
        """Write what is buffered as a chunk, and no manifest: the container goes on, and the
        try that adopts it continues this archive after the last chunk (:meth:`carry_on`)."""
        self._stop.set()
        self._ticker.join()
        self.flush()
        if self._retry_at is not None:
            self._retry(force=True)

    def finish(self, **facts: Any) -> dict[str, Any]:
        """Write the last chunk and the manifest (with ``facts``: exit code, host, GPUs, …)."""
        self._stop.set()
        self._ticker.join()
        self.flush()
        manifest = {
            "format": "ts stream[+] text (see provider.logs.archive)",
            "lines": sum(d.lines for d in self.streams.values()),
            "records": self.records,
            "bytes": self.bytes,
            "streams": {name: d.summary() for name, d in self.streams.items()},
            "sha256": self.streams["stdout"].summary()["sha256"],
            "sha256_of": "stdout lines, each followed by \\n",
            "first_ts": self.first_ts or None,
            "last_ts": self.last_ts or None,
            "chunks": self.chunks,
            "chunks_lost": list(self.lost),
            "gpu_samples": list(self.samples),
            **facts,
        }
        self._put(self.base / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
        if self._retry_at is not None:
            self._retry(force=True)
        return manifest

    def _put(self, dest: ObjectStoragePath, data: bytes) -> None:
        if self._retry_at is not None and not self._retry():
            self._spool(dest, data)
            return
        try:
            write_object(dest, data)
        except Exception as exc:  # noqa: BLE001 - any storage failure: spool, never fail the task
            self._retry_at = self.clock() + self.retry_s
            self.log.warning(
                "Log archive storage %s failed (%s: %s); spooling to %s and retrying every %.0f s. "
                "The task goes on.",
                self.base, type(exc).__name__, exc, self.spool.root, self.retry_s,
            )
            self._spool(dest, data)

    def _spool(self, dest: ObjectStoragePath, data: bytes) -> None:
        """Keep what storage refused; when the spool's disk refuses as well (full), give the
        object up rather than the task: its lines are in the task log, the loss is named there,
        in the manifest and in the XCom."""
        try:
            self.spool.put(self.base, dest.name, data)
        except OSError as exc:
            if not self.lost:
                self.log.error(
                    "Log archive: %s could be neither stored nor spooled to %s (%s). The archive of "
                    "this task is incomplete from here on; the task log still has the lines it shows. "
                    "Free space there (or set log_archive to storage with room) for the next tasks.",
                    dest, self.spool.root, exc,
                )
            self.lost.append(dest.name)
            self.lost_bytes += len(data)
            return
        self.spooled += 1

    def _retry(self, force: bool = False) -> bool:
        """Try to empty the spool (when due, or ``force``); True when storage answers again."""
        assert self._retry_at is not None
        if not force and self.clock() < self._retry_at:
            return False
        try:
            sent = self.spool.flush()
        except Exception as exc:  # noqa: BLE001 - still away
            self._retry_at = self.clock() + self.retry_s
            if force:
                self.log.warning(
                    "Log archive storage %s still fails (%s); %d objects stay spooled in %s and are "
                    "uploaded by the next task on this worker.",
                    self.base, exc, self.spool.pending(), self.spool.root,
                )
            return False
        self._retry_at = None
        self.log.info("Log archive storage %s answers again: uploaded %d spooled objects.", self.base, sent)
        return True
