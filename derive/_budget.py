"""A wall-clock budget for SymPy calls that may run for minutes (integrate, simplify, limit)."""

import contextlib
import signal
import threading
import time


_REPEAT_SECONDS = 0.05


class OutOfTime(Exception):
    """The budgeted call did not finish in time."""


@contextlib.contextmanager
def time_budget(seconds: float):
    """Raise :class:`OutOfTime` inside the block after ``seconds`` of wall time.

    Uses SIGALRM, so it can only interrupt in the main thread; elsewhere (and for a budget of 0 or
    less) the block is not entered at all and OutOfTime is raised at once, which callers treat as
    "this method is not available" and fall through to the next one.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        raise OutOfTime()

    def _alarm(signum, frame):
        raise OutOfTime()

    outer_left, outer_repeat = signal.getitimer(signal.ITIMER_REAL)
    start = time.monotonic()
    if outer_left > 0:  # nested in another budget: never outlive it
        seconds = min(seconds, outer_left)
    previous = signal.signal(signal.SIGALRM, _alarm)
    # Repeat every 50 ms after the first alarm: SymPy swallows exceptions in places (`except
    # Exception` inside integrate's Risch code), and a single alarm caught there left
    # integrate running for minutes with no budget at all.
    signal.setitimer(signal.ITIMER_REAL, seconds, _REPEAT_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left > 0:  # give the outer budget back what is left of it
            left = outer_left - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_repeat)
