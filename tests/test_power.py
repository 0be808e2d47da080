"""Measured false-failure rate and power of numeric.testing, and the power of `mcgrad verify`.

False failures: the assertions of numeric.testing run on correct estimators (every estimator
derive writes for one problem per family; references from derive, never typed) and count the
failures, against the stated rate; the z-scores of the runs are compared with the normal law
they are calibrated on. Power: a catalog of wrong derivations (a dropped factor, a flipped sign,
a dropped term, sigma for sigma**2, a score without the baseline correction it claims, the
3 mu**3 slip, a pathwise estimator on a discontinuous f) must each be caught.

By default a few runs per estimator (seconds); with HYPOTHESIS_PROFILE=thorough the sweeps marked
slow run 10**4 assertions. As a script it prints the report of docs/verification.md:

    python tests/test_power.py --runs 10000 --power-runs 1000

Statistical assertions here: a default-profile test that runs r assertions gives each the rate
1e-6 / r (Bonferroni), so the test's own false-failure rate is at most 1e-6. Power checks use
points where the bias is at least 12 standard errors beyond the threshold at the smallest n
(MIN_SAMPLES), so a miss has probability below 1e-9 per run.
"""

import argparse
import math
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import derive  # noqa: E402
from derive._verify import verify_claim, verify_estimator  # noqa: E402
from mcgrad._check import setup  # noqa: E402
from numeric import strategies as mst  # noqa: E402
from numeric._catalog import FAMILIES  # noqa: E402
from numeric.testing import (assert_unbiased, assert_unbiased_sequential,  # noqa: E402
                             assert_variance, recording)

# One problem per family at a representative point: (family, f, params).
CORRECT = [
    ("normal", "z**4", {"mu": 1.0, "sigma": 1.0}),
    ("lognormal", "z", {"mu": 0.5, "sigma": 0.5}),
    ("laplace", "z**2", {"mu": 1.0, "b": 1.0}),
    ("logistic", "z**2", {"mu": 1.0, "s": 1.0}),
    ("gumbel", "z", {"mu": 1.0, "beta": 1.0}),
    ("cauchy", "cos(z)", {"mu": 1.0, "gamma": 1.0}),
    ("exponential", "z**2", {"lam": 2.0}),
    ("weibull", "z", {"lam": 1.0, "k": 2.0}),
    ("uniform", "z**2", {"a": 0.0, "b": 1.0}),
    ("kumaraswamy", "z", {"a": 2.0, "b": 3.0}),
]
NO_MEAN = {("cauchy", "pathwise")}  # d/dgamma: h = -eps sin(gamma eps + mu), E|h| infinite
VARIANCE_FAMILIES = ("normal", "lognormal", "gumbel", "exponential", "weibull", "uniform")
"""Families whose estimators' variances derive finds in closed form within a second or so."""

ASSERTIONS = {"assert_unbiased": assert_unbiased,
              "assert_unbiased_sequential": assert_unbiased_sequential,
              "assert_variance": assert_variance}


@dataclass(frozen=True)
class Case:
    """A correct estimator with its exact mean (and exact variance, where closed)."""

    name: str
    fn: object
    params: dict
    gradient: tuple
    variance: tuple | None


@lru_cache(maxsize=None)
def correct_cases(with_variance: bool = False) -> tuple:
    """Every estimator derive writes for the CORRECT problems, with references from derive."""
    out = []
    for family, f, params in CORRECT:
        s = setup(family, f, params={k: repr(v) for k, v in params.items()})
        p = s.problem
        grad = derive.exact_gradient(p, budget=1.0)
        at = derive.gradient_at(p, grad, s.values)
        reference = tuple(at[w].value for w in p.wrt)
        for kind, make in derive.ESTIMATORS.items():
            est = make(p)
            if not est.applies or (family, kind) in NO_MEAN:
                continue
            fn = derive.numpy_estimator(est)
            kwargs = {k: float(v) for k, v in params.items() if k in fn.parameters}
            variance = (_closed_variances(est, grad, s.values)
                        if with_variance and family in VARIANCE_FAMILIES else None)
            out.append(Case(f"{kind} {family} E[{f}]", fn, kwargs, reference, variance))
    return tuple(out)


