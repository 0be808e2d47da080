"""The reference problem of Mohamed, Rosca, Figurnov and Mnih (2020), "Monte Carlo Gradient
Estimation in Machine Learning", JMLR 21(132), figures 2 and 3: eta = grad_theta of
E_{N(x | mu, sigma**2)}[f(x; k)] for theta in {mu, sigma}, at mu = sigma = 1.

Everything derive reports here comes from its symbolic layer; the published closed forms and
table values (copied in /work/shared/reference/mohamed2020-gaussian.md) are what it must
reproduce, compared at the precision at which they were printed.
"""

from decimal import Decimal
from functools import lru_cache

import mpmath
import pytest
import sympy as sp

import derive

FAM = derive.family("normal")
MU, SIGMA = FAM.params
K = sp.Symbol("k", real=True)

COSTS = {"square": "(z - k)**2", "exp": "exp(-k*z**2)", "cos": "cos(k*z)"}

# The published closed forms (the paper's section 3 and appendix; reference note).
PUBLISHED_MEAN = {
    "square": (MU - K)**2 + SIGMA**2,
    "exp": (1 + 2 * K * SIGMA**2) ** sp.Rational(-1, 2) * sp.exp(-K * MU**2 / (1 + 2 * K * SIGMA**2)),
    "cos": sp.exp(-K**2 * SIGMA**2 / 2) * sp.cos(K * MU),
}
PUBLISHED_SQUARE = {
    "gradient": (2 * (MU - K), 2 * SIGMA),
    "score": ((((MU - K)**4 + 14 * SIGMA**2 * (MU - K)**2 + 15 * SIGMA**4) / SIGMA**2),
              2 * ((MU - K)**4 + 30 * SIGMA**2 * (MU - K)**2 + 37 * SIGMA**4) / SIGMA**2),
    "pathwise": (4 * SIGMA**2, 4 * (MU - K)**2 + 8 * SIGMA**2),
}

# The published table at mu = sigma = 1: cost, k, (grad mu, grad sigma), Var SF (mu, sigma),
# Var PW (mu, sigma), as printed.
TABLE = [
    ("square", "-3", ("8", "2"), ("495", "1546"), ("4", "72")),
    ("square", "1", ("0", "2"), ("15", "74"), ("4", "8")),
    ("square", "3", ("-4", "2"), ("87", "346"), ("4", "24")),
    ("exp", "0.1", ("-0.13998", "-0.11665"), ("0.5635", "0.9354"), ("0.01629", "0.02777")),
    ("exp", "1", ("-0.27579", "-0.09193"), ("0.17575", "0.17669"), ("0.21172", "0.17573")),
    ("exp", "10", ("-0.12909", "-0.0061472"), ("0.07694", "0.009035"), ("0.9416", "0.8920")),
    ("cos", "0.5", ("-0.21155", "-0.19362"), ("0.4552", "0.7987"), ("0.03928", "0.08751")),
    ("cos", "1", ("-0.51038", "-0.32771"), ("0.3240", "0.8363"), ("0.2677", "0.3081")),
    ("cos", "5", ("1.79e-5", "-2.64e-5"), ("0.5", "1.0"), ("12.5", "12.5")),
]


@lru_cache(maxsize=None)
def _symbolic(cost):
    """The analysis with k a symbol: closed forms in mu, sigma, k."""
    p = derive.problem(FAM, derive.parse(COSTS[cost], FAM), wrt=(MU, SIGMA))
    return derive.analyze(p, budget=0, steps=False)


@lru_cache(maxsize=None)
def _at(cost, k):
    """The analysis for this k, evaluated exactly at mu = sigma = 1."""
    f = derive.parse(COSTS[cost].replace("k", f"({k})"), FAM)
    a = derive.analyze(derive.problem(FAM, f), budget=0, steps=False)
    return a.at({MU: 1, SIGMA: 1})


def _agrees_as_printed(value, printed):
    """value rounds to the printed number: within half a unit of its last printed digit."""
    exponent = Decimal(printed).as_tuple().exponent
    return abs(Decimal(repr(float(value))) - Decimal(printed)) <= Decimal(5) * Decimal(10) ** (exponent - 1)


@pytest.mark.parametrize("cost", COSTS)
def test_the_mean_of_each_cost_is_the_published_closed_form(cost):
    e = _symbolic(cost).expectation
    assert e.method == "closed-form"
    assert sp.simplify(e.expr - PUBLISHED_MEAN[cost]) == 0


def test_the_square_cost_has_the_published_gradient_and_variances():
    a = _symbolic("square")
    for w, published in zip((MU, SIGMA), PUBLISHED_SQUARE["gradient"]):
        assert sp.simplify(a.gradient[w].expr - published) == 0
    for kind in ("score", "pathwise"):
        for exact, published in zip(a.variances[kind], PUBLISHED_SQUARE[kind]):
            assert exact.method == "closed-form"
            assert sp.simplify(exact.expr - published) == 0


@pytest.mark.parametrize("cost", ["exp", "cos"])
def test_the_gradient_is_the_derivative_of_the_published_mean(cost):
    a = _symbolic(cost)
    for w in (MU, SIGMA):
        assert sp.simplify(a.gradient[w].expr - sp.diff(PUBLISHED_MEAN[cost], w)) == 0


@pytest.mark.parametrize("cost, k, grad, score, path", TABLE, ids=[f"{r[0]}-k={r[1]}" for r in TABLE])
def test_the_published_table_is_reproduced(cost, k, grad, score, path):
    at = _at(cost, k)
    for w, printed in zip((MU, SIGMA), grad):
        assert at.gradient[w].method == "closed-form"
        assert _agrees_as_printed(at.gradient[w].value, printed), (w, at.gradient[w].value)
    for kind, row in (("score", score), ("pathwise", path)):
        for number, printed in zip(at.variances[kind], row):
            assert number.method == "closed-form"
            assert _agrees_as_printed(number.value, printed), (kind, number.value, printed)


def test_the_cosine_pathwise_variance_survives_cancellation():
    """The unsimplified Var PW-mu of cos(5x) is 12.5 - tiny; float substitution gave ~0."""
    at = _at("cos", "5")
    assert at.variances["pathwise"][0].value == pytest.approx(12.5, rel=1e-9)
    p = derive.problem(FAM, derive.parse("cos(5*z)", FAM))
    h = derive.pathwise(p).in_base[0]
    values = {MU: 1, SIGMA: 1}
    with mpmath.workdps(30):
        second = derive.quad_expectation(h**2, FAM.base, values)
        mean = derive.quad_expectation(h, FAM.base, values)
        reference = second - mean**2
    assert at.variances["pathwise"][0].value == pytest.approx(float(reference), rel=1e-13)


def test_neither_estimator_wins_everywhere():
    """The paper's point: the score function has the smaller variance for strongly curved or
    oscillating costs, the pathwise estimator for smooth ones."""
    smooth, curved, wiggly = _at("square", "1"), _at("exp", "10"), _at("cos", "5")
    for at, score_wins in ((smooth, False), (curved, True), (wiggly, True)):
        for s, p in zip(at.variances["score"], at.variances["pathwise"]):
            assert (s.value < p.value) is score_wins
