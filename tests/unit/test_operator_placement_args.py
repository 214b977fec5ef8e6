"""Placement arguments of GpuDockerOperator are checked when the DAG is parsed."""

from __future__ import annotations

import pytest

from provider.errors import SpecError
from provider.operators.gpu_docker import GpuDockerOperator


def test_unknown_policy_lists_the_valid_ones() -> None:
    with pytest.raises(SpecError, match=r"placement_policy='fastest'; use one of .*least_loaded"):
        GpuDockerOperator(task_id="t", image="x:1", gpu_pool=["a"], placement_policy="fastest")


def test_gpu_pool_leaves_airflows_own_pool_alone() -> None:
    op = GpuDockerOperator(task_id="t", image="x:1", gpu_pool=["a", "b"], pool="training_slots")
    assert op.gpu_pool == ["a", "b"] and op.pool == "training_slots"
