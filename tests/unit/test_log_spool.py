"""The log spool trusts no entry when it flushes: each attack below is quarantined and reported,
never uploaded and never fatal to the flush, while the good entries beside it still go.

The flush writes with the worker's storage credentials; an entry planted or altered in the
spool directory would otherwise have it write chosen bytes at a chosen place (``file://``
included: anywhere the worker may write).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from provider.logs.spool import QUARANTINE, Spool

GOOD = b"2026-01-02T03:04:05Z stdout epoch 1\n"
ID_BAD = "a" * 32
ID_GOOD = "b" * 32


def record(prefix: str, **change: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"prefix": prefix, "key": "chunk-000001.log", "conn_id": None, "size": len(GOOD),
                           "sha256": hashlib.sha256(GOOD).hexdigest()}
    doc.update(change)
    return {k: v for k, v in doc.items() if v is not DROP}


DROP = object()


def plant(root: Path, entry_id: str, meta: Any, data: bytes = GOOD) -> None:
    """An entry written by someone else than the spool: raw files, any content."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / f"{entry_id}.data").write_bytes(data)
    (root / f"{entry_id}.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    os.utime(root / f"{entry_id}.json", ns=(1, 1))  # older than any good entry: flushed first


def good_entry(spool: Spool, store: Path) -> Path:
    spool.put(ObjectStoragePath(f"file://{store}/run"), "chunk-000002.log", GOOD)
    return store / "run" / "chunk-000002.log"


def escape(tmp: Path) -> dict[str, Any]:
    return record(f"file://{tmp}/store/run", key="../../../victim/chunk-000001.log")


CASES: list[Any] = [
    pytest.param(escape, GOOD, "is not an archive object", id="key-escapes-its-prefix"),
    pytest.param(lambda t: record(f"file://{t}/store/run", key="authorized_keys"), GOOD, "is not an archive object", id="key-not-an-archive-object"),
    pytest.param(lambda t: record(f"file://{t}/store/run/../../victim"), GOOD, "without . or .. segments", id="prefix-with-dot-dot"),
    pytest.param(lambda t: record(f"file://{t}/store/run"), GOOD.upper(), "does not match the sha256", id="data-altered-same-size"),
    pytest.param(lambda t: record(f"file://{t}/store/run"), GOOD + b"more", "more than", id="data-longer-than-record"),
    pytest.param(lambda t: record(f"file://{t}/store/run"), GOOD[:5], "holds 5 bytes, its record says", id="data-truncated"),
    pytest.param(lambda t: record(f"file://{t}/store/run", size=float("nan")), GOOD, "size nan", id="size-nan"),
    pytest.param(lambda t: record(f"file://{t}/store/run", size=-1), GOOD, "size -1", id="size-negative"),
    pytest.param(lambda t: record(f"file://{t}/store/run", size=True), GOOD, "size True", id="size-bool"),
    pytest.param(lambda t: record(f"file://{t}/store/run", size=10**30), GOOD, "is not a byte count", id="size-huge"),
    pytest.param(lambda t: record(f"file://{t}/store/run", sha256="0" * 63), GOOD, "64 lowercase hex", id="sha-bad"),
    pytest.param(lambda t: record(f"file://{t}/store/run", conn_id=7), GOOD, "conn_id 7", id="conn-id-number"),
    pytest.param(lambda t: record(f"file://{t}/store/run", extra="x"), GOOD, "exactly the fields", id="unknown-field"),
    pytest.param(lambda t: record(f"file://{t}/store/run", sha256=DROP), GOOD, "exactly the fields", id="missing-field"),
    pytest.param(lambda t: {"url": f"file://{t}/victim/chunk-000001.log", "conn_id": None}, GOOD, "exactly the fields",
                 id="record-of-an-earlier-version-unchecked"),
    pytest.param(lambda t: "{not json", GOOD, "not JSON", id="not-json"),
    pytest.param(lambda t: [1, 2], GOOD, "has list", id="not-an-object"),
    pytest.param(lambda t: record("/no/scheme/run"), GOOD, "not an archive URL", id="prefix-not-a-url"),
]


@pytest.mark.parametrize(("meta", "data", "why"), CASES)
def test_a_bad_entry_is_quarantined_and_the_good_one_still_uploads(
    tmp_path: Path, meta: Callable[[Path], Any], data: bytes, why: str
) -> None:
    root = tmp_path / "spool"
    plant(root, ID_BAD, meta(tmp_path), data)
    spool = Spool(root)
    uploaded = good_entry(spool, tmp_path / "store")
    assert spool.flush() == 1
    assert uploaded.read_bytes() == GOOD
    assert not (tmp_path / "victim").exists() and not (tmp_path / "store/run/chunk-000001.log").exists()
    assert sorted(p.name for p in (root / QUARANTINE).iterdir()) == [
        f"{ID_BAD}.data", f"{ID_BAD}.json", f"{ID_BAD}.json.reason"]
    assert why in (root / QUARANTINE / f"{ID_BAD}.json.reason").read_text()
    assert len(spool.problems) == 1 and why in spool.problems[0] and ID_BAD in spool.problems[0]
    assert spool.pending() == 0
    assert Spool(root).flush() == 0  # quarantined stays quarantined: not retried, not reported again


@pytest.mark.parametrize("which", ["data", "json"])
def test_a_symbolic_link_in_an_entry_is_never_followed(tmp_path: Path, which: str) -> None:
    """The attack: ``ID.data`` links to a secret of the worker (here a stand-in file), so the
    flush would copy it into the archive store where others read it."""
    secret = tmp_path / "secret"
    secret.write_bytes(GOOD)  # same bytes as the record claims: only the link gives it away
    root = tmp_path / "spool"
    plant(root, ID_BAD, record(f"file://{tmp_path}/store/run"))
    (root / f"{ID_BAD}.{which}").unlink()
    if which == "json":
        secret.write_text(json.dumps(record(f"file://{tmp_path}/store/run")))
    (root / f"{ID_BAD}.{which}").symlink_to(secret)
    spool = Spool(root)
    assert spool.flush() == 0
    assert not (tmp_path / "store").exists()
    assert "symbolic link" in spool.problems[0]
    assert (root / QUARANTINE / f"{ID_BAD}.{which}").is_symlink() and secret.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_entry_of_another_user_is_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    plant(root, ID_BAD, record(f"file://{tmp_path}/store/run"))
    os.chown(root / f"{ID_BAD}.data", 4242, 4242)
    spool = Spool(root)
    assert spool.flush() == 0 and "belongs to uid 4242" in spool.problems[0]


def test_files_that_are_no_entry_are_quarantined_and_writes_in_progress_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    root.mkdir(mode=0o700)
    (root / "payload.sh").write_text("#!/bin/sh\n")
    (root / f"{ID_GOOD}.data").write_bytes(GOOD)  # its record is not written yet
    (root / f"{ID_GOOD}.json.part").write_bytes(b"{")  # the record being written
    spool = Spool(root)
    assert spool.flush() == 0
    assert sorted(p.name for p in root.iterdir()) == [f"{ID_GOOD}.data", f"{ID_GOOD}.json.part", QUARANTINE]
    assert (root / QUARANTINE / "payload.sh").exists() and "not a spool entry" in spool.problems[0]


@pytest.mark.parametrize("unsafe", ["group-writable", "symlink"])
def test_a_spool_directory_others_may_write_is_not_uploaded(tmp_path: Path, unsafe: str) -> None:
    """The attack: another local user drops entries into a spool directory they may write."""
    real = tmp_path / "spool"
    spool = Spool(real)
    good_entry(spool, tmp_path / "store")
    if unsafe == "group-writable":
        real.chmod(0o770)
        root = real
    else:
        root = tmp_path / "link"
        root.symlink_to(real)
    spool = Spool(root)
    assert spool.flush() == 0
    assert not (tmp_path / "store").exists() and spool.pending() == 1
    assert "is not uploaded" in spool.problems[0] and ("writable by group" in spool.problems[0]
                                                       or "symbolic link" in spool.problems[0])


def test_the_spool_is_made_closed_to_others(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    good_entry(spool, tmp_path / "store")
    assert (tmp_path / "spool").stat().st_mode & 0o077 == 0
    assert spool.flush() == 1 and spool.problems == []


NASTY: list[Any] = [None, True, -1, 0, 2**70, float("nan"), float("inf"), "", "..", "../x", "/etc/passwd",
                    "chunk-000001.log", "manifest.json", "chunk-1.log", "s3:/b", [], {}, "0" * 64, "é" * 10, "a\x00b"]
BAD_PREFIXES: list[Any] = [None, 0, [], "", "..", "/etc", "no-scheme/run", "file:///tmp/../etc", "file://./x"]
"""Prefixes the checks must refuse (a valid one elsewhere would have the fuzz write outside its
directory, which the table above covers with its own cases)."""


def whole(meta: dict[str, Any], data: bytes) -> bool:
    """The rules of docs/security/secrets.md, as a reader of that page would apply them."""
    if set(meta) != {"prefix", "key", "conn_id", "size", "sha256"}:
        return False
    size = meta["size"]
    return (meta["key"] in ("chunk-000001.log", "manifest.json") and (meta["conn_id"] is None or isinstance(meta["conn_id"], str))
            and type(size) is int and size == len(data) and meta["sha256"] == hashlib.sha256(data).hexdigest()
            and meta["prefix"] not in BAD_PREFIXES)


def test_fuzz_spool_records_upload_only_when_whole_and_never_break_the_flush(tmp_path: Path) -> None:
    """Seeded: records with fields dropped, added or replaced by hostile values, and data cut or
    changed. Each entry is either uploaded below its own prefix (only a whole one) or quarantined
    with a reason; the flush never raises."""
    import random
    import time

    rng = random.Random(26)
    tried = uploaded = 0
    started = time.monotonic()
    while tried < 400 and time.monotonic() - started < 20:
        case = tmp_path / f"case{tried}"
        prefix = f"file://{case}/store/run"
        meta: dict[str, Any] = record(prefix)
        data = GOOD
        for _ in range(rng.randint(0, 3)):
            action = rng.choice(["replace", "prefix", "drop", "add", "cut", "flip"])
            field = rng.choice(sorted(set(meta) - {"prefix"}) or ["key"])
            if action == "replace":
                meta[field] = rng.choice(NASTY)
            elif action == "prefix":
                meta["prefix"] = rng.choice(BAD_PREFIXES)
            elif action == "drop":
                meta.pop(rng.choice(sorted(meta) or ["key"]), None)
            elif action == "add":
                meta[rng.choice(["url", "mode", "x"])] = rng.choice(NASTY)
            elif action == "cut":
                data = data[: rng.randint(0, len(data))]
            else:
                data = bytes([data[0] ^ 1]) + data[1:] if data else b"x"
        root = case / "spool"
        plant(root, ID_BAD, json.dumps(meta), data)
        spool = Spool(root)
        sent = spool.flush()
        if whole(meta, data):
            assert sent == 1 and (case / "store/run" / meta["key"]).read_bytes() == data, meta
            uploaded += 1
        else:
            assert sent == 0 and (root / QUARANTINE / f"{ID_BAD}.json.reason").exists(), meta
            assert not (case / "store").exists() and len(spool.problems) == 1
        tried += 1
    print(f"spool records tried: {tried}, {uploaded} whole and uploaded, {tried - uploaded} quarantined")
    assert tried >= 100 and 0 < uploaded < tried
