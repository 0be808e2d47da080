"""Tests of numeric.testing (assertions) and numeric.pytest_plugin.

Every assertion under test states its false-failure rate (1e-6, the default) and runs with a fixed
seed or one drawn by Hypothesis; tests that expect a failure use estimators whose bias is at least
40 standard errors at the sample size chosen, so they cannot pass by chance either.
"""

import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

import numeric
from numeric import NumericError
from numeric import strategies as mst
from numeric.testing import (MIN_SAMPLES, PILOT_SAMPLES, assert_unbiased,
                             assert_unbiased_sequential, assert_variance, recording)

ROOT = Path(__file__).resolve().parent.parent


def pathwise(rng, m, *, mu, sigma):
    """d/dmu E[z**2] = 2 mu and d/dsigma E[z**2] = 2 sigma, z = mu + sigma eps: 2z, 2z eps."""
    eps = rng.standard_normal(m)
    out = np.empty((2, m))
    np.multiply(2.0, mu + sigma * eps, out=out[0])
    np.multiply(out[0], eps, out=out[1])
    return out.T


def score(rng, m, *, mu, sigma):
    """Score-function estimator of the same gradient: z**2 * d/dphi log q(z)."""
    z = mu + sigma * rng.standard_normal(m)
    u = (z - mu) / sigma
    return np.stack([z * z * u / sigma, z * z * (u * u - 1) / sigma], axis=1)


def my_exact_gradient(mu, sigma):
    return [2.0 * mu, 2.0 * sigma]


def dropped_factor(rng, m, *, mu, sigma):
    """Wrong: z instead of 2z (half the gradient)."""
    return mu + sigma * rng.standard_normal(m)


def cauchy_noise(rng, m, *, mu, sigma):
    """'Unbiased' in location, but no mean and no variance: must never pass."""
    return 2.0 * mu + sigma * rng.standard_cauchy(m)


@given(mst.seeds(), mst.normal_params())
def test_my_estimator(seed, params):
    """The README example, verbatim: a correct estimator passes for drawn seeds and parameters
    (false-failure rate 1e-6 per example)."""
    assert_unbiased(pathwise, reference=my_exact_gradient(**params), seed=seed, **params)


@given(mst.seeds(), mst.normal_params(sigma=mst.st.floats(0.5, 2.0)))
def test_score_function_estimator_passes_with_more_samples_than_pathwise(seed, params):
    """Sample sizes follow the variance: the score-function run is longer (rate 1e-6 each)."""
    with recording() as measured:
        assert_unbiased(pathwise, my_exact_gradient(**params), seed=seed, **params)
        assert_unbiased(score, my_exact_gradient(**params), seed=seed, **params)
    assert measured[1].n >= measured[0].n


def test_a_wrong_estimator_fails_with_everything_needed_to_replay_it():
    params = dict(mu=1.5, sigma=2.0)
    with pytest.raises(AssertionError) as failure:
        assert_unbiased(dropped_factor, 3.0, seed=7, **params)
    text = str(failure.value)
    for needed in ("estimate", "reference", "std. error", "z", "n = ", "seed 7",
                   "numeric.estimate(fn,", "probability at most 1e-06"):
        assert needed in text, needed
    n = int(re.search(r"n = ([\d,]+) samples", text).group(1).replace(",", ""))
    replay = numeric.estimate(dropped_factor, n, seed=7, moments=4, **params)
    assert f"{replay.mean[0]:.8g}" in text


def test_the_sample_size_is_chosen_to_detect_the_stated_relative_bias():
    """n = ((z + z_0.99) s / (delta |ref|))**2 from the pilot: check it against the formula with
    the true s (the pilot's s is within 5% of it; the test allows 25%)."""
    sd = 10.0

    def noisy(rng, m):
        return 1.0 + sd * rng.standard_normal(m)

    with recording() as measured:
        assert_unbiased(noisy, 1.0, seed=3, relative_bias=0.1)
    z = numeric.z_for_rate(1e-6 / 3)
    expected = ((z + 2.3263) * sd / 0.1) ** 2
    assert abs(measured[0].n / expected - 1) < 0.25
    assert measured[0].detectable[0] < 0.12


