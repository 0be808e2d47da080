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


def test_the_alarm_never_outlives_the_block_even_when_it_fires_while_leaving(monkeypatch):
    """The alarm repeats; one that landed while the budget was being left used to skip the code
    that stops the timer, and later alarms then broke whatever ran next (CI saw OutOfTime raised
    inside pytest's own reporting). With a 0.1 ms repeat the alarm lands everywhere, enter and
    exit included."""
    import signal

    import derive._budget as budget

    monkeypatch.setattr(budget, "_REPEAT_SECONDS", 1e-4)
    handler = signal.getsignal(signal.SIGALRM)
    for _ in range(3000):
        with pytest.raises(OutOfTime):
            with time_budget(1e-4):
                while True:
                    pass
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert signal.getsignal(signal.SIGALRM) is handler
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:  # a stray alarm would raise here
        pass


def test_an_alarm_that_lands_in_a_finalizer_is_not_reported_as_unraisable(monkeypatch):
    """SymPy closes generators and drops objects with finalizers all the time; an alarm landing
    in one cannot propagate and Python reports it to sys.unraisablehook, which pytest turns into
    a failure of whatever test ran (CI failed so). The budget drops those reports and still
    interrupts the block."""
    import sys

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    class SlowToDelete:
        def __del__(self):
            spin(0.06)  # the first alarm (at 0.05 s) lands here

    start = time.monotonic()
    with pytest.raises(OutOfTime):
        with time_budget(0.05):
            doomed = SlowToDelete()
            spin(0.02)
            del doomed
            spin(10)  # the next alarm (0.05 s later) lands here
    assert time.monotonic() - start < 2
    assert [r.exc_type for r in reported] == []
    assert sys.unraisablehook == reported.append