def _closed_variances(est, grad, values):
    exact = derive.variances(est, grad, budget=1.0)
    if any(e.expr is None or e.conditions for e in exact):
        return None
    return tuple(float(derive.evaluate(e.expr, values)) for e in exact)


@dataclass
class Tally:
    """Failures and z-scores of many runs of one assertion."""

    assertion: str
    rate: float
    runs: int = 0
    failures: int = 0
    z_beyond_3: int = 0
    z_count: int = 0
    seconds: float = 0.0
    failed: tuple = ()

    @property
    def upper95(self) -> float:
        """One-sided 95% upper bound on the failure rate (exact binomial; 3/runs at 0)."""
        if self.failures == 0:
            return 1 - 0.05 ** (1 / self.runs)
        low, high = self.failures / self.runs, 1.0
        for _ in range(60):
            mid = (low + high) / 2
            if _binomial_cdf(self.failures, self.runs, mid) > 0.05:
                low = mid
            else:
                high = mid
        return high


def _binomial_cdf(k, n, p):
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def false_failures(assertion: str, runs: int, rate: float = 1e-6, seed0: int = 0) -> Tally:
    """Run ``assertion`` ``runs`` times over the correct estimators (round robin, seeds from
    ``seed0``) and count failures; z of component 0 of each run is tallied (|z| > 3)."""
    cases = correct_cases(with_variance=assertion == "assert_variance")
    if assertion == "assert_variance":
        cases = tuple(c for c in cases if c.variance is not None)
    tally, check = Tally(assertion, rate), ASSERTIONS[assertion]
    start = time.perf_counter()
    with recording() as measured:
        for i in range(runs):
            case = cases[i % len(cases)]
            reference = case.variance if assertion == "assert_variance" else case.gradient
            try:
                check(case.fn, reference, seed=seed0 + i, false_failure_rate=rate, **case.params)
            except AssertionError:
                tally.failures += 1
                tally.failed += ((case.name, seed0 + i),)
            tally.runs += 1
    tally.seconds = time.perf_counter() - start
    for m in measured:
        if m.z and math.isfinite(m.z[0]):
            tally.z_count += 1
            tally.z_beyond_3 += abs(m.z[0]) > 3
    return tally


# -- the power catalog -------------------------------------------------------------------------


def _normal(rng, m, mu, sigma):
    return mu + sigma * rng.standard_normal(m)


def dropped_factor(rng, m, *, mu, sigma):
    """d/dmu E[z**2] by pathwise, writing z for 2z."""
    return _normal(rng, m, mu, sigma)


def flipped_sign(rng, m, *, mu, sigma):
    """d/dsigma E[cos 2z] by the score function with the sign flipped."""
    z = _normal(rng, m, mu, sigma)
    return -np.cos(2 * z) * ((z - mu) ** 2 / sigma**3 - 1 / sigma)


def dropped_term(rng, m, *, mu, sigma):
    """d/dmu E[mu z] by the score function without the d f / d mu term (z)."""
    z = _normal(rng, m, mu, sigma)
    return mu * z * (z - mu) / sigma**2


def sigma_for_sigma2(rng, m, *, mu, sigma):
    """d/dmu E[exp z] by the score function with (z - mu)/sigma for (z - mu)/sigma**2."""
    z = _normal(rng, m, mu, sigma)
    return np.exp(z) * (z - mu) / sigma


def no_baseline_correction(rng, m, *, mu, sigma):
    """d/dmu E[z**2] with control variate z: (f - z) score + d/dmu E[z], the +1 forgotten."""
    z = _normal(rng, m, mu, sigma)
    return (z * z - z) * (z - mu) / sigma**2


def right_estimator_for_the_slip(rng, m, *, mu, sigma):
    """d/dmu E[z**4] by pathwise, 4 z**3: right; the reference 3 mu**3 + 12 mu sigma**2 is not."""
    z = _normal(rng, m, mu, sigma)
    return 4 * z * z * z


