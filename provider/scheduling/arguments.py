"""What a DAG author writes for a placement, checked: numbers, and the request they make.

Operator and sensor arguments may be templates (``gpus="{{ params.gpus }}"``), so they arrive
as rendered text or numbers of any type. These checks turn them into the values placement
takes, or raise a :class:`~provider.errors.SpecError` that names the argument and what it
accepts, before anything is read or reserved. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from provider.errors import SpecError
from provider.scheduling.model import MILLI_PER_GPU, PlacementRequest


def whole_number(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as a whole number >= ``minimum`` (``"2"`` as rendered by a template is 2)."""
    try:
        number_ = int(value)
    except (TypeError, ValueError, OverflowError):
        number_ = minimum - 1
    if isinstance(value, bool) or number_ < minimum or str(value).strip() != str(number_):
        raise SpecError(f"{name}={value!r} must be a whole number >= {minimum}.")
    return number_


def number(name: str, value: Any, minimum: float, above: bool = False, fix: str = "") -> float:
    """``value`` as a finite number >= ``minimum`` (> with ``above``)."""
    try:
        got = float(value)
    except (TypeError, ValueError):
        got = math.nan
    if isinstance(value, bool) or not math.isfinite(got) or got < minimum or (above and got == minimum):
        bound = f"{'>' if above else '>='} {minimum:g}"
        raise SpecError(f"{name}={value!r} must be a number {bound}{f' ({fix})' if fix else ''}.")
    return got


def placement_request(
    *,
    gpus: Any,
    gpu_milli: Any = MILLI_PER_GPU,
    gpu_memory_mb: Any = 0,
    gpu_model: Any = None,
    required_labels: Any = None,
    cpu_milli: int = 0,
    memory_mb: int = 0,
) -> PlacementRequest:
    """The request that rendered arguments make; :class:`SpecError` names the first bad one."""
    count = whole_number("gpus", gpus)
    milli = whole_number("gpu_milli", gpu_milli, minimum=1)
    if milli > MILLI_PER_GPU:
        raise SpecError(f"gpu_milli={gpu_milli!r} must be in 1..{MILLI_PER_GPU} (a share of one GPU; "
                        f"{MILLI_PER_GPU} is all of it).")
    if milli < MILLI_PER_GPU and count != 1:
        raise SpecError(f"gpu_milli={gpu_milli!r} is a share of one GPU: it needs gpus=1, got gpus={gpus!r}.")
    if gpu_model is not None and (not isinstance(gpu_model, str) or not gpu_model):
        raise SpecError(f"gpu_model={gpu_model!r} must be a GPU model name such as 'A100-80GB' "
                        "('A|B' accepts either), or None for any.")
    labels = {} if required_labels is None else required_labels
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise SpecError(f"required_labels={required_labels!r} must map label names to values, e.g. {{'zone': 'a'}}.")
    return PlacementRequest(gpus=count, gpu_milli=milli, gpu_memory_mb=whole_number("gpu_memory_mb", gpu_memory_mb),
                            cpu_milli=cpu_milli, memory_mb=memory_mb, gpu_model=gpu_model, labels=dict(labels))
