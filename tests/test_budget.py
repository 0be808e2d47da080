"""The wall-clock budget that guards SymPy calls (integrate, simplify, solve)."""

import time

import pytest

from derive import OutOfTime, time_budget


def test_a_budget_fires_even_when_code_swallows_the_first_alarm():
    """SymPy's Risch code catches Exception; one alarm caught there used to leave integrate
    running for minutes. The alarm repeats until the block ends."""
    start = time.monotonic()
    with pytest.raises(OutOfTime):
        with time_budget(0.2):
            try:
                while True:
                    sum(range(1000))
            except OutOfTime:
                pass  # swallowed: the budget must fire again
            for _ in range(10**9):
                sum(range(1000))
    assert time.monotonic() - start < 2


def test_a_nested_budget_gives_the_outer_one_its_remaining_time():
    start = time.monotonic()
    with pytest.raises(OutOfTime):
        with time_budget(0.4):
            with time_budget(0.1):
                pass
            while True:
                sum(range(1000))
    assert 0.35 < time.monotonic() - start < 2


def test_an_inner_budget_never_outlives_the_outer_one():
    start = time.monotonic()
    with pytest.raises(OutOfTime):
        with time_budget(0.2):
            with time_budget(30):
                while True:
                    sum(range(1000))
    assert time.monotonic() - start < 2
