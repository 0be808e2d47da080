"""Tests of numeric's agreement checks and of the heavy-tail signal.

Every statistical assertion states its false-failure rate (at most 1e-6) and uses a fixed seed.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

import numeric
from numeric import NumericError
from numeric._tails import normal_share_threshold


@pytest.mark.parametrize("rate", [0.3, 1e-2, 1e-6, 1e-12])
def test_z_for_rate_inverts_the_normal_tail(rate):
    """erfc(z / sqrt 2) = P(|Z| > z): the two-sided rate, and twice the one-sided one."""
    two_sided, one_sided = numeric.z_for_rate(rate), numeric.z_for_rate(rate, two_sided=False)
    assert math.erfc(two_sided / math.sqrt(2)) == pytest.approx(rate, rel=1e-6)
    assert math.erfc(one_sided / math.sqrt(2)) / 2 == pytest.approx(rate, rel=1e-6)


def test_z_for_one_in_a_million_is_about_4_89():
    assert numeric.z_for_rate(1e-6) == pytest.approx(4.8916, abs=1e-4)


@pytest.mark.parametrize("rate", [0, 0.5, 1, -1e-3, float("nan"), "1e-6", None, True])
def test_bad_false_failure_rates_raise(rate):
    with pytest.raises(NumericError, match=r"strictly between 0 and 0.5.*1e-6"):
        numeric.z_for_rate(rate)


def test_agrees_is_the_z_standard_error_band():
    z = numeric.z_for_rate(1e-6)
    inside, outside = 1.0 + z * 0.1 * (1 - 1e-9), 1.0 + z * 0.1 * (1 + 1e-9)
    result = numeric.agrees([1.0, 1.0, 1.0], 0.1, [inside, outside, 2.0 - inside])
    assert list(result) == [True, False, True]
    assert all(type(value) is bool for value in result)


def test_a_deterministic_estimate_agrees_up_to_rounding():
    """SE = 0: agreement within 64 ulp, so values computed along different routes still agree."""
    exact = 0.1 + 0.2
    assert list(numeric.agrees([0.3, 0.3 * (1 + 1e-12)], 0.0, exact)) == [True, False]
    est = numeric.estimate(lambda rng, m: np.full((m, 1), 0.3), 10_007, seed=0, chunk_size=999)
    assert list(numeric.agrees(est.mean, est.stderr, exact)) == [True]


def test_a_looser_rate_narrows_the_band():
    assert numeric.agrees(0.0, 1.0, 3.0, false_failure_rate=1e-6).item() is True
    assert numeric.agrees(0.0, 1.0, 3.0, false_failure_rate=1e-2).item() is False


def test_unknown_references_give_none():
    result = numeric.agrees([1.0, 2.0, 3.0, 4.0], [0.1] * 4, [1.0, None, float("nan"), 0.0])
    assert list(result) == [True, None, None, False]
    assert numeric.agrees(1.0, 0.1, None).item() is None


def test_references_accept_anything_float_accepts():
    result = numeric.agrees([0.5, 0.25], [1e-3, 1e-3], [Fraction(1, 2), np.float32(0.25)])
    assert list(result) == [True, True]


@pytest.mark.parametrize("mean, stderr, reference, message", [
    ([1.0], [-0.1], [1.0], r"stderr must be finite and non-negative"),
    ([1.0], [float("nan")], [1.0], r"stderr must be finite"),
    ([float("inf")], [0.1], [1.0], r"estimate must be finite"),
    ([1.0, 2.0], [0.1, 0.1], [1.0, 2.0, 3.0], r"do not broadcast.*\(2,\).*\(3,\)"),
    ([1.0], [0.1], ["one"], r"reference must be numbers, with None or nan"),
])
def test_bad_agreement_arguments_raise(mean, stderr, reference, message):
    with pytest.raises(NumericError, match=message):
        numeric.agrees(mean, stderr, reference)


def normals(rng, m, *, loc, scale):
    return loc + scale * rng.standard_normal((m, len(loc)))


def test_a_correct_estimate_agrees_and_a_shifted_reference_does_not():
    """Reference = the exact mean: fails with rate 5e-7 per column (SE estimated from n = 1e5).

    Reference shifted by 12 exact standard errors: wrongly agrees only if the estimate is 7 SE
    off, probability about 1e-12. Together at most 1e-6 (plus the small error of estimating SE).
    """
    loc, scale, n = np.array([2.0, -3.0]), np.array([1.0, 4.0]), 100_000
    est = numeric.estimate(normals, n, seed=21, loc=loc, scale=scale)
    assert list(numeric.agrees(est.mean, est.stderr, loc, false_failure_rate=5e-7)) == [True, True]
    shifted = loc + 12 * scale / math.sqrt(n)
    assert list(numeric.agrees(est.mean, est.stderr, shifted)) == [False, False]


def test_variance_agrees_with_the_exact_variance_and_not_with_a_wrong_one():
    """s^2 of N(loc, scale^2) within z SE(s^2) of scale^2 (rate 1e-6 per column, 2 columns: the
    assertion uses 5e-7 each); a variance 15 exact SE(s^2) = 15 scale^2 sqrt(2/(n-1)) too large
    wrongly agrees with probability about 1e-14."""
    loc, scale, n = np.array([0.0, 5.0]), np.array([1.0, 0.3]), 100_000
    est = numeric.estimate(normals, n, seed=8, moments=4, loc=loc, scale=scale)
    exact = scale**2
    assert list(numeric.variance_agrees(est, exact, false_failure_rate=5e-7)) == [True, True]
    wrong = exact * (1 + 15 * math.sqrt(2 / (n - 1)))
    assert list(numeric.variance_agrees(est, [wrong[0], None])) == [False, None]


def test_variance_checks_need_fourth_moments():
    est = numeric.estimate(normals, 100, seed=0, loc=np.zeros(1), scale=np.ones(1))
    with pytest.raises(NumericError, match=r"no variance_stderr.*moments=4"):
        numeric.variance_agrees(est, [1.0])
    with pytest.raises(NumericError, match=r"no largest_share.*moments=4"):
        numeric.variance_is_stable(est)


def test_cauchy_samples_are_flagged_as_unstable():
    """One Cauchy sample dominates the sum of squares: share above 0.05 (typically 0.6).

    Miss probability: as n -> inf the ordered squares behave as Gamma_i^-2 (Gamma_i the arrival
    times of a unit Poisson process), and share <= 0.05 needs sum_j (G_1 / G_j)^2 >= 20, which
    needs G_1 of about 15 or more; integrating a simulation of that sum against e^-G_1 gives a
    miss probability of about 8e-8 per column, so at most 2e-7 for both columns here.
    """
    def cauchy(rng, m):
        return rng.standard_cauchy((m, 2))

    est = numeric.estimate(cauchy, 200_003, seed=13, moments=4)
    assert list(numeric.variance_is_stable(est)) == [False, False]
    assert np.all(est.largest_share > 0.05)


def test_normal_samples_are_not_flagged():
    """Flag rate for normal samples is at most false_flag_rate = 1e-6 (union bound, any n)."""
    for n in (10, 1000, 200_003):
        est = numeric.estimate(normals, n, seed=17, moments=4, loc=np.array([1.0, -2.0]),
                               scale=np.array([1.0, 100.0]))
        assert list(numeric.variance_is_stable(est, false_flag_rate=1e-6 / 6)) == [True, True]


def test_the_normal_share_threshold_bounds_the_flag_rate():
    """20000 normal samples of size 20 at false_flag_rate 0.01: each is flagged with probability
    p <= 0.01, so the count is below Binomial(20000, 0.01)'s, which exceeds 282 with probability
    at most exp(-d^2 mu / (2 + d)) = 9e-7 (Chernoff; mu = 200, d = 0.41)."""
    n, reps, rate = 20, 20_000, 0.01
    x = np.random.default_rng(99).standard_normal((reps, n))
    d2 = (x - x.mean(axis=1, keepdims=True)) ** 2
    share = d2.max(axis=1) / d2.sum(axis=1)
    flagged = int(np.sum(share > normal_share_threshold(n, rate)))
    assert flagged <= 282


def test_the_normal_share_threshold_is_about_2_log_n_over_alpha_per_n():
    assert normal_share_threshold(2, 1e-6) == 1.0
    for n in (10**4, 10**6, 10**9):
        approximate = 2 * math.log(n / 1e-6) / n
        assert 0.5 * approximate < normal_share_threshold(n, 1e-6) < 2 * approximate


@pytest.mark.parametrize("options, message", [
    ({"max_share": 0}, r"max_share must be a number in \(0, 1\]"),
    ({"max_share": 1.5}, r"max_share must be a number in \(0, 1\]"),
    ({"max_share": "0.05"}, r"max_share must be a number"),
    ({"false_flag_rate": 0.7}, r"false_flag_rate must be a probability strictly between 0 and 0.5"),
])
def test_bad_stability_arguments_raise(options, message):
    est = numeric.estimate(normals, 100, seed=0, moments=4, loc=np.zeros(1), scale=np.ones(1))
    with pytest.raises(NumericError, match=message):
        numeric.variance_is_stable(est, **options)
