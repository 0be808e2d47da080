"""Tests of numeric.estimate: exact moments, chunk invariance, bounded memory, errors.

Every statistical assertion states its false-failure rate (at most 1e-6, split over the checks of
a test by Bonferroni) and uses a fixed seed, or a seed drawn by Hypothesis.
"""

import math
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numeric
from numeric import NumericError

ROOT = Path(__file__).resolve().parent.parent


def normals(rng, m, *, loc, scale):
    """Independent N(loc_j, scale_j^2) columns, drawn in one call (chunk-size invariant)."""
    return loc + scale * rng.standard_normal((m, len(loc)))


def z_bonferroni(checks, rate=1e-6):
    """Two-sided z for ``checks`` assertions sharing a total false-failure rate ``rate``."""
    return numeric.z_for_rate(rate / checks)


def test_mean_and_variance_match_exact_values_of_normal_samples():
    """N(loc, scale^2) samples: |mean - loc| <= z SE and |s^2 - scale^2| <= z SE(s^2), exact SEs.

    SE(mean) = scale / sqrt(n); for normal samples Var(s^2) = 2 scale^4 / (n - 1).
    False-failure rate 1e-6 over the 4 checks.
    """
    loc, scale, n = np.array([3.0, -1.0]), np.array([2.0, 0.5]), 200_003
    est = numeric.estimate(normals, n, seed=11, loc=loc, scale=scale)
    z = z_bonferroni(4)
    assert np.all(np.abs(est.mean - loc) <= z * scale / math.sqrt(n))
    assert np.all(np.abs(est.variance - scale**2) <= z * scale**2 * math.sqrt(2 / (n - 1)))
    np.testing.assert_allclose(est.stderr, np.sqrt(est.variance / n), rtol=1e-15)
    assert est.mean.shape == est.variance.shape == est.stderr.shape == (2,)
    assert (est.n, est.seed) == (n, 11)


def test_variance_survives_an_offset_a_million_times_the_spread():
    """Exponential(1) + 1e8: mean 1e8 + 1, variance 1, which a one-pass sum of squares destroys.

    For Exponential(1), mu_4 = 9, so Var(s^2) ~ (9 - 1) / n. False-failure rate 1e-6 over 2 checks
    (the rounding of 1e8 + x to a multiple of 1.5e-8 is far below the tolerance).
    """
    def shifted_exponential(rng, m):
        return 1e8 + rng.standard_exponential(m)

    n = 200_003
    est = numeric.estimate(shifted_exponential, n, seed=5)
    z = z_bonferroni(2)
    assert abs(est.mean[0] - (1e8 + 1)) <= z / math.sqrt(n)
    assert abs(est.variance[0] - 1.0) <= z * math.sqrt(8 / n)


def test_variance_stderr_matches_the_exact_standard_error_of_normal_variances():
    """With moments=4, variance_stderr estimates sqrt(2 sigma^4 / (n - 1)) for normal samples.

    Delta method: the estimate is sqrt(g / n) with g = m_4 - s^4 (to O(1/n)); for normal samples
    Var(g) ~ (96 - 4*12 + 4*2) sigma^8 / n = 56 sigma^8 / n and g -> 2 sigma^4, so the relative
    standard deviation of variance_stderr is sqrt(56) / (2 * 2 * sqrt(n)) = 1.87 / sqrt(n).
    False-failure rate 1e-6 over 2 columns.
    """
    loc, scale, n = np.array([0.0, 10.0]), np.array([1.0, 3.0]), 200_003
    est = numeric.estimate(normals, n, seed=3, moments=4, loc=loc, scale=scale)
    exact = scale**2 * math.sqrt(2 / (n - 1))
    relative_sd = math.sqrt(56) / 4 / math.sqrt(n)
    assert np.all(np.abs(est.variance_stderr / exact - 1) <= z_bonferroni(2) * relative_sd)


