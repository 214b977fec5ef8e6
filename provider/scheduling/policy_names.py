"""Policies by name, so an operator argument (``placement_policy="fragmentation"``) or a DAG
param can select one; unknown names and unknown weights fail with the valid choices listed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from types import MappingProxyType
from typing import Any

from provider.errors import SpecError
from provider.scheduling.policies import (
    BestFit,
    Fragmentation,
    FragmentationBalanced,
    LeastLoaded,
    Policy,
    RandomPolicy,
)

POLICIES: Mapping[str, Callable[..., Policy]] = MappingProxyType(
    {
        "random": RandomPolicy,
        "least_loaded": LeastLoaded,
        "best_fit": BestFit,
        "fragmentation": Fragmentation,
        "fragmentation_balanced": FragmentationBalanced,
    }
)


def check_placement_policy(name: object) -> str:
    """``name`` if it is a placement policy; otherwise a :class:`SpecError` listing them all.

    Called once templates are rendered, not in ``__init__``: ``placement_policy`` is a
    template field, so while the DAG is parsed it may still read ``{{ params.policy }}``.
    """
    if not isinstance(name, str) or name not in POLICIES:
        raise SpecError(f"placement_policy={name!r}; use one of {', '.join(sorted(POLICIES))}.")
    return name


def get_policy(name: str, **weights: Any) -> Policy:
    """The policy called ``name``, built with ``weights`` (its constructor arguments)."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ValueError(
            f"unknown placement policy {name!r}; valid policies: {', '.join(sorted(POLICIES))}"
        )
    known = {f.name for f in fields(factory)} if isinstance(factory, type) else set()
    unknown = sorted(set(weights) - known)
    if unknown:
        raise TypeError(
            f"policy {name!r} got unknown weight(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(known)) or '(none)'}"
        )
    return factory(**weights)
