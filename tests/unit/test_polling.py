"""``eventually``, the one way tests wait: the value when it comes, what was awaited when not."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.conftest import NotWithin, eventually, settled


def test_returns_the_first_value_accepted() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter), 5, interval_s=0.001, until=lambda n: n >= 3) == 3
    assert eventually(lambda: "ready", 0) == "ready"  # checked at least once, even with no time


def test_at_the_deadline_names_what_was_awaited_and_the_last_value() -> None:
    began = time.monotonic()
    with pytest.raises(NotWithin, match=r"the claim: not within 0.2 s; last seen: \[\]") as late:
        eventually(list, 0.2, interval_s=0.05, what="the claim")
    assert 0.2 <= time.monotonic() - began < 2
    assert late.value.last == []
    assert isinstance(late.value, AssertionError) and isinstance(late.value, TimeoutError)


def test_a_long_last_value_is_cut_in_the_message() -> None:
    with pytest.raises(NotWithin) as late:
        eventually(lambda: ["x" * 10_000], 0, until=lambda _: False)
    assert len(str(late.value)) < 2200 and "characters)" in str(late.value)


def test_an_error_of_the_check_ends_the_wait() -> None:
    def dead() -> bool:
        raise RuntimeError("the process died")

    with pytest.raises(RuntimeError, match="the process died"):
        eventually(dead, 60)


def test_settled_returns_what_is_left_after_the_timeout() -> None:
    left = iter([["a", "b"], ["a"], []])
    assert settled(lambda: next(left), 5) == []
    assert settled(lambda: ["stuck"], 0.1) == ["stuck"]
