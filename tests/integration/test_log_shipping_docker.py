"""Log shipping against real Docker engines and real storage: completeness, order, checksums,
dropped streams, storage outages. Each test's archive lives under its own AIRFLOW_HOME."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from provider.operators.gpu_docker import GpuDockerOperator
from provider.operators.links import ContainerLogLink
from provider.errors import ContainerFailed
from tests.conftest import FakeTI, TaskLog, eventually, run_task
from tests.integration.conftest import define_host, sh
from tools.dockerd import TESTBOX_IMAGE, PrivateDockerd

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("it_host")]


def op_for(host: str = "it_host", **kwargs: Any) -> GpuDockerOperator:
    kwargs.setdefault("image", TESTBOX_IMAGE)
    kwargs.setdefault("pull", "never")
    return GpuDockerOperator(task_id="train", host=host, **kwargs)


def archive_dir(out_or_url: dict[str, Any] | str) -> Path:
    url = out_or_url if isinstance(out_or_url, str) else out_or_url["log_archive"]
    assert url.startswith("file://"), url
    return Path(url[len("file://") :])


def records(base: Path) -> Iterator[tuple[str, str, bool, bytes]]:
    """(ts, stream, continued, text) of every archive record, in order, one at a time."""
    for chunk in sorted(base.glob("chunk-*.log")):
        with open(chunk, "rb") as f:
            for raw in f:
                ts, tag, text = raw[:-1].split(b" ", 2) if raw.count(b" ") >= 2 else (*raw[:-1].split(b" "), b"")
                yield ts.decode(), tag.rstrip(b"+").decode(), tag.endswith(b"+"), text


def joined(base: Path, stream: str) -> Iterator[bytes]:
    """The stream's lines with split pieces joined, one at a time."""
    piece = bytearray()
    for _, name, continued, text in records(base):
        if name == stream:
            piece += text
            if not continued:
                yield bytes(piece)
                piece.clear()


class CountingLog:
    """Counts task-log events per stream without keeping them, checking `seq` order on the fly."""

    def __init__(self) -> None:
        self.counts = {"stdout": 0, "stderr": 0}
        self.next_number = 1
        self.in_order = True
        self.other: list[str] = []

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> Any:
        text = str(event.get("event"))
        stream = event.get("stream", "stdout")
        if text.isdigit() and stream == "stdout":
            self.in_order &= int(text) == self.next_number
            self.next_number += 1
            self.counts[stream] += 1
        elif len(self.other) < 100:
            self.other.append(text)
        raise structlog.DropEvent


@pytest.fixture
def counting_log() -> Iterator[CountingLog]:
    counter = CountingLog()
    old = structlog.get_config()
    structlog.configure(processors=[counter])
    try:
        yield counter
    finally:
        structlog.configure(**old)


def test_a_million_lines_archived_exactly_and_logged(counting_log: CountingLog, ti: FakeTI) -> None:
    n = 1_000_000
    out = run_task(op_for(command=sh(f"seq 1 {n}")), ti)
    expected = hashlib.sha256()
    for i in range(1, n + 1):
        expected.update(b"%d\n" % i)
    base = archive_dir(out)
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["sha256"] == expected.hexdigest() == out["log_sha256"]
    assert manifest["lines"] == n and manifest["exit_code"] == 0 and manifest["streams"]["stderr"]["lines"] == 0
    count = 0
    for count, text in enumerate(joined(base, "stdout"), 1):
        assert text == b"%d" % count
    assert count == n
    assert counting_log.counts["stdout"] == n and counting_log.in_order
    assert out["log_lines"] == n and out["log_manifest"] == f"{out['log_archive']}/manifest.json"


def test_streams_keep_their_own_order(task_log: TaskLog, ti: FakeTI) -> None:
    out = run_task(op_for(command=sh("i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo o$i; echo e$i >&2; done")), ti)
    base = archive_dir(out)
    assert list(joined(base, "stdout")) == [b"o%d" % i for i in range(1, 2001)]
    assert list(joined(base, "stderr")) == [b"e%d" % i for i in range(1, 2001)]
    assert task_log.texts("stderr") == [f"e{i}" for i in range(1, 2001)]
    assert [t for t in task_log.texts("stdout") if t.startswith("o")] == [f"o{i}" for i in range(1, 2001)]
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["streams"]["stderr"]["sha256"] == hashlib.sha256(
        b"".join(b"e%d\n" % i for i in range(1, 2001))
    ).hexdigest()