def pathwise_on_a_jump(rng, m, *, mu, sigma):
    """d/dmu E[(z + 1)(z > 0)] by pathwise: d/dz of the integrand, (z > 0); misses the jump."""
    return (_normal(rng, m, mu, sigma) > 0).astype(float)


@dataclass(frozen=True)
class Wrong:
    """A wrong derivation: as a NumPy estimator (for assert_unbiased) and as text (for
    ``mcgrad verify``: ``option`` is "claim" or "estimator"), with its fix."""

    name: str
    f: str
    wrt: str
    fn: object
    params: dict
    option: str
    wrong: str
    right: str
    claimed_reference: str | None = None  # the slip: the estimator is right, the reference wrong


WRONG = [
    Wrong("dropped factor", "z**2", "mu", dropped_factor, {"mu": 1.5, "sigma": 1.0},
          "estimator", "z", "2*z"),
    Wrong("flipped sign", "cos(2*z)", "sigma", flipped_sign, {"mu": 0.5, "sigma": 0.5},
          "estimator", "-cos(2*z)*((z - mu)**2/sigma**3 - 1/sigma)",
          "cos(2*z)*((z - mu)**2/sigma**3 - 1/sigma)"),
    Wrong("dropped term", "mu*z", "mu", dropped_term, {"mu": 1.5, "sigma": 1.0},
          "estimator", "mu*z*(z - mu)/sigma**2", "mu*z*(z - mu)/sigma**2 + z"),
    Wrong("sigma for sigma**2", "exp(z)", "mu", sigma_for_sigma2, {"mu": 0.0, "sigma": 0.5},
          "estimator", "exp(z)*(z - mu)/sigma", "exp(z)*(z - mu)/sigma**2"),
    Wrong("score without the baseline correction it claims", "z**2", "mu",
          no_baseline_correction, {"mu": 1.5, "sigma": 1.0}, "estimator",
          "(z**2 - z)*(z - mu)/sigma**2", "(z**2 - z)*(z - mu)/sigma**2 + 1"),
    Wrong("the 3 mu**3 slip (a wrong reference)", "z**4", "mu", right_estimator_for_the_slip,
          {"mu": 2.0, "sigma": 1.0}, "claim", "3*mu**3 + 12*mu*sigma**2",
          "4*mu**3 + 12*mu*sigma**2", claimed_reference="3*mu**3 + 12*mu*sigma**2"),
    Wrong("pathwise estimator on a discontinuous f", "(z + 1)*(z > 0)", "mu", pathwise_on_a_jump,
          {"mu": 0.0, "sigma": 1.0}, "estimator", "z > 0", "(z + 1)*(z > 0)*(z - mu)/sigma**2"),
]
"""Each under Normal(mu, sigma)."""

# Claims in other families, for verify only: (name, family, f, wrt, wrong, right).
WRONG_CLAIMS = [
    ("dropped factor", "exponential", "z**2", "lam", "-2/lam**3", "-4/lam**3"),
    ("dropped term", "uniform", "z**2", "b", "a/3 + b/3", "a/3 + 2*b/3"),
    ("wrong Gamma argument", "weibull", "z", "lam", "gamma(1/k)", "gamma(1 + 1/k)"),
    ("flipped sign", "cauchy", "cos(z)", "mu", "exp(-gamma)*sin(mu)", "-exp(-gamma)*sin(mu)"),
    ("sigma for sigma**2", "lognormal", "z", "mu", "exp(mu + sigma/2)", "exp(mu + sigma**2/2)"),
    ("dropped factor", "laplace", "z**2", "b", "2*b", "4*b"),
]


@lru_cache(maxsize=None)
def _problem(family, f, wrt):
    return setup(family, f, wrt=[wrt]).problem


def reference_for(w: Wrong, params: dict) -> float:
    """The exact gradient at params from derive, or for the slip the (wrong) claimed value."""
    p = _problem("normal", w.f, w.wrt)
    values = {s: derive.exact_number(params[s.name]) for s in p.family.symbols}
    if w.claimed_reference is not None:
        return float(derive.evaluate(derive.parse(w.claimed_reference, p.family), values))
    return derive.gradient_at(p, _exact_gradient(w.f, w.wrt), values)[p.wrt[0]].value


