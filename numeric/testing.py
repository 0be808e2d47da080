r"""Statistical assertions for Monte Carlo estimators, for your own test suite (NumPy only).

Each assertion runs a per-sample estimator ``fn(rng, m, **params) -> (m, k)`` through
:func:`numeric.estimate` and fails with probability at most ``false_failure_rate`` when the
estimator is right, so a suite of such tests does not flake:

.. math::

    |\bar g_j - \theta_j| \le z \, \mathrm{SE}_j \quad\text{for every component } j,
    \qquad z = \Phi^{-1}\bigl(1 - \tfrac{\alpha}{2 \cdot 3k}\bigr).

>>> import numpy as np
>>> from numeric.testing import assert_unbiased
>>> def pathwise(rng, m, *, mu, sigma):          # d/dmu E[z**2] = 2 mu, z = mu + sigma eps
...     return 2.0 * (mu + sigma * rng.standard_normal(m))
>>> assert_unbiased(pathwise, reference=3.0, seed=0, mu=1.5, sigma=2.0)

In a Hypothesis test (the seed drawn by Hypothesis, so a failure replays and shrinks)::

    from hypothesis import given
    from numeric import strategies as mst
    from numeric.testing import assert_unbiased

    @given(mst.seeds(), mst.normal_params())
    def test_my_estimator(seed, params):
        assert_unbiased(my_estimator, reference=my_exact_gradient(**params), seed=seed, **params)

The reference must come from somewhere other than a typed number: a closed form derived
symbolically (``mcgrad derive``), quadrature, or ``mcgrad verify`` (optax tested d/dmu E[x**4]
against 3 mu**3 + 12 mu sigma**2 for five years; the right value is 4 mu**3 + 12 mu sigma**2).

**Sample size.** Without ``n``, a pilot run of ``PILOT_SAMPLES`` (an independent stream derived from
``seed``) measures the per-sample standard deviation :math:`s_j`, and the test uses

.. math::

    n = \max_j \Bigl(\frac{(z + z_{0.99})\, s_j}{\delta \, \max_i |\theta_i|}\Bigr)^2, \quad
    \text{clipped to } [\texttt{MIN\_SAMPLES}, \texttt{max\_n}],

the size at which a bias of :math:`\delta` (``relative_bias``, default 5%) times the largest
reference component is detected in any component with probability 0.99 (relative to the size of
the gradient, so a component near 0 does not demand an unbounded n). When every reference is 0
the scale is :math:`s_j` (a bias of :math:`\delta` standard deviations). When ``n`` is clipped at
``max_n``, only larger biases are detected so surely; the recorded :class:`Measurement` states the
bias detectable at the ``n`` used.

**False-failure budget.** :math:`\alpha` = ``false_failure_rate`` is split in three: each of at most
two mean tests (the run, and the one rerun described next) gets :math:`\alpha/3` over the k
components (Bonferroni), and the heavy-tail check of the run that decides gets :math:`\alpha/3`.
The rate is the central-limit rate; it holds for estimators with finite variance whose tails are
light enough for ``n`` (the two-sided test cancels the first-order skewness error).

**Heavy tails.** An estimator with infinite variance has a sample variance, hence a standard error,
that one huge sample can inflate enough to hide any bias: it would pass by luck. Every run is
therefore made with ``moments=4`` and checked with :func:`numeric.variance_is_stable`. A run in
which one sample carries more than ``TRUSTED_SHARE`` (5%) of a component's sum of squared
deviations is not trusted: without ``n`` the assertion reruns once with 10x the samples (up to
``max_n``) on a fresh stream, because a finite-variance estimator's largest share shrinks as n
grows while an infinite-variance one's does not. The run that decides (the rerun, or the only run
when none is possible) fails the assertion, saying that the variance looks infinite, when one
sample carries more than ``FINAL_SHARE`` (10%): that sample alone would inflate the standard error
by more than 5% (:math:`1/\sqrt{1 - 0.1}`). The largest share of Cauchy noise has a limiting law
that does not depend on n and falls below 10% in about 4 of 10**4 runs (simulation, 2e4 runs of
n = 1e4; below 5% in none), so a Cauchy-like estimator fails all but that often. The price: a finite-variance estimator with extreme tails (kurtosis in the
thousands, e.g. a score-function estimator of E[z**4] under a Normal) can exceed 10% now and
then; docs/verification.md gives the measured rates.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ._agree import agrees, check_rate, variance_agrees, z_for_rate
from ._errors import NumericError
from ._estimate import _check_count, _check_fn, _check_seed, estimate
from ._tails import variance_is_stable

__all__ = [
    "MAX_SAMPLES",
    "MIN_SAMPLES",
    "Measurement",
    "PILOT_SAMPLES",
    "POWER",
    "assert_unbiased",
    "assert_unbiased_sequential",
    "assert_variance",
    "recording",
]

PILOT_SAMPLES = 10_000
"""Samples of the pilot run that sizes the test."""

MIN_SAMPLES = 100_000
"""Fewest samples of a test run chosen by the assertion (heavy-tail checks need them)."""

MAX_SAMPLES = 4_000_000
"""Default ``max_n``: most samples of a run chosen by the assertion."""

POWER = 0.99
"""Probability of detecting a relative bias of ``relative_bias`` (when n is not clipped)."""

ESCALATION = 10
"""Factor by which the rerun after a heavy-tail flag grows n."""

TRUSTED_SHARE = 0.05
"""A run is trusted when no sample carries more of a sum of squared deviations than this."""

FINAL_SHARE = 0.10
"""The deciding run fails when a sample carries more than this (it inflates the SE by > 5%)."""

SEQUENTIAL_FIRST = 20_000
"""Samples of the first batch of :func:`assert_unbiased_sequential`; each batch doubles."""

_TAG = 0x6D63_6772  # separates the streams derived here from numeric.estimate's own seeds
_PILOT, _RERUN, _BATCH = 1, 2, 3

_BAD_REFERENCE = (
    "{name} must be a finite number or a sequence of finite numbers, one per component of the "
    "estimator's output, got {value!r}; derive it (mcgrad derive, quadrature), never type it"
)
_WRONG_LENGTH = (
    "{name} has {got} components but the estimator returns k = {k} columns; give one value per "
    "column (a scalar is used for every column)"
)
_BAD_FRACTION = "{name} must be a number in (0, 1), got {value!r}; 0.05 (5%) is the default"
_BAD_MAX = "max_n must be an integer of at least {least}, got {value!r}"

_observers = []


@dataclass(frozen=True)
class Measurement:
    """What one assertion measured (see :func:`recording`); per-component values are tuples.

    ``kind`` is ``"mean"`` or ``"variance"``; ``reference`` is the exact mean or variance;
    ``statistic`` the estimated mean or variance and ``stderr`` its standard error; ``z`` their
    standardized differences and ``z_limit`` the bound they had to respect; ``detectable`` the
    relative discrepancy detected with probability ``POWER`` at this ``n``. ``variance`` is the
    per-sample variance and ``largest_share`` the heavy-tail diagnostic.
    """

    assertion: str
    function: str
    kind: str
    passed: bool
    n: int
    seed: int
    statistic: tuple
    stderr: tuple
    reference: tuple
    z: tuple
    z_limit: float
    variance: tuple
    largest_share: tuple
    detectable: tuple
    false_failure_rate: float
    params: dict
    message: str = ""


@contextmanager
def recording():
    """Collect the :class:`Measurement` of every assertion run inside the block.

    >>> with recording() as measured:
    ...     assert_unbiased(lambda rng, m: rng.standard_normal(m), 0.0, seed=1)
    >>> measured[0].n >= MIN_SAMPLES
    True
    """
    records = []
    _observers.append(records.append)
    try:
        yield records
    finally:
        _observers.remove(records.append)


def assert_unbiased(fn, reference, *, seed, n=None, false_failure_rate=1e-6,
                    relative_bias=0.05, max_n=MAX_SAMPLES, **params):
    r"""Assert that the estimator's mean is ``reference``: :math:`|\bar g_j - \theta_j| \le z
    \mathrm{SE}_j` for every component, at the stated false-failure rate.

    Args:
        fn: per-sample estimator ``fn(rng, m, **params)`` returning ``(m, k)`` (or ``(m,)``).
        reference: the exact :math:`\theta`, a number or one per component (a scalar is used
            for every component).
        seed: non-negative integer; the run uses ``numeric.estimate(fn, n, seed=seed,
            moments=4, **params)``, so a failure replays exactly.
        n: samples; default: sized by a pilot run to detect ``relative_bias`` (module docstring).
        false_failure_rate: :math:`\alpha`, the probability that a correct estimator fails.
        relative_bias: :math:`\delta`, the relative bias the sample size is chosen to detect
            with probability ``POWER``.
        max_n: the most samples a run chosen by the assertion may use.
        **params: passed on to ``fn``; so ``fn``'s own parameters cannot be called ``seed``,
            ``n``, ``false_failure_rate``, ``relative_bias``, ``max_n``, ``chunk_size`` or
            ``moments``.

    Raises:
        AssertionError: with the estimate, standard error, z, n, the reference and the seed
            that replays it; or saying that the variance looks infinite (heavy tails).
        NumericError: for bad arguments.
    """
    check = _Check("assert_unbiased", fn, reference, seed, n, false_failure_rate, relative_bias,
                   max_n, params, kind="mean")
    check.run()


def assert_variance(fn, expected, *, seed, n=None, false_failure_rate=1e-6,
                    relative_error=0.05, max_n=MAX_SAMPLES, **params):
    r"""Assert that the estimator's per-sample variance is ``expected``:
    :math:`|s_j^2 - \sigma_j^2| \le z \, \mathrm{SE}(s_j^2)` for every component.

    :math:`\mathrm{SE}(s^2) = \sqrt{(m_4 - s^4 (n-3)/(n-1))/n}` (``Estimate.variance_stderr``)
    needs a finite fourth moment; the heavy-tail check (module docstring) guards the second
    moment only, so state the fourth moment's finiteness when you rely on this assertion. Without
    ``n`` the pilot sizes the run to detect a relative error ``relative_error`` of the variance
    with probability ``POWER``. Other arguments and failures as :func:`assert_unbiased`.
    """
    check = _Check("assert_variance", fn, expected, seed, n, false_failure_rate, relative_error,
                   max_n, params, kind="variance")
    check.run()


def assert_unbiased_sequential(fn, reference, *, seed, false_failure_rate=1e-6,
                               relative_bias=0.05, max_n=MAX_SAMPLES, **params):
    r""":func:`assert_unbiased` in batches that stop as soon as the answer is clear.

    Batches of ``SEQUENTIAL_FIRST``, then twice as many each time, are pooled, up to ``max_n``
    samples in :math:`K` looks (:math:`K` fixed in advance by ``max_n``). At each look whose
    latest batch passes the heavy-tail check:

    * **fail** if some :math:`|\bar g_j - \theta_j| > z_K \mathrm{SE}_j`, with
      :math:`z_K` for :math:`\alpha / (2 K k)`: alpha spent equally over the looks, so by the union
      bound a correct estimator fails at some look with probability at most :math:`\alpha/2`;
    * **pass** if every :math:`|\bar g_j - \theta_j| + z' \mathrm{SE}_j \le \delta
      \max_i |\theta_i|`, :math:`z'` for :math:`(1 - \text{POWER})/K`: the bias is shown to be
      below the relative bias :math:`\delta` (relative to the gradient's size, as in
      :func:`assert_unbiased`), and an estimator whose bias is at least that stops here with
      probability at most 1 - ``POWER``. Stopping to pass cannot add false failures.

    After the last look it passes unless it failed, or the last batch is flagged as heavy-tailed
    (checked at :math:`\alpha/2`). Arguments as :func:`assert_unbiased`; a failure message gives
    the seed, which replays the whole sequence.
    """
    check = _Check("assert_unbiased_sequential", fn, reference, seed, None, false_failure_rate,
                   relative_bias, max_n, params, kind="mean")
    check.sequential()


class _Check:
    """One assertion: validated arguments, the runs, the verdict and its message."""

    def __init__(self, name, fn, reference, seed, n, rate, fraction, max_n, params, kind):
        _check_fn(fn)
        self.name, self.fn, self.kind, self.params = name, fn, kind, params
        self.seed = _check_seed(seed)
        self.n = None if n is None else _check_count(n, "n", 2, "a variance needs two samples")
        self.rate = check_rate(rate)
        self.fraction = _check_fraction(fraction, "relative_bias" if kind == "mean"
                                        else "relative_error")
        self.max_n = _check_max(max_n)
        self.what = "reference" if kind == "mean" else "expected"
        self.reference = _as_reference(reference, self.what)
        self.label = getattr(fn, "__name__", type(fn).__name__)

    # -- fixed-size assertions -----------------------------------------------------------------

    def run(self):
        n = self.n if self.n is not None else self._plan()
        first = self._estimate(n, self.seed)
        k = first.mean.shape[0]
        self._fit_reference(k)
        flag_rate = self.rate / 3 / k
        if _stable(first, flag_rate, TRUSTED_SHARE) or self.n is not None or n >= self.max_n:
            self._decide(first, [first], flag_rate)
            return
        rerun_n = min(ESCALATION * n, self.max_n)
        second = self._estimate(rerun_n, _derived(self.seed, _RERUN))
        self._decide(second, [first, second], flag_rate)

    def _plan(self) -> int:
        pilot = self._estimate(PILOT_SAMPLES, _derived(self.seed, _PILOT))
        self._fit_reference(pilot.mean.shape[0])
        z = self._z(pilot.mean.shape[0])
        if self.kind == "mean":
            spread = np.sqrt(pilot.variance)
            scale = _scales(self.reference, spread)
        else:
            spread = pilot.variance_stderr * math.sqrt(pilot.n)
            scale = np.where(self.reference > 0, self.reference, pilot.variance)
        need = _needed(z, spread, self.fraction * scale)
        return int(min(max(need, MIN_SAMPLES), self.max_n))

    def _decide(self, est, runs, flag_rate):
        if not _stable(est, flag_rate, FINAL_SHARE):
            self._fail_heavy(runs, flag_rate)
        k = est.mean.shape[0]
        rate = self.rate / 3 / k
        if self.kind == "mean":
            statistic, stderr = est.mean, est.stderr
            verdict = agrees(statistic, stderr, self.reference, false_failure_rate=rate)
        else:
            statistic, stderr = est.variance, est.variance_stderr
            verdict = variance_agrees(est, self.reference, false_failure_rate=rate)
        ok = np.array([v is not False for v in verdict])
        self._conclude(est, statistic, stderr, z_for_rate(rate), ok, self.rate)

    def _z(self, k):
        return z_for_rate(self.rate / 3 / k)

    # -- the sequential assertion --------------------------------------------------------------

    def sequential(self):
        sizes = _batches(self.max_n)
        looks, pooled, batch = len(sizes), None, None
        z_pass = z_for_rate((1 - POWER) / looks)
        for look, size in enumerate(sizes, start=1):
            batch = self._estimate(size, _derived(self.seed, _BATCH + look))
            k = batch.mean.shape[0]
            self._fit_reference(k)
            pooled = batch if pooled is None else _pool(pooled, batch)
            if not _stable(batch, self.rate / 2 / k, TRUSTED_SHARE):
                continue  # no decision on a look whose latest batch looks heavy-tailed
            rate = self.rate / 2 / looks / k
            ok = np.array([v is not False for v in agrees(
                pooled.mean, pooled.stderr, self.reference, false_failure_rate=rate)])
            if not ok.all():
                self._conclude(pooled, pooled.mean, pooled.stderr, z_for_rate(rate), ok,
                               self.rate, look=(look, looks))
            margin = np.abs(pooled.mean - self.reference) + z_pass * pooled.stderr
            if np.all(margin <= self.fraction * _scales(self.reference, np.sqrt(pooled.variance))):
                break  # the bias is shown to be below relative_bias: pass early
        k = batch.mean.shape[0]
        if not _stable(batch, self.rate / 2 / k, FINAL_SHARE):
            self._fail_heavy([batch], self.rate / 2 / k)
        self._conclude(pooled, pooled.mean, pooled.stderr, z_for_rate(self.rate / 2 / looks / k),
                       np.ones(k, dtype=bool), self.rate, look=(look, looks))

    # -- shared --------------------------------------------------------------------------------

    def _estimate(self, n, seed):
        return estimate(self.fn, n, seed=seed, moments=4, **self.params)

    def _fit_reference(self, k):
        if self.reference.shape == (1,) and k > 1:
            self.reference = np.repeat(self.reference, k)
        if self.reference.shape != (k,):
            raise NumericError(_WRONG_LENGTH.format(name=self.what, got=self.reference.shape[0],
                                                    k=k))

    def _conclude(self, est, statistic, stderr, z_limit, ok, rate, look=None):
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(stderr > 0, (statistic - self.reference) / stderr,
                         np.where(statistic == self.reference, 0.0, np.inf))
        beta = NormalDist().inv_cdf(POWER)
        scale = np.abs(self.reference) if self.kind == "variance" else _scales(
            self.reference, np.sqrt(est.variance))
        with np.errstate(divide="ignore", invalid="ignore"):
            detectable = np.where(scale > 0, (z_limit + beta) * stderr / scale, np.inf)
        message = "" if ok.all() else self._message(est, statistic, stderr, z, z_limit, ok, look)
        _notify(Measurement(
            self.name, self.label, self.kind, bool(ok.all()), est.n, est.seed,
            _floats(statistic), _floats(stderr), _floats(self.reference), _floats(z),
            float(z_limit), _floats(est.variance), _floats(est.largest_share),
            _floats(detectable), rate, dict(self.params), message))
        if not ok.all():
            raise AssertionError(message)

    def _message(self, est, statistic, stderr, z, z_limit, ok, look):
        what = "mean" if self.kind == "mean" else "per-sample variance"
        lines = [f"{self.name}: the {what} of {self.label} disagrees with the {self.what} "
                 f"(|z| > {z_limit:.2f} in component(s) "
                 f"{', '.join(str(j) for j in np.flatnonzero(~ok))})", "",
                 f"  {'j':>3} {'estimate':>15} {self.what:>15} {'std. error':>12} {'z':>9}"]
        for j in range(len(statistic)):
            mark = "" if ok[j] else "   <- disagrees"
            lines.append(f"  {j:>3} {statistic[j]:>15.8g} {self.reference[j]:>15.8g} "
                         f"{stderr[j]:>12.4g} {z[j]:>9.2f}{mark}")
        where = "" if look is None else f" (pooled over look {look[0]} of {look[1]})"
        lines += ["", f"n = {est.n:,} samples{where}, seed {est.seed}, params {self.params}",
                  self._replay(est, look),
                  f"A correct estimator fails this assertion with probability at most "
                  f"{self.rate:g} (two-sided, Bonferroni over components"
                  f"{' and looks' if look else ''})."]
        return "\n".join(lines)

    def _replay(self, est, look):
        if look is not None:
            return (f"replay: {self.name}(fn, ..., seed={self.seed}, max_n={self.max_n}, "
                    f"relative_bias={self.fraction}) repeats the same batches")
        return (f"replay: numeric.estimate(fn, {est.n}, seed={est.seed}, moments=4, "
                f"**params) gives this estimate")

    def _fail_heavy(self, runs, flag_rate):
        parts = []
        for est in runs:
            worst = int(np.argmax(est.largest_share))
            parts.append(f"{est.largest_share[worst]:.0%} of component {worst}'s sum of squared "
                         f"deviations at n = {est.n:,} (seed {est.seed})")
        message = (
            f"{self.name}: the variance of {self.label}'s samples does not stabilise, so its "
            f"standard error cannot be trusted and the assertion cannot pass: a single sample "
            f"carries {'; then '.join(parts)} (more than {FINAL_SHARE:.0%} fails: that one "
            f"sample inflates the standard error by more than 5%; a finite-variance "
            f"estimator's largest share shrinks as n grows). The estimator looks heavy-tailed, "
            f"possibly with infinite variance (check that E[h**2] is finite). Use a "
            f"lower-variance estimator (pathwise, a baseline or control variate), or raise "
            f"max_n if the variance is finite but the tails are heavy. params {self.params}")
        est = runs[-1]
        k = est.mean.shape[0]
        _notify(Measurement(
            self.name, self.label, self.kind, False, est.n, est.seed, _floats(est.mean),
            _floats(est.stderr), _floats(self.reference[:k]) if self.reference.shape == (k,)
            else (), (), float("nan"), _floats(est.variance), _floats(est.largest_share), (),
            self.rate, dict(self.params), message))
        raise AssertionError(message)


def _notify(measurement):
    for observe in tuple(_observers):
        observe(measurement)


def _stable(est, rate, share) -> bool:
    return bool(np.all(variance_is_stable(est, max_share=share, false_flag_rate=rate)))


def _scales(reference, spread):
    """The bias scale of every component: the largest |reference|, else the spread."""
    largest = float(np.max(np.abs(reference))) if reference.size else 0.0
    if largest > 0:
        return np.full(reference.shape, largest)
    return np.asarray(spread, dtype=float)


def _needed(z, spread, target) -> float:
    """max_j ((z + z_power) spread_j / target_j)**2, 0 where spread is 0."""
    beta = NormalDist().inv_cdf(POWER)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(spread > 0, ((z + beta) * spread / target) ** 2, 0.0)
    need = np.where(np.isnan(need), np.inf, need)
    return float(np.max(need)) if need.size else 0.0


def _batches(max_n) -> list:
    sizes, total, size = [], 0, SEQUENTIAL_FIRST
    while total < max_n:
        size = min(size, max_n - total)
        sizes.append(max(size, 2))
        total += size
        size *= 2
    return sizes


def _pool(a, b):
    """Two independent Estimates pooled: Chan et al.'s merge of mean and sum of squares."""
    n = a.n + b.n
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.n / n)
    m2 = a.variance * (a.n - 1) + b.variance * (b.n - 1) + delta * delta * (a.n * b.n / n)
    variance = m2 / (n - 1)
    return _Pooled(mean, variance, np.sqrt(variance / n), n, b.seed,
                   np.maximum(a.largest_share, b.largest_share))