def direct_moments(x):
    """Two-pass moments of a whole (n, k) sample, the reference for the streamed ones."""
    n = x.shape[0]
    d = x - x.mean(axis=0)
    m2, m4 = (d**2).sum(axis=0), (d**4).sum(axis=0)
    variance = m2 / (n - 1)
    var_of_var = (m4 / n - variance**2 * (n - 3) / (n - 1)) / n
    share = (d**2).max(axis=0) / m2
    return x.mean(axis=0), variance, np.sqrt(np.maximum(var_of_var, 0)), share


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 3000), chunk_size=st.integers(1, 4000), seed=st.integers(0, 2**63))
def test_streamed_moments_equal_the_moments_of_all_draws_at_once(n, chunk_size, seed):
    """Chan/Pébay merging over chunks reproduces two-pass moments of the whole (skewed) sample."""
    def skewed(rng, m):
        return rng.standard_exponential((m, 2)) * [1.0, 50.0] + [0.0, 1e3]

    est = numeric.estimate(skewed, n, seed=seed, chunk_size=chunk_size, moments=4)
    all_draws = skewed(np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed))), n)
    mean, variance, variance_stderr, share = direct_moments(all_draws)
    np.testing.assert_allclose(est.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(est.variance, variance, rtol=1e-9)
    np.testing.assert_allclose(est.variance_stderr, variance_stderr, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(est.largest_share, share, rtol=1e-8)


@pytest.mark.parametrize("moments", [2, 4])
def test_chunk_size_does_not_change_the_estimate(moments):
    """One array draw per call gives the same stream for any chunk size; only rounding differs."""
    loc, scale = np.array([3.0, -7.0]), np.array([2.0, 0.1])
    results = [
        numeric.estimate(normals, 200_003, seed=7, chunk_size=size, moments=moments,
                         loc=loc, scale=scale)
        for size in (1000, 4097, 65536)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other.mean, results[0].mean, rtol=1e-12)
        np.testing.assert_allclose(other.variance, results[0].variance, rtol=1e-12)


def test_same_seed_replays_and_different_seeds_differ():
    loc, scale = np.array([0.0]), np.array([1.0])
    first, again, other = (numeric.estimate(normals, 10_000, seed=seed, loc=loc, scale=scale)
                           for seed in (1, 1, 2))
    assert np.array_equal(first.mean, again.mean)
    assert np.array_equal(first.variance, again.variance)
    assert not np.array_equal(first.mean, other.mean)


def peak_traced_bytes(n, chunk_size):
    def standard_normals(rng, m):
        return rng.standard_normal(m)

    tracemalloc.start()
    try:
        numeric.estimate(standard_normals, n, seed=0, chunk_size=chunk_size)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_chunk_size_not_by_n():
    """5e6 samples in chunks of 65536 (512 KB each) peak below 3 MB, as 5e5 samples do."""
    small, large = peak_traced_bytes(500_000, 65536), peak_traced_bytes(5_000_000, 65536)
    assert large < 3 * 2**20
    assert large < small + 2**16


def test_row_major_integer_and_float32_outputs_are_accepted():
    """Outputs that need a copy (row-major, non-float64) give the moments of their values."""
    def integers(rng, m):
        return rng.integers(0, 10, size=(m, 3))

    est = numeric.estimate(integers, 5000, seed=4, chunk_size=999)
    draws = integers(np.random.default_rng(4), 5000).astype(float)
    np.testing.assert_allclose(est.mean, draws.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(est.variance, draws.var(axis=0, ddof=1), rtol=1e-12)

    def singles(rng, m):
        return rng.standard_normal((m, 2), dtype=np.float32)

    est = numeric.estimate(singles, 5000, seed=4, chunk_size=999)
    draws = singles(np.random.default_rng(4), 5000).astype(float)
    np.testing.assert_allclose(est.mean, draws.mean(axis=0), rtol=1e-10)


def test_estimator_parameters_may_be_named_n_or_fn():
    def binomial(rng, m, *, n, p):
        return rng.binomial(n, p, size=m)

    est = numeric.estimate(binomial, 1000, seed=0, n=10, p=0.5)
    assert est.n == 1000 and 3 < est.mean[0] < 7


def test_estimate_is_immutable():
    est = numeric.estimate(normals, 100, seed=0, loc=np.zeros(1), scale=np.ones(1))
    with pytest.raises(AttributeError):
        est.n = 5
    with pytest.raises(ValueError):
        est.mean[0] = 1.0


def nan_at(sample, value=np.nan):
    """An estimator whose per-sample value number ``sample`` (counting from 0) is ``value``."""
    drawn = 0

    def estimator(rng, m):
        nonlocal drawn
        x = rng.standard_normal((m, 2))
        if drawn <= sample < drawn + m:
            x[sample - drawn, 1] = value
        drawn += m
        return x

    return estimator


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_and_name_the_sample_and_chunk(value):
    with pytest.raises(NumericError, match=r"sample 70000 \(row 4464 of chunk 1, column 1\)"
                       r".*outside its domain.*overflowed"):
        numeric.estimate(nan_at(70_000, value), 200_000, seed=0, chunk_size=65536)


def test_non_finite_values_raise_with_fourth_moments_too():
    with pytest.raises(NumericError, match="sample 3"):
        numeric.estimate(nan_at(3), 100, seed=0, moments=4)


def test_overflowing_values_raise_and_suggest_rescaling():
    def huge(rng, m):
        return 1e300 * rng.standard_normal(m)

    with pytest.raises(NumericError, match="overflowed float64.*rescale"):
        numeric.estimate(huge, 1000, seed=0)


def test_errors_inside_the_estimator_are_annotated_with_the_chunk():
    def failing(rng, m):
        failing.calls += 1
        if failing.calls == 3:
            raise ZeroDivisionError("boom")
        return rng.standard_normal(m)

    failing.calls = 0
    with pytest.raises(ZeroDivisionError) as info:
        numeric.estimate(failing, 1000, seed=0, chunk_size=100)
    assert "chunk 2 (samples 200 to 299)" in "".join(info.value.__notes__)


def returning(shape_of_m, dtype=float):
    """An estimator returning zeros of shape ``shape_of_m(m)``."""
    def estimator(rng, m):
        return np.zeros(shape_of_m(m), dtype=dtype)

    return estimator


def columns_growing(rng, m):
    columns_growing.calls = getattr(columns_growing, "calls", 0) + 1
    return np.zeros((m, columns_growing.calls))


def ok(rng, m):
    return rng.standard_normal(m)


BAD_ARGUMENTS = [
    # (fn, n, options, message pattern)
    (ok, 0, {}, r"n must be at least 2, got 0"),
    (ok, 1, {}, r"n must be at least 2.*two samples"),
    (ok, -5, {}, r"n must be at least 2"),
    (ok, 1e6, {}, r"n must be an integer.*float.*int\(1e6\)"),
    (ok, 2.5, {}, r"n must be an integer"),
    (ok, "100", {}, r"n must be an integer.*str"),
    (ok, True, {}, r"n must be an integer.*bool"),
    (ok, 100, {"chunk_size": 0}, r"chunk_size must be at least 1"),
    (ok, 100, {"chunk_size": -1}, r"chunk_size must be at least 1"),
    (ok, 100, {"chunk_size": 1000.0}, r"chunk_size must be an integer"),
    (ok, 100, {"seed": None}, r"seed must be a non-negative integer.*seed=0"),
    (ok, 100, {"seed": -1}, r"seed must be a non-negative integer"),
    (ok, 100, {"seed": 1.5}, r"seed must be a non-negative integer"),
    (ok, 100, {"moments": 3}, r"moments must be 2 .* or 4"),
    (ok, 100, {"moments": True}, r"moments must be 2"),
    ("ok", 100, {}, r"fn must be a per-sample estimator fn\(rng, m, \*\*params\)"),
    (returning(lambda m: m + 1), 100, {}, r"shape \(101,\) for m=100.*rng.standard_normal\(m\)"),
    (returning(lambda m: (m, 2, 3)), 100, {}, r"shape \(100, 2, 3\).*\(100,\) or \(100, k\)"),
    (returning(lambda m: (2, m)), 100, {}, r"shape \(2, 100\) for m=100"),
    (returning(lambda m: (m, 0)), 100, {}, r"shape \(100, 0\).*k >= 1"),
    (returning(lambda m: ()), 100, {}, r"shape \(\) for m=100"),
    (returning(lambda m: m, complex), 100, {}, r"dtype complex128.*real and imaginary"),
    (returning(lambda m: m, bool), 100, {}, r"dtype bool.*real numbers"),
    (returning(lambda m: m, object), 100, {}, r"dtype object"),
    (columns_growing, 100, {"chunk_size": 50}, r"returned 2 columns on chunk 1 but 1 on earlier"),
]


@pytest.mark.parametrize("fn, n, options, message", BAD_ARGUMENTS)
def test_bad_arguments_raise_a_helpful_error(fn, n, options, message):
    options = {"seed": 0, **options}
    if fn is columns_growing:
        columns_growing.calls = 0
    with pytest.raises(NumericError, match=message):
        numeric.estimate(fn, n, **options)


def test_numeric_error_is_a_value_error():
    assert issubclass(NumericError, ValueError)


def test_public_names_are_exactly_all():
    public = {name for name in dir(numeric)
              if not name.startswith("_") and not isinstance(getattr(numeric, name), type(numeric))}
    assert public == set(numeric.__all__)


BLOCK_SYMPY = textwrap.dedent("""
    import sys

    class BlockSympy:
        def find_spec(self, name, path=None, target=None):
            if name == "sympy" or name.startswith("sympy."):
                raise ImportError("sympy is blocked: numeric must not import it")
            return None

    sys.meta_path.insert(0, BlockSympy())
    import numeric

    def standard_normals(rng, m):
        return rng.standard_normal(m)

    est = numeric.estimate(standard_normals, 10_000, seed=0, moments=4)
    numeric.agrees(est.mean, est.stderr, [0.0])
    numeric.variance_is_stable(est)
    assert not any(name.split(".")[0] == "sympy" for name in sys.modules), "sympy was imported"
    print("ok")
""")


def test_numeric_runs_without_sympy():
    """numeric imports and runs an estimate when any import of sympy raises ImportError."""
    result = subprocess.run([sys.executable, "-c", BLOCK_SYMPY], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
