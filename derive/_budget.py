"""A wall-clock budget for SymPy calls that may run for minutes (integrate, simplify, limit)."""

import signal
import sys
import threading
import time


_REPEAT_SECONDS = 0.05


class OutOfTime(Exception):
    """The budgeted call did not finish in time."""


class time_budget:  # noqa: N801 - used as a context manager, named like one
    """Raise :class:`OutOfTime` inside the block after ``seconds`` of wall time.

    Uses SIGALRM, so it can only interrupt in the main thread; elsewhere (and for a budget of 0 or
    less) the block is not entered at all and OutOfTime is raised at once, which callers treat as
    "this method is not available" and fall through to the next one.

    The alarm repeats every 50 ms until the block ends: SymPy swallows exceptions in places
    (``except Exception`` inside integrate's Risch code), and a single alarm caught there left
    integrate running for minutes with no budget at all. Because it repeats, the alarm must never
    outlive the block: an alarm that lands while the budget is being entered or left is ignored
    (raising there would skip the code that stops the timer, and the next alarms would then
    interrupt whatever ran later), and a late alarm before the deadline is ignored too. An alarm
    that lands in a finalizer (``__del__``, a generator being closed) cannot propagate; Python
    reports it as "unraisable", which test runners turn into failures, so inside the block such
    reports of OutOfTime are dropped: the next alarm interrupts the block itself.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        if self.seconds <= 0 or threading.current_thread() is not threading.main_thread():
            raise OutOfTime()
        self._outer_left, self._outer_repeat = signal.getitimer(signal.ITIMER_REAL)
        self._start = time.monotonic()
        seconds = self.seconds
        if self._outer_left > 0:  # nested in another budget: never outlive it
            seconds = min(seconds, self._outer_left)
        self._deadline = self._start + seconds
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        self._previous = signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds, _REPEAT_SECONDS)
        return self

    def __exit__(self, *exc_info):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        sys.unraisablehook = self._previous_hook
        if self._outer_left > 0:  # give the outer budget back what is left of it
            left = self._outer_left - (time.monotonic() - self._start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), self._outer_repeat)
        return False

    def _alarm(self, signum, frame):
        if frame is not None and frame.f_code in _UNINTERRUPTIBLE:
            return  # entering or leaving: the block's own alarm would leave the timer running
        if time.monotonic() < self._deadline:
            return  # a late alarm of an inner budget, delivered after it handed the timer back
        raise OutOfTime()

    def _unraisable(self, unraisable):
        if isinstance(unraisable.exc_value, OutOfTime):
            return  # our alarm landed in a finalizer: harmless, the next one interrupts the block
        self._previous_hook(unraisable)


_UNINTERRUPTIBLE = frozenset({time_budget.__enter__.__code__, time_budget.__exit__.__code__})