def test_a_10_mb_line_is_split_in_the_task_log_and_exact_in_the_archive(task_log: TaskLog, ti: FakeTI) -> None:
    size = 10_000_000
    out = run_task(op_for(command=sh(f"head -c {size} /dev/zero | tr '\\0' x; echo; echo end")), ti)
    assert list(joined(archive_dir(out), "stdout")) == [b"x" * size, b"end"]
    pieces = [t for t in task_log.texts("stdout") if t.startswith("x")]
    assert all(p.endswith(" [continued]") for p in pieces[:-1]) and not pieces[-1].endswith("]")
    assert sum(len(p.removesuffix(" [continued]")) for p in pieces) == size
    manifest = json.loads((archive_dir(out) / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(b"x" * size + b"\nend\n").hexdigest()


def test_binary_garbage_is_archived_and_logged_without_failing(task_log: TaskLog, ti: FakeTI) -> None:
    out = run_task(op_for(command=sh("head -c 100000 /dev/urandom; echo; echo done")), ti)
    base = archive_dir(out)
    manifest = json.loads((base / "manifest.json").read_text())
    lines = list(joined(base, "stdout"))
    assert lines[-1] == b"done" and manifest["lines"] == len(lines) == out["log_lines"]
    assert sum(1 for _ in records(base)) == manifest["records"]
    assert "done" in task_log.texts("stdout")


def test_a_silence_over_a_minute_keeps_following_and_archives_what_came_before(task_log: TaskLog, ti: FakeTI) -> None:
    """Longer than the 60 s read timeouts HTTP clients commonly default to (docker-py's among
    them): the stream stays open, and the archive gets what came before the silence meanwhile."""
    op = op_for(command=sh("echo before; sleep 65; echo after"), log_chunk_s=1)
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(run_task(op, ti)))
    worker.start()
    task_log.wait_for("before", timeout=30)

    def archived_so_far() -> list[bytes]:
        return [] if op.log_archive_url is None else list(joined(archive_dir(op.log_archive_url), "stdout"))

    # Well within the silence: the idle ticker writes the chunk after log_chunk_s.
    during = eventually(archived_so_far, 30, what="the archive of what came before the silence")
    worker.join(150)
    assert during == [b"before"]  # written by the idle ticker while the container was silent
    assert list(joined(archive_dir(outcome), "stdout")) == [b"before", b"after"]
    assert [t for t in task_log.texts() if t in ("before", "after")] == ["before", "after"]


def test_live_rate_elides_lines_but_the_archive_keeps_all(task_log: TaskLog, ti: FakeTI) -> None:
    op = op_for(command=sh("seq 1 20000"), log_live_rate=5)
    assert ContainerLogLink().get_link(op, ti_key=None) == ""
    out = run_task(op, ti)
    shown = [t for t in task_log.texts() if t.isdigit()]
    notes = [t for t in task_log.texts() if "lines not shown here" in t]
    elided = sum(int(n.split()[0]) for n in notes)
    assert len(shown) + elided == 20000 and out["log_lines_elided"] == elided > 0
    assert out["log_archive"] in notes[-1]
    assert list(joined(archive_dir(out), "stdout")) == [b"%d" % i for i in range(1, 20001)]
    assert ContainerLogLink().get_link(op, ti_key=None) == out["log_archive"]


def run_through_restart(
    engine: PrivateDockerd, monkeypatch: pytest.MonkeyPatch, task_log: TaskLog, ti: FakeTI, script: str
) -> tuple[GpuDockerOperator, dict[str, Any], list[BaseException]]:
    """Run ``script`` on ``engine``, restart the engine once line 300 is logged, wait for the end."""
    engine.load(TESTBOX_IMAGE)
    define_host(monkeypatch, "rs_host", engine.url)
    op = op_for(host="rs_host", command=sh(script))
    out: dict[str, Any] = {}
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.update(run_task(op, ti))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
            errors.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    task_log.wait_for("line 300", timeout=60)
    engine.restart()
    worker.join(120)
    assert not worker.is_alive()
    return op, out, errors


def archived_once(url: str | None) -> tuple[list[bytes], dict[str, Any]]:
    """The archived stdout (checked to be ``line 1..N`` with no gap or repeat) and the manifest."""
    assert url is not None
    base = archive_dir(url)
    lines = list(joined(base, "stdout"))
    assert lines == [b"line %d" % i for i in range(1, len(lines) + 1)]
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["lines"] == len(lines)
    return lines, manifest


def test_engine_restart_kills_the_container_what_it_printed_is_archived_once(
    monkeypatch: pytest.MonkeyPatch, task_log: TaskLog, ti: FakeTI
) -> None:
    script = "trap 'exit 143' TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.005; done"
    with PrivateDockerd("rs") as engine:
        op, _, errors = run_through_restart(engine, monkeypatch, task_log, ti, script)
    assert len(errors) == 1 and isinstance(errors[0], ContainerFailed), errors
    assert "exited with code 143" in str(errors[0])  # the engine's SIGTERM on shutdown
    assert "which restarted while the container ran" in str(errors[0]) and "live-restore" in str(errors[0])
    lines, manifest = archived_once(op.log_archive_url)
    assert len(lines) >= 300 and manifest["exit_code"] == 143
    assert str(errors[0]).rstrip().endswith(lines[-1].decode())


def test_stream_dropped_by_a_restart_resumes_without_loss_or_duplicates(
    monkeypatch: pytest.MonkeyPatch, task_log: TaskLog, ti: FakeTI
) -> None:
    script = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo line $i; sleep 0.002; done"
    with PrivateDockerd("lr", live_restore=True) as engine:
        _, out, errors = run_through_restart(engine, monkeypatch, task_log, ti, script)
    assert errors == [] and out["exit_code"] == 0 and out["log_stream_resumes"] >= 1
    lines, manifest = archived_once(out["log_archive"])
    assert len(lines) == 3000 and manifest["resumed_bytes_skipped"] >= 1
    assert [t for t in task_log.texts() if t.startswith("line ")] == [f"line {i}" for i in range(1, 3001)]
    assert any("log stream dropped" in t for t in task_log.texts())



@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """AIRFLOW_HOME on a 1 MiB tmpfs of its own: the archive and the spool share a disk that
    fills up during the run, as on a worker whose only disk is full."""
    home = tmp_path / "small-disk"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(home)], check=True)
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    try:
        yield home
    finally:
        subprocess.run(["umount", str(home)], check=True)