@dataclass(frozen=True)
class _Pooled:
    mean: np.ndarray
    variance: np.ndarray
    stderr: np.ndarray
    n: int
    seed: int
    largest_share: np.ndarray


def _derived(seed, stream) -> int:
    """An integer seed for an independent stream (pilot, rerun, batch) derived from ``seed``."""
    words = np.random.SeedSequence([seed, _TAG, stream]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 32) | int(words[1])


def _as_reference(value, name) -> np.ndarray:
    if isinstance(value, (str, bytes)):
        raise NumericError(_BAD_REFERENCE.format(name=name, value=value))
    try:
        out = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise NumericError(_BAD_REFERENCE.format(name=name, value=value)) from None
    if out.ndim != 1 or out.size == 0 or not np.isfinite(out).all():
        raise NumericError(_BAD_REFERENCE.format(name=name, value=value))
    if name == "expected" and (out < 0).any():
        raise NumericError(f"expected variances must be non-negative, got {value!r}")
    return out


def _check_fraction(value, name) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 < value < 1.0:
        raise NumericError(_BAD_FRACTION.format(name=name, value=value))
    return float(value)


def _check_max(value) -> int:
    try:
        return _check_count(value, "max_n", PILOT_SAMPLES, "")
    except NumericError:
        raise NumericError(_BAD_MAX.format(least=PILOT_SAMPLES, value=value)) from None


def _floats(values) -> tuple:
    return tuple(float(v) for v in np.atleast_1d(values))
