"""Opt-in pytest plugin for :mod:`numeric.testing`: seeded generators and a variance summary.

Enable it in your top-level ``conftest.py`` (it is not registered as an entry point, so it never
loads just because mcgrad is installed)::

    pytest_plugins = ["numeric.pytest_plugin"]

It gives

* fixtures ``mc_seed`` (an integer fixed per test: a CRC-32 of the test's node id, so a test
  keeps its seed from run to run and tests do not share one; ``--mc-seed N`` overrides it) and
  ``mc_rng`` (``numpy.random.Generator(PCG64(SeedSequence(mc_seed)))``);
* a terminal summary section, "Monte Carlo assertions", listing for every assertion of
  :mod:`numeric.testing` run in the session: the test, the estimator, n, the estimate and its
  standard error, the per-sample variance, z, the relative bias the run could detect and the
  heavy-tail share. The variances measured there are the numbers to quote when comparing
  estimators.
"""

import zlib

import numpy as np
import pytest

from . import testing

_RECORDS = pytest.StashKey[list]()
_OBSERVER = pytest.StashKey[object]()
_CURRENT = pytest.StashKey[dict]()
_SHOWN = 200  # rows of the summary; the rest are counted


def pytest_addoption(parser):
    group = parser.getgroup("numeric", "numeric.testing (Monte Carlo assertions)")
    group.addoption("--mc-seed", type=int, default=None, metavar="N",
                    help="seed every mc_seed/mc_rng fixture with N instead of the per-test seed")


def pytest_configure(config):
    records, current = [], {"test": None}
    config.stash[_RECORDS], config.stash[_CURRENT] = records, current

    def observe(measurement):
        records.append((current["test"] or "-", measurement))

    testing._observers.append(observe)
    config.stash[_OBSERVER] = observe


def pytest_unconfigure(config):
    observe = config.stash.get(_OBSERVER, None)
    if observe in testing._observers:
        testing._observers.remove(observe)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    current = item.config.stash[_CURRENT]
    current["test"] = item.nodeid
    try:
        return (yield)
    finally:
        current["test"] = None


@pytest.fixture
def mc_seed(request) -> int:
    """A seed fixed per test (CRC-32 of its node id), or ``--mc-seed``."""
    override = request.config.getoption("--mc-seed")
    return override if override is not None else zlib.crc32(request.node.nodeid.encode())


@pytest.fixture
def mc_rng(mc_seed) -> np.random.Generator:
    """A generator seeded with ``mc_seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(mc_seed)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    records = config.stash.get(_RECORDS, [])
    if not records:
        return
    write = terminalreporter.write_line
    terminalreporter.section("Monte Carlo assertions (numeric.testing)")
    write(f"{'test':<44} {'estimator':<18} {'kind':<8} {'n':>10} {'j':>2} {'estimate':>12} "
          f"{'std. error':>10} {'variance':>11} {'z':>7} {'detects':>8} {'share':>6}  ok")
    for test, m in records[:_SHOWN]:
        for j in range(len(m.statistic)):
            write(_row(test if j == 0 else "", m, j))
    if len(records) > _SHOWN:
        write(f"... and {len(records) - _SHOWN} more assertions")
    failed = sum(not m.passed for _, m in records)
    write(f"{len(records)} assertions, {failed} failed; each fails a correct estimator with "
          f"probability at most its false_failure_rate (here "
          f"{', '.join(sorted({f'{m.false_failure_rate:g}' for _, m in records}))})")


def _row(test, m, j) -> str:
    def get(values, spec):
        return format(values[j], spec) if j < len(values) else "-"

    name = test if len(test) <= 44 else "..." + test[-41:]
    detects = get(m.detectable, ".1%") if m.detectable else "-"
    return (f"{name:<44} {m.function[:18]:<18} {m.kind:<8} {m.n:>10,} {j:>2} "
            f"{get(m.statistic, '.6g'):>12} {get(m.stderr, '.3g'):>10} "
            f"{get(m.variance, '.5g'):>11} {get(m.z, '.2f'):>7} {detects:>8} "
            f"{get(m.largest_share, '.3f'):>6}  {'yes' if m.passed else 'NO'}")
