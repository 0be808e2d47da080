"""A wall-clock budget for SymPy calls that may run for minutes (integrate, simplify, limit)."""

import contextlib
import signal
import threading


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

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