@lru_cache(maxsize=None)
def _exact_gradient(f, wrt):
    """Closed form where derive finds one in its time budget, else quadrature at each point."""
    return derive.exact_gradient(_problem("normal", f, wrt))


def detection(w: Wrong, runs: int, *, random_params=False, seed0=0, rate=1e-6) -> tuple:
    """(caught, runs) of assert_unbiased on the wrong estimator over seeds (and, with
    ``random_params``, parameters drawn uniformly from the strategies' default ranges)."""
    draw = np.random.default_rng(seed0)
    caught = 0
    for i in range(runs):
        params = dict(w.params)
        if random_params:
            mu, sigma = FAMILIES["normal"]
            params = {"mu": round(draw.uniform(*mu.default), 4),
                      "sigma": round(draw.uniform(*sigma.default), 4)}
        try:
            assert_unbiased(w.fn, reference_for(w, params), seed=seed0 + i,
                            false_failure_rate=rate, **params)
        except AssertionError:
            caught += 1
    return caught, runs


def verify_catches(family, f, wrt, option, text) -> str:
    """The verdict of `mcgrad verify` on the text."""
    p = _problem(family, f, wrt)
    check = verify_claim if option == "claim" else verify_estimator
    return check(p, None, text).verdict


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("w", WRONG, ids=[w.name for w in WRONG])
def test_each_wrong_derivation_is_caught_by_verify_and_by_assert_unbiased(w):
    """3 seeds at the representative point: each run's bias is >= 12 SE past the threshold at
    n >= MIN_SAMPLES, so a miss has probability < 1e-9 (see _bias_in_standard_errors)."""
    assert verify_catches("normal", w.f, w.wrt, w.option, w.wrong) == "refuted"
    assert verify_catches("normal", w.f, w.wrt, w.option, w.right) == "confirmed"
    assert detection(w, 3) == (3, 3)
    assert _bias_in_standard_errors(w) > 12 + 5.5


@pytest.mark.parametrize("name, family, f, wrt, wrong, right", WRONG_CLAIMS,
                         ids=[f"{c[0]}-{c[1]}" for c in WRONG_CLAIMS])
def test_wrong_claims_across_families_are_refuted_and_their_fixes_confirmed(
        name, family, f, wrt, wrong, right):
    assert verify_catches(family, f, wrt, "claim", wrong) == "refuted"
    assert verify_catches(family, f, wrt, "claim", right) == "confirmed"


def _bias_in_standard_errors(w: Wrong, n=100_000) -> float:
    """|E h - reference| / (sd(h) / sqrt(n)), with E h and sd(h) from 2e5 samples (their own
    error is a few percent, far inside the margin asserted)."""
    h = w.fn(np.random.default_rng(1), 200_000, **w.params)
    return abs(h.mean() - reference_for(w, w.params)) / (h.std() / math.sqrt(n))


@pytest.mark.parametrize("assertion", list(ASSERTIONS))
def test_correct_estimators_across_the_catalog_pass_every_assertion(assertion):
    """One run per estimator (about 19; 12 with closed-form variances), each at 1e-6 / runs."""
    cases = correct_cases(with_variance=assertion == "assert_variance")
    runs = sum(1 for c in cases if assertion != "assert_variance" or c.variance is not None)
    tally = false_failures(assertion, runs, rate=1e-6 / runs, seed0=1000)
    assert tally.failures == 0, tally.failed


@given(mst.seeds(), mst.problems(families=("normal", "gumbel", "exponential", "uniform"),
                                 kinds=("polynomial", "loglik"), max_degree=2))