def test_without_variance_the_smallest_run_is_used_and_a_wrong_constant_fails():
    with recording() as measured:
        assert_unbiased(lambda rng, m: np.full(m, 2.5), 2.5, seed=0)
    assert measured[0].n == MIN_SAMPLES
    with pytest.raises(AssertionError):
        assert_unbiased(lambda rng, m: np.full(m, 2.5), 2.5 + 1e-9, seed=0)


@pytest.mark.parametrize("seed", range(5))
def test_an_infinite_variance_estimator_never_passes_by_luck(seed):
    """Cauchy noise: the largest sample holds ~60% of the sum of squares at any n; it holds less
    than the 10% that lets the deciding run through in about 4 of 10**4 runs (fixed seeds here,
    so the test is deterministic)."""
    with pytest.raises(AssertionError, match="does not stabilise") as failure:
        assert_unbiased(cauchy_noise, 2.0, seed=seed, mu=1.0, sigma=1.0)
    assert "infinite variance" in str(failure.value)
    with pytest.raises(AssertionError, match="does not stabilise"):
        assert_unbiased_sequential(cauchy_noise, 2.0, seed=seed, mu=1.0, sigma=1.0)


def test_a_heavy_but_finite_variance_estimator_is_rerun_with_more_samples_not_failed():
    """Lognormal(0, 1.2) samples are flagged at small n with sizeable probability but have
    finite variance; with the rerun the assertion passes (rate 1e-6)."""
    def lognormal(rng, m):
        return np.exp(1.2 * rng.standard_normal(m))

    mean = math.exp(1.2**2 / 2)
    for seed in range(3):
        assert_unbiased(lognormal, mean, seed=seed)


def test_variance_assertion_passes_for_the_exact_variance_and_fails_for_a_wrong_one():
    """Var(2z) = 4 sigma**2 and Var(2 z eps) = 4(mu**2 + 2 sigma**2) for eps ~ N(0, 1)."""
    mu, sigma = 0.5, 1.5
    exact = [4 * sigma**2, 4 * (mu**2 + 2 * sigma**2)]
    assert_variance(pathwise, exact, seed=11, mu=mu, sigma=sigma)
    with pytest.raises(AssertionError, match="per-sample variance"):
        assert_variance(pathwise, [4 * sigma, exact[1]], seed=11, mu=mu, sigma=sigma)


def test_sequential_stops_early_on_clear_answers():
    params = dict(mu=1.5, sigma=2.0)
    with recording() as measured:
        assert_unbiased_sequential(pathwise, my_exact_gradient(**params), seed=5, **params)
        with pytest.raises(AssertionError, match="look 1 of"):
            assert_unbiased_sequential(dropped_factor, 3.0, seed=5, **params)
    assert measured[0].passed and measured[0].n < 200_000
    assert not measured[1].passed and measured[1].n == 20_000


