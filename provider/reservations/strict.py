"""Strict readers of the labels on reservation containers: every value checked before use.

Anyone who can create a container on an engine can write any label, and a value such as
``nan``, ``inf``, ``-5`` or ``1e308`` read with a bare ``float()`` would make a claim never
stale, a hold never lapse or a GPU look free. Each reader here returns a value in its range or
raises :class:`~provider.errors.LabelError` naming the label and the cause; what a reader of a
claim, a hold or a place in line then does with such a container is the rule of
:mod:`provider.reservations.rules` (docs/security/labels.md says it per label).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from provider.errors import LabelError

MAX_TIME_S = 2.0**33
"""Unix seconds after the year 2242: no engine's clock or waiter's start is ever later."""
MAX_LEASE_S = 366 * 86400.0
"""The longest a hold, place in line or problem marker may last: a year (a task's wait timeout)."""
MAX_GPU_INDEX = 1023
MAX_CPU_MILLI = 10**9
MAX_MEMORY_MB = 2**40
MAX_PRIORITY = 2**31
_INTEGER = re.compile(r"-?[0-9]{1,19}")


def integer(labels: Mapping[str, str], key: str, low: int, high: int) -> int:
    """The decimal integer under ``key``, in ``low..high``."""
    text = _text(labels, key)
    if not _INTEGER.fullmatch(text):
        raise LabelError(f"label {key}={text!r} is not a decimal integer")
    value = int(text)
    if not low <= value <= high:
        raise LabelError(f"label {key}={value} is outside {low}..{high}")
    return value


def number(labels: Mapping[str, str], key: str, low: float, high: float) -> float:
    """The finite number under ``key``, in ``low..high`` (``nan`` and ``inf`` are refused)."""
    text = _text(labels, key)
    try:
        value = float(text)
    except ValueError:
        raise LabelError(f"label {key}={text!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise LabelError(f"label {key}={text!r} is not a finite number in {low:g}..{high:g}")
    return value


def gpu_ids(labels: Mapping[str, str], key: str) -> tuple[int, ...]:
    """Distinct GPU indexes, comma-separated, each in ``0..MAX_GPU_INDEX`` (empty: none)."""
    text = _text(labels, key)
    if not text:
        return ()
    found = tuple(integer({key: part}, key, 0, MAX_GPU_INDEX) for part in text.split(","))
    if len(set(found)) != len(found):
        raise LabelError(f"label {key}={text!r} names a GPU twice")
    return tuple(sorted(found))


def lease(labels: Mapping[str, str], key: str) -> float:
    """A lease in seconds: finite, above 0, at most :data:`MAX_LEASE_S`."""
    value = number(labels, key, 0.0, MAX_LEASE_S)
    if value <= 0:
        raise LabelError(f"label {key}={value:g} is no lease: it must be above 0 s")
    return value


def only_known(labels: Mapping[str, str], namespace: str, known: Collection[str]) -> None:
    """Refuse a label under ``namespace.`` that is not one of ``known``: a record with fields
    this provider does not write was not written by it, and is not guessed at."""
    unknown = sorted(k for k in labels if k.startswith(f"{namespace}.") and k not in known)
    if unknown:
        raise LabelError(f"unknown label{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")


CREATED_RESOLUTION_S = 1.0
"""The engine's container list gives ``Created`` in whole seconds, cut short: the container was
created within this long after it."""


def created(summary: Mapping[str, Any]) -> float:
    """The latest the engine may have created the container, on the engine's clock (``Created`` of
    its list entry, Unix seconds, plus :data:`CREATED_RESOLUTION_S`): the only start an age is
    measured from. So an age is never overstated: a claim, hold or place in line is reclaimed
    or lapses a little late rather than early, and a claim counts as load its host's
    measurement does not show yet a little longer rather than shorter."""
    value = summary.get("Created")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value < MAX_TIME_S:
        raise LabelError(f"the engine's Created={value!r} is not a time")
    return float(value) + CREATED_RESOLUTION_S


def _text(labels: Mapping[str, str], key: str) -> str:
    if key not in labels:
        raise LabelError(f"label {key} is missing")
    value = labels[key]
    if not isinstance(value, str):
        raise LabelError(f"label {key} is not text")
    return value.strip()