def test_derived_estimators_of_drawn_problems_pass_assert_unbiased(seed, case):
    """Property: for drawn problems, both estimators derive writes are unbiased for derive's
    exact gradient. Each assertion gets 1e-6 / (2 * max_examples), so the test (every example
    Hypothesis runs) fails a correct pipeline with probability at most 1e-6."""
    s = setup(case.family, case.f, params={k: repr(v) for k, v in case.params.items()})
    grad = derive.exact_gradient(s.problem, budget=1.0)
    at = derive.gradient_at(s.problem, grad, s.values)
    reference = [at[w].value for w in s.problem.wrt]
    rate = 1e-6 / (2 * settings().max_examples)
    for make in derive.ESTIMATORS.values():
        fn = derive.numpy_estimator(make(s.problem))
        kwargs = {k: v for k, v in case.params.items() if k in fn.parameters}
        assert_unbiased(fn, reference, seed=seed, false_failure_rate=rate, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("assertion", list(ASSERTIONS))
def test_false_failure_rate_over_ten_thousand_runs(assertion):
    """10**4 runs at the default rate 1e-6: under the stated rate P(>= 3 failures) < 2e-7."""
    tally = false_failures(assertion, 10_000)
    print(f"\n{assertion}: {tally.failures} failures in {tally.runs} runs; |z| > 3 in "
          f"{tally.z_beyond_3} of {tally.z_count} (normal: {0.0027 * tally.z_count:.1f})")
    assert tally.failures <= 2, tally.failed


@pytest.mark.slow
@pytest.mark.parametrize("w", WRONG, ids=[w.name for w in WRONG])
def test_detection_rate_over_a_thousand_seeds(w):
    """At the representative point every one of 1000 runs catches the error (miss < 1e-9 each)."""
    caught, runs = detection(w, 1000)
    print(f"\n{w.name}: caught {caught} of {runs}")
    assert caught == runs


# -- the report ------------------------------------------------------------------------------


def report(runs: int, power_runs: int) -> str:
    lines = [f"False failures (correct estimators, {len(correct_cases())} of them across the "
             f"10 families; stated rate 1e-6 per assertion)", "",
             "| assertion | runs | failures | 95% upper bound | \\|z\\| > 3 (normal law) | time |",
             "|---|---|---|---|---|---|"]
    for assertion in ASSERTIONS:
        t = false_failures(assertion, runs)
        expected = 0.0027 * t.z_count
        lines.append(f"| `{assertion}` | {t.runs:,} | {t.failures} | {t.upper95:.1e} | "
                     f"{t.z_beyond_3} of {t.z_count:,} ({expected:.0f} expected) | "
                     f"{t.seconds:.0f} s |")
    lines += ["", f"Power (wrong derivations under Normal(mu, sigma); `assert_unbiased` over "
                  f"{power_runs} seeds at the representative point, and over {power_runs} "
                  f"draws of (mu, sigma) from the default strategy ranges)", "",
              "| wrong derivation | `mcgrad verify` | at the point | bias / SE at n = 1e5 | "
              "random parameters |", "|---|---|---|---|---|"]
    for w in WRONG:
        verdict = verify_catches("normal", w.f, w.wrt, w.option, w.wrong)
        fixed = detection(w, power_runs)
        drawn = detection(w, power_runs, random_params=True, seed0=10**6)
        lines.append(f"| {w.name} | {verdict} | {fixed[0]}/{fixed[1]} "
                     f"({_show_params(w.params)}) | {_bias_in_standard_errors(w):.0f} | "
                     f"{drawn[0]}/{drawn[1]} |")
    slip = next(w for w in WRONG if w.claimed_reference)
    at_one = Wrong(**{**slip.__dict__, "params": {"mu": 1.0, "sigma": 1.0}})
    caught = detection(at_one, power_runs)
    lines.append(f"| {slip.name}, at optax's point | refuted | {caught[0]}/{caught[1]} "
                 f"({_show_params(at_one.params)}) | {_bias_in_standard_errors(at_one):.0f} | - |")
    for name, family, f, wrt, wrong, _ in WRONG_CLAIMS:
        verdict = verify_catches(family, f, wrt, "claim", wrong)
        lines.append(f"| {name} ({family}, E[{f}], d/d{wrt}) | {verdict} | - | - | - |")
    return "\n".join(lines)


def _show_params(params):
    return ", ".join(f"{k}={v:g}" for k, v in params.items())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--power-runs", type=int, default=100)
    args = parser.parse_args()
    print(report(args.runs, args.power_runs))