def test_a_full_disk_costs_the_archive_chunks_not_the_task(full_disk: Path, task_log: TaskLog, ti: FakeTI) -> None:
    op = op_for(command=sh("seq 1 100000"), log_chunk_bytes=64 * 1024)
    out = run_task(op, ti)
    assert out["exit_code"] == 0 and out["log_archive_complete"] is False
    assert [t for t in task_log.texts("stdout") if t.isdigit()] == [str(i) for i in range(1, 100001)]
    expected = hashlib.sha256(b"".join(b"%d\n" % i for i in range(1, 100001))).hexdigest()
    assert out["log_sha256"] == expected  # computed on the way, whatever storage kept
    errors = [t for t in task_log.texts() if "could be neither stored nor spooled" in t]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Free space there" in errors[0]
    incomplete = [t for t in task_log.texts() if "INCOMPLETE" in t]
    assert incomplete and expected in incomplete[0]
    # The chunks that fitted are on the disk: chunk 1 up to the first that did not fit (named
    # in the task log), then any later one that fitted again (the small last one, say). Each
    # holds whole lines, consecutive, continuing where the previous kept chunk left off when no
    # chunk is missing between them.
    base = archive_dir(out)
    numbers = [int(p.stem.split("-")[1]) for p in sorted(base.glob("chunk-*.log"))]
    first_lost = next(n for n in range(1, len(numbers) + 2) if n not in numbers)
    assert first_lost > 1 and f"chunk-{first_lost:06d}.log" in errors[0]
    previous: tuple[int, int] | None = None  # (chunk number, its last line)
    for number in numbers:
        lines = [int(raw.split(b" ", 2)[2]) for raw in (base / f"chunk-{number:06d}.log").read_bytes().splitlines()]
        assert lines == list(range(lines[0], lines[0] + len(lines)))
        if previous is None:
            assert lines[0] == 1
        elif previous[0] == number - 1:
            assert lines[0] == previous[1] + 1
        previous = (number, lines[-1])
    assert not list(base.glob("*.part"))
    spool = full_disk / "container_logs_spool"
    entries = sorted(spool.iterdir()) if spool.exists() else []
    assert all(p.suffix in (".data", ".json") for p in entries), entries
    assert {p.stem for p in entries if p.suffix == ".data"} == {p.stem for p in entries if p.suffix == ".json"}
