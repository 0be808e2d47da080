"""Property tests: over every family, random valid parameters and a strategy of integrands, the
Monte Carlo estimates agree with the exact quantities derived symbolically.

Statistics. Each assertion compares an estimate with an exact value at z = 4.89 standard
errors, which a correct estimator exceeds with probability 1e-6 (two-sided, normal
approximation): the false-failure rate of every assertion below is at most 1e-6. The standard
error of a mean comes from the EXACT per-sample variance (a heavy-tailed sample underestimates
it); that of an estimated variance from the sample's fourth moment, used only where the engine
shows E[h**4] to be finite. Examples whose exact quantities are missing or infinite (Cauchy
with a polynomial, exp(c z) beyond the moment-generating function's domain) are skipped with
``assume``, never compared. Seeds are drawn by Hypothesis, so a failure replays and shrinks.

Cost. Each (family, integrand template) is analysed once (coefficients are symbols, given values
per example); the default profile runs a few examples, HYPOTHESIS_PROFILE=thorough many.
"""

import math
from functools import lru_cache

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

import derive
import numeric

RATE = 1e-6
Z_SCORE = numeric.z_for_rate(RATE)
EXAMPLES = max(4, settings().max_examples // 3)

PARAMS = {  # ranges of valid parameters, away from where moments stop existing
    "normal": {"mu": (-2, 2), "sigma": (0.3, 2)},
    "lognormal": {"mu": (-1, 1), "sigma": (0.2, 0.6)},
    "laplace": {"mu": (-2, 2), "b": (0.3, 1.5)},
    "logistic": {"mu": (-2, 2), "s": (0.3, 1.5)},
    "gumbel": {"mu": (-2, 2), "beta": (0.3, 1.5)},
    "cauchy": {"mu": (-2, 2), "gamma": (0.3, 1.5)},
    "exponential": {"lam": (0.5, 3)},
    "weibull": {"lam": (0.5, 2), "k": (1.2, 3)},
    "uniform": {"a": (-2, 1), "b": (1.2, 3)},
    "kumaraswamy": {"a": (1.2, 3), "b": (1.2, 3)},
}

TEMPLATES = {  # integrand, ranges of its coefficients
    "polynomial": ("c1*z + c2*z**2", {"c1": (-2, 2), "c2": (-1, 1)}),
    "exp": ("exp(c1*z)", {"c1": (-0.4, 0.4)}),
    "trig": ("sin(c1*z + c2)", {"c1": (0.2, 2), "c2": (-1.5, 1.5)}),
    "softplus": ("softplus(c1*z + c2)", {"c1": (-2, 2), "c2": (-1, 1)}),
    "loglik": ("-(x - z)**2/(2*c1**2)", {"x": (-2, 2), "c1": (0.5, 2)}),  # log N(x | z, c1)
    "bump": ("1/(1 + c1*z**2)", {"c1": (0.2, 2)}),
}

SUITED = {name: tuple(TEMPLATES) for name in PARAMS}
SUITED["cauchy"] = ("trig", "bump")  # no polynomial moment exists under Cauchy noise
SUITED["lognormal"] = ("polynomial", "trig", "softplus", "loglik", "bump")  # E[exp(c e^x)] = oo


def _number(bounds):
    lo, hi = bounds
    return st.integers(round(lo * 1000), round(hi * 1000)).map(lambda i: i / 1000)


@st.composite
def problems(draw, families=tuple(PARAMS), params=PARAMS):
    """(family, template, values by name, seed)."""
    name = draw(st.sampled_from(families))
    template = draw(st.sampled_from(SUITED[name]))
    values = {k: draw(_number(b)) for k, b in params[name].items()}
    values.update({k: draw(_number(b)) for k, b in TEMPLATES[template][1].items()})
    return name, template, values, draw(st.integers(0, 2**32 - 1))


# Beyond the base-noise families: implicit reparameterization and discrete families (score
# function only). Shape parameters stay where the templates' moments exist (studentt nu >= 9:
# E[h**4] of a degree-2 polynomial's estimators is finite).
BEYOND = {
    "gamma": {"alpha": (0.8, 4), "beta": (0.8, 3)},
    "beta": {"a": (0.8, 4), "b": (0.8, 4)},
    "studentt": {"nu": (9, 20), "mu": (-1, 1), "sigma": (0.5, 1.5)},
    "bernoulli": {"p": (0.1, 0.9)},
    "categorical3": {"l1": (-1, 1), "l2": (-1, 1), "l3": (-1, 1)},
    "poisson": {"lam": (0.5, 4)},
    "geometric": {"p": (0.2, 0.8)},
    "binomial": {"p": (0.1, 0.9), "n": (7, 7)},
}
SUITED.update({name: tuple(TEMPLATES) for name in BEYOND})
SUITED["gamma"] = ("polynomial", "exp", "loglik", "bump")
SUITED["studentt"] = ("polynomial", "loglik", "bump")  # trig: minutes of oscillatory quadrature
SUITED["geometric"] = ("polynomial", "trig", "loglik", "bump")  # exp(c z): diverges for some p


@lru_cache(maxsize=None)
def _analysis(name, template):
    fam = derive.family(name)
    text, coefficients = TEMPLATES[template]
    f = derive.parse(text, fam, extra=tuple(coefficients))
    wrt = None if fam.discrete else fam.params  # binomial's n is fixed, not differentiated
    return derive.analyze(derive.problem(fam, f, wrt=wrt), budget=0, steps=False)


@lru_cache(maxsize=None)
def _sampler(name, template, kind):
    return derive.numpy_estimator(_analysis(name, template).estimators[kind])


def _run(fn, n, seed, values, **options):
    return numeric.estimate(fn, n, seed=seed, **{k: values[k] for k in fn.parameters}, **options)


@settings(max_examples=EXAMPLES)
@given(problems())
def test_both_estimators_agree_with_the_exact_gradient(case):
    """|mean - exact| <= 4.89 SE, SE = sqrt(exact Var h / n): false-failure rate 1e-6 each."""
    _check_gradient(case)


def _check_gradient(case):
    name, template, values, seed = case
    a = _analysis(name, template)
    at = a.at(values)
    n = 40_000
    compared = 0
    for kind, est in a.estimators.items():
        if not est.applies:
            continue
        run = _run(_sampler(name, template, kind), n, seed, values)
        for j, w in enumerate(a.problem.wrt):
            exact, variance = at.gradient[w], at.variances[kind][j]
            if exact.value is None or variance.value is None:
                continue
            se = math.sqrt(max(variance.value, 0.0) / n)
            note(f"{kind} d/d{w}: mean {run.mean[j]}, exact {exact.value}, SE {se}")
            assert numeric.agrees(run.mean[j], se, exact.value, false_failure_rate=RATE).item()
            compared += 1
    assume(compared > 0)


def _score_of_one(name):
    """The score-function estimator of f = 1: grad log q, plus the boundary term where the
    support moves (then it is 0: the Leibniz-corrected identity E[grad log q] + boundary = 0)."""
    fam = derive.family(name)
    p = derive.Problem(fam, sp.Integer(1), tuple(fam.params))
    return derive.score_function(p)


@lru_cache(maxsize=None)
def _fisher(name):
    """E[(d/dw log q)**2] for each w: closed form where the engine has one, else None."""
    est = _score_of_one(name)
    out = []
    for h in est.in_base:
        c = derive.closed_form(sp.expand(h**2), est.problem.family.base, budget=0)
        out.append(None if c is None or c.conditions else c.value)
    return tuple(out)


@settings(max_examples=EXAMPLES)
@given(problems())
def test_the_score_has_mean_zero_by_monte_carlo(case):
    """E_q[grad log q] = 0: |mean| <= 4.89 SE with SE from the exact Fisher information (closed
    form, else quadrature): false-failure rate 1e-6 per parameter."""
    name, _, values, seed = case
    est = _score_of_one(name)
    fam = est.problem.family
    params = {fam.param(k): v for k, v in values.items() if k in fam.param_names}
    n = 20_000
    run = _run(derive.numpy_estimator(est), n, seed, values)
    for j, (h, closed) in enumerate(zip(est.in_base, _fisher(name))):
        if closed is not None:
            second = derive.evaluate(closed, params)
        else:
            second = derive.quad_expectation(h**2, fam.base, params)
        se = math.sqrt(float(second) / n)
        assert numeric.agrees(run.mean[j], se, 0.0, false_failure_rate=RATE).item()


def _fourth_moment_is_finite(a, kind, j, values):
    """Whether E[h_j**4] < oo, by the engine: the rules' closed form, else quadrature (whose
    integrability probes raise MomentError for a divergent integral)."""
    est = a.estimators[kind]
    h = est.in_base[j]
    fam = a.problem.family
    if fam.base is None:  # implicit or discrete: the family's own expectation (h in z)
        return _fourth_moment_without_noise(a.problem, est.components[j], values)
    symbols = {s.name: s for s in h.free_symbols}
    exact = {symbols[k]: derive.exact_number(v) for k, v in values.items() if k in symbols}
    try:
        c = derive.closed_form(sp.expand(h**4), fam.base, budget=0)
        if c is not None and not c.conditions:
            return mpmath.isfinite(derive.evaluate(c.value, exact))
        derive.probe_integrability(h**4, fam.base, exact)  # MomentError when it diverges
        return True
    except derive.DeriveError:  # MomentError (infinite) or a quadrature that cannot be trusted
        return False


def _fourth_moment_without_noise(p, h, values):
    fam = p.family
    symbols = {s.name: s for s in fam.symbols | (h.free_symbols - {derive.Z})}
    exact = {symbols[k]: derive.exact_number(v) for k, v in values.items() if k in symbols}
    try:
        c = derive.expectation(p, sp.expand(h**4), budget=0)
        if c.infinite:
            return False
        if c.expr is not None and not c.conditions:
            return mpmath.isfinite(derive.evaluate(c.expr, exact))
        if fam.discrete:
            return mpmath.isfinite(derive._discrete.second_moment_at(fam, h**2, exact)[0])
        return mpmath.isfinite(derive._implicit.quad_at(fam, h**4, exact))
    except derive.DeriveError:
        return False


@settings(max_examples=EXAMPLES)
@given(problems())
def test_the_estimated_variance_agrees_with_the_exact_one(case):
    """|s**2 - Var h| <= 4.89 SE(s**2), SE(s**2) = sqrt((m4 - s**4 (n-3)/(n-1))/n): false-failure
    rate 1e-6 per component, where E[h**4] is finite (checked by the engine)."""
    _check_variance(case)


def _check_variance(case):
    name, template, values, seed = case
    a = _analysis(name, template)
    at = a.at(values)
    n = 100_000
    compared = 0
    for kind, est in a.estimators.items():
        if not est.applies:
            continue
        usable = [j for j, v in enumerate(at.variances[kind])
                  if v.value is not None and _fourth_moment_is_finite(a, kind, j, values)]
        if not usable:
            continue
        run = _run(_sampler(name, template, kind), n, seed, values, moments=4)
        exact = [at.variances[kind][j].value if j in usable else None
                 for j in range(len(a.problem.wrt))]
        note(f"{kind}: estimated {run.variance}, exact {exact}, SE {run.variance_stderr}")
        verdicts = numeric.variance_agrees(run, exact, false_failure_rate=RATE)
        assert all(v is not False for v in verdicts), verdicts
        compared += len(usable)
    assume(compared > 0)


@pytest.mark.slow
@settings(max_examples=200)
@given(problems(families=("cauchy", "kumaraswamy", "weibull", "gumbel", "logistic")))
def test_families_without_many_closed_forms_agree_too(case):
    """The heavy sweep over the families that lean on quadrature (thorough profile only)."""
    _check_gradient(case)


@settings(max_examples=EXAMPLES)
@given(problems(families=tuple(BEYOND), params=BEYOND))
def test_implicit_and_discrete_estimators_agree_with_the_exact_gradient(case):
    """gamma, beta, studentt (implicit pathwise and score) and the discrete families (score):
    |mean - exact| <= 4.89 SE with the exact variance: false-failure rate 1e-6 each."""
    _check_gradient(case)


@settings(max_examples=EXAMPLES)
@given(problems(families=tuple(BEYOND), params=BEYOND))
def test_implicit_and_discrete_variances_agree_with_the_exact_ones(case):
    """As test_the_estimated_variance_agrees_with_the_exact_one, for these families."""
    _check_variance(case)


def test_the_strategy_covers_every_family():
    assert set(PARAMS) == set(derive.CATALOG)
    assert set(BEYOND) == set(derive.IMPLICIT_CATALOG) | (
        set(derive.DISCRETE_CATALOG) - {"categorical"}) | {"categorical3"}
    for name, ranges in {**PARAMS, **BEYOND}.items():
        assert set(ranges) == set(derive.family(name).param_names)