def test_a_scalar_reference_applies_to_every_component():
    def two(rng, m):
        return rng.standard_normal((m, 2))

    assert_unbiased(two, 0.0, seed=1, n=50_000)
    with pytest.raises(NumericError, match="3 components but the estimator returns k = 2"):
        assert_unbiased(two, [0.0, 0.0, 0.0], seed=1, n=50_000)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(seed=1.5), "seed must be a non-negative integer"),
    (dict(seed=0, n=1.5), "n must be an integer"),
    (dict(seed=0, n=1), "n must be at least 2"),
    (dict(seed=0, false_failure_rate=0.0), "false_failure_rate must be a probability"),
    (dict(seed=0, false_failure_rate=0.7), "false_failure_rate must be a probability"),
    (dict(seed=0, relative_bias=0.0), "relative_bias must be a number in"),
    (dict(seed=0, relative_bias=True), "relative_bias must be a number in"),
    (dict(seed=0, max_n=10), "max_n must be an integer of at least"),
    (dict(seed=0, reference=float("nan")), "must be a finite number"),
    (dict(seed=0, reference=None), "must be a finite number"),
    (dict(seed=0, reference="4*mu"), "must be a finite number"),
    (dict(seed=0, fn=3), "fn must be a per-sample estimator"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_raise_a_numeric_error_that_says_what_to_write(kwargs, message):
    kwargs = dict(kwargs)
    fn = kwargs.pop("fn", lambda rng, m: rng.standard_normal(m))
    reference = kwargs.pop("reference", 0.0)
    with pytest.raises(NumericError, match=re.escape(message)):
        assert_unbiased(fn, reference, **kwargs)


def test_bad_expected_variance_is_refused():
    with pytest.raises(NumericError, match="non-negative"):
        assert_variance(lambda rng, m: rng.standard_normal(m), -1.0, seed=0)


BLOCK_SYMPY = textwrap.dedent("""
    import sys, warnings
    class BlockSympy:
        def find_spec(self, name, path=None, target=None):
            if name == "sympy" or name.startswith("sympy."):
                raise ImportError("sympy is blocked: numeric must not import it")
            return None
    sys.meta_path.insert(0, BlockSympy())
    from hypothesis import given, settings
    from numeric import strategies as mst
    from numeric.testing import assert_unbiased, assert_variance, assert_unbiased_sequential

    def est(rng, m, *, mu, sigma):
        return 2.0 * (mu + sigma * rng.standard_normal(m))

    assert_unbiased(est, 3.0, seed=0, mu=1.5, sigma=2.0)
    assert_unbiased_sequential(est, 3.0, seed=0, mu=1.5, sigma=2.0)
    assert_variance(est, 16.0, seed=0, mu=1.5, sigma=2.0)
    @settings(max_examples=20, database=None)
    @given(mst.seeds(), mst.problems())
    def draws(seed, case):
        assert seed >= 0 and isinstance(case.f, str)
        if case.family == "uniform":
            assert case.params["a"] < case.params["b"]

    draws()
    assert not any(name.split(".")[0] == "sympy" for name in sys.modules), "sympy was imported"
    print("ok")
""")


def test_numeric_testing_and_strategies_run_without_sympy():
    result = subprocess.run([sys.executable, "-c", BLOCK_SYMPY], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


PLUGIN_TEST = textwrap.dedent("""
    import numpy as np
    from numeric.testing import assert_unbiased

    def est(rng, m, *, mu):
        return 2.0 * mu + rng.standard_normal((m, 2))

    def test_uses_the_fixtures(mc_rng, mc_seed):
        assert isinstance(mc_rng, np.random.Generator) and mc_seed >= 0
        assert_unbiased(est, [2.0, 2.0], seed=mc_seed, mu=1.0)
""")


def _pytest_in(tmp_path, conftest, *args):
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_user.py").write_text(PLUGIN_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)


def test_the_plugin_is_opt_in_and_reports_the_measured_variances(tmp_path):
    on = _pytest_in(tmp_path, 'pytest_plugins = ["numeric.pytest_plugin"]\n')
    assert on.returncode == 0, on.stdout + on.stderr
    assert "Monte Carlo assertions (numeric.testing)" in on.stdout
    row = next(line for line in on.stdout.splitlines() if line.startswith("test_user.py"))
    assert "est" in row and "mean" in row and "yes" in row
    off = _pytest_in(tmp_path, "")
    assert off.returncode != 0 and "fixture 'mc_rng' not found" in off.stdout
    assert "Monte Carlo assertions" not in off.stdout


def test_the_plugin_seed_is_fixed_per_test_and_can_be_overridden(tmp_path):
    a = _pytest_in(tmp_path, 'pytest_plugins = ["numeric.pytest_plugin"]\n', "--mc-seed", "12")
    assert a.returncode == 0, a.stdout + a.stderr
    assert "100,000" in a.stdout
    import zlib
    assert zlib.crc32(b"test_user.py::test_uses_the_fixtures") >= 0


def test_measurements_are_recorded_only_inside_recording():
    def est(rng, m):
        return rng.standard_normal(m)

    with recording() as measured:
        assert_unbiased(est, 0.0, seed=2, n=PILOT_SAMPLES)
    assert_unbiased(est, 0.0, seed=2, n=PILOT_SAMPLES)
    assert len(measured) == 1
    m = measured[0]
    assert (m.assertion, m.function, m.kind, m.passed, m.n, m.seed) == (
        "assert_unbiased", "est", "mean", True, PILOT_SAMPLES, 2)
    assert abs(m.z[0]) <= m.z_limit and m.false_failure_rate == 1e-6
