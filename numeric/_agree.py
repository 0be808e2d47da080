r"""Agreement of Monte Carlo estimates with exact references, at a stated false-failure rate.

An estimate :math:`\hat\theta` with standard error :math:`\mathrm{SE}` agrees with a reference
:math:`\theta` when

.. math::

    |\hat\theta - \theta| \le z_\alpha \, \mathrm{SE}, \qquad
    z_\alpha = \Phi^{-1}(1 - \alpha/2),

so that, by the central limit theorem, a correct estimator fails with probability about
:math:`\alpha` (the false-failure rate; :math:`\alpha = 10^{-6}` gives :math:`z \approx 4.89`).
The band is widened by ``ROUNDING_ULPS`` units in the last place of
:math:`\max(|\hat\theta|, |\theta|)`, so that a deterministic estimator (SE = 0) agrees with an
exact value computed along a different route.
"""

from statistics import NormalDist

import numpy as np

from ._errors import NumericError

ROUNDING_ULPS = 64  # float64 rounding slack: pairwise sums of 1e9 values err by ~30 ulp at most

_BAD_RATE = (
    "{name} must be a probability strictly between 0 and 0.5, got {value!r}; "
    "1e-6 (z = 4.89, two-sided) is the usual choice for tests that must not flake"
)
_BAD_STDERR = (
    "stderr must be finite and non-negative, got {value}; pass Estimate.stderr (or "
    "Estimate.variance_stderr) from numeric.estimate"
)
_BAD_VALUE = "the estimate must be finite, got {value}; numeric.estimate never returns one"
_BAD_REFERENCE = (
    "reference must be numbers, with None or nan for components whose exact value is unknown; "
    "got {value!r} ({error})"
)
_BAD_SHAPES = "estimate, stderr and reference do not broadcast together: shapes {shapes}"
_NEEDS_MOMENTS4 = (
    "this Estimate has no {field}; compute it with numeric.estimate(fn, n, seed=..., moments=4)"
)


def check_rate(rate, name="false_failure_rate") -> float:
    """``rate`` as a float in (0, 0.5), or a :class:`NumericError` that says so."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating, np.integer)):
        raise NumericError(_BAD_RATE.format(name=name, value=rate))
    if not 0.0 < rate < 0.5:
        raise NumericError(_BAD_RATE.format(name=name, value=rate))
    return float(rate)


def z_for_rate(false_failure_rate, *, two_sided=True) -> float:
    r"""The normal quantile :math:`z` at which a correct estimate fails with the given rate.

    .. math::

        z = \Phi^{-1}(1 - \alpha/2) \ \text{(two-sided)}, \qquad
        z = \Phi^{-1}(1 - \alpha) \ \text{(one-sided)}.

    >>> round(z_for_rate(1e-6), 3)
    4.892
    """
    rate = check_rate(false_failure_rate)
    return NormalDist().inv_cdf(1.0 - (rate / 2.0 if two_sided else rate))


def agrees(estimate_mean, stderr, reference, *, false_failure_rate=1e-6) -> np.ndarray:
    r"""Which components satisfy :math:`|\hat\theta - \theta| \le z_\alpha \mathrm{SE}`.

    (Plus 64 units in the last place of :math:`\max(|\hat\theta|, |\theta|)` for rounding.)

    Args:
        estimate_mean: the estimates :math:`\hat\theta` (e.g. ``Estimate.mean``).
        stderr: their standard errors (e.g. ``Estimate.stderr``).
        reference: the exact values; ``None`` or ``nan`` marks a component whose exact value is
            unknown. Anything ``float()`` accepts works (SymPy numbers included).
        false_failure_rate: :math:`\alpha`, the two-sided probability that a correct estimate
            is reported as disagreeing.

    Returns:
        An object array of the broadcast shape holding ``True``, ``False``, or ``None`` where
        the reference is unknown. ``all(a is not False for a in result)`` accepts unknowns;
        ``result.all()`` does not (None is falsy).

    >>> agrees([1.0, 2.0, 3.0], [0.1, 0.1, 0.1], [1.2, None, 4.0])
    array([True, None, False], dtype=object)
    """
    z = z_for_rate(false_failure_rate)
    return _within(estimate_mean, stderr, reference, z)


def variance_agrees(estimate, exact_variance, *, false_failure_rate=1e-6) -> np.ndarray:
    r"""Which components satisfy :math:`|s^2 - \sigma^2| \le z_\alpha \, \mathrm{SE}(s^2)`.

    ``estimate`` is an :class:`~numeric.Estimate` computed with ``moments=4``; its
    ``variance_stderr`` assumes a finite fourth moment, so check
    :func:`~numeric.variance_is_stable` too when the estimator may be heavy-tailed.
    Returns ``True``/``False``/``None`` per component as :func:`agrees` does.
    """
    if estimate.variance_stderr is None:
        raise NumericError(_NEEDS_MOMENTS4.format(field="variance_stderr"))
    z = z_for_rate(false_failure_rate)
    return _within(estimate.variance, estimate.variance_stderr, exact_variance, z)


def _within(value, stderr, reference, z) -> np.ndarray:
    """``|value - reference| <= z * stderr`` as True/False, None where the reference is nan."""
    value, stderr = np.asarray(value, dtype=float), np.asarray(stderr, dtype=float)
    reference = _as_reference(reference)
    if not np.isfinite(value).all():
        raise NumericError(_BAD_VALUE.format(value=value))
    if not (np.isfinite(stderr).all() and (stderr >= 0).all()):
        raise NumericError(_BAD_STDERR.format(value=stderr))
    try:
        value, stderr, reference = np.broadcast_arrays(value, stderr, reference)
    except ValueError:
        shapes = (value.shape, stderr.shape, reference.shape)
        raise NumericError(_BAD_SHAPES.format(shapes=shapes)) from None
    rounding = ROUNDING_ULPS * np.finfo(float).eps * np.fmax(np.abs(value), np.abs(reference))
    result = np.asarray(np.abs(value - reference) <= z * stderr + rounding).astype(object)
    result[np.isnan(reference)] = None
    return result


def _as_reference(reference) -> np.ndarray:
    """``reference`` as floats, with ``None`` turned into ``nan`` (unknown)."""
    try:
        return np.asarray(reference, dtype=float)
    except (TypeError, ValueError) as error:
        raise NumericError(_BAD_REFERENCE.format(value=reference, error=error)) from None
