"""Tests of the families: densities, samplers, constraints and reparametrization.

Every reference here is computed along a route independent of the one tested: the density is
integrated by mpmath in z, the sampler's law by quadrature in the base noise, the chain rule by
differentiating the family's own gradient.
"""

import random

import mpmath
import pytest
import sympy as sp

import derive
from derive import DeriveError, Z

FAMILIES = sorted(derive.CATALOG)

VALUES = {
    "normal": {"mu": 0.3, "sigma": 1.7},
    "lognormal": {"mu": -0.2, "sigma": 0.6},
    "laplace": {"mu": 0.4, "b": 0.8},
    "logistic": {"mu": -0.5, "s": 1.3},
    "gumbel": {"mu": 0.2, "beta": 0.9},
    "cauchy": {"mu": 0.1, "gamma": 0.7},
    "exponential": {"lam": 1.6},
    "weibull": {"lam": 1.2, "k": 1.8},
    "uniform": {"a": -0.4, "b": 1.3},
    "kumaraswamy": {"a": 2.5, "b": 1.5},
}
"""Valid parameters of each family, chosen away from any special value."""

CUTS = {"normal": 0.9, "lognormal": 1.1, "laplace": 0.1, "logistic": 0.7, "gumbel": 0.5,
        "cauchy": -0.6, "exponential": 0.4, "weibull": 1.5, "uniform": 0.2, "kumaraswamy": 0.6}
"""A point c inside each support at which the sampler's CDF is compared with q's."""


def _values(fam, name):
    return {fam.param(k): sp.Rational(str(v)) for k, v in VALUES[name].items()}


def _density(fam, values):
    """q(z) at the values for mpmath; exp(-exp(1e30)) takes mpmath minutes (Gumbel's left tail),
    and below exp(-2000) nothing counts."""
    log_density = sp.lambdify(Z, fam.log_density.xreplace(values), modules="mpmath")

    def fn(z):
        log_q = log_density(z)
        return mpmath.exp(log_q) if log_q > -2000 else mpmath.mpf(0)
    return fn


def test_the_catalog_has_the_families_of_the_issue():
    assert set(FAMILIES) == {"normal", "lognormal", "laplace", "logistic", "gumbel", "cauchy",
                             "exponential", "weibull", "uniform", "kumaraswamy"}
    for name in FAMILIES:
        assert derive.family(name).param_names == tuple(VALUES[name])


@pytest.mark.parametrize("name", FAMILIES)
def test_the_density_integrates_to_one(name):
    fam = derive.family(name)
    values = _values(fam, name)
    lo, hi = (sp.sympify(e).xreplace(values) for e in fam.support)
    fn = _density(fam, values)
    with mpmath.workdps(30):
        ends = [mpmath.mpf(sp.N(e, 30)) if e.is_finite else (mpmath.inf if e > 0 else mpmath.ninf)
                for e in (lo, hi)]
        kinks = [VALUES[name].get("mu", 0), -1, 0, 1]  # Laplace's density has a kink at mu
        middle = sorted({p for p in kinks if ends[0] < p < ends[1]})
        total = mpmath.quad(fn, [ends[0], *middle, ends[1]])
    assert abs(total - 1) < 1e-15


@pytest.mark.parametrize("name", FAMILIES)
def test_the_sampler_pushes_the_base_density_onto_q(name):
    """q(g(eps)) |dg/deps| = p(eps) at random points: the change-of-variables formula."""
    fam = derive.family(name)
    eps = fam.base.symbol
    jacobian = sp.diff(fam.transform, eps)
    pushed = sp.exp(fam.log_density.xreplace({Z: fam.transform})) * sp.Abs(jacobian)
    rng = random.Random(name)
    lo, hi = fam.base.support
    for _ in range(4):
        e = sp.Rational(rng.randint(1, 99), 100)
        if lo == -sp.oo:
            e = 6 * e - 3
        elif hi == sp.oo:
            e = 4 * e
        values = {**_values(fam, name), eps: e}
        difference = derive.evaluate(pushed - fam.base.density, values)
        assert abs(difference) < 1e-25


@pytest.mark.parametrize("name", FAMILIES)
def test_the_sampler_has_the_cdf_of_q(name):
    """P(g(eps) <= c) by quadrature in the base equals the integral of q up to c in z."""
    fam = derive.family(name)
    values = _values(fam, name)
    c = sp.Rational(str(CUTS[name]))
    below = derive.quad_expectation(sp.Heaviside(c - fam.transform), fam.base, values)
    density = _density(fam, values)
    lo = sp.sympify(fam.support[0]).xreplace(values)
    with mpmath.workdps(25):
        start = mpmath.ninf if lo == -sp.oo else mpmath.mpf(sp.N(lo, 25))
        kink = VALUES[name].get("mu", 0)
        mass = mpmath.quad(density, [start, *([kink] if start < kink < c else []),
                                     mpmath.mpf(sp.N(c, 25))])
    assert 0.01 < mass < 0.99
    assert abs(below - mass) < 1e-12


BAD_VALUES = [
    ("normal", {"mu": 0, "sigma": 0}, "sigma > 0"),
    ("normal", {"mu": 0, "sigma": -1.5}, "sigma > 0"),
    ("lognormal", {"mu": 0, "sigma": -0.1}, "sigma > 0"),
    ("laplace", {"mu": 0, "b": 0}, "b > 0"),
    ("logistic", {"mu": 0, "s": -2}, "s > 0"),
    ("gumbel", {"mu": 0, "beta": 0}, "beta > 0"),
    ("cauchy", {"mu": 0, "gamma": -1}, "gamma > 0"),
    ("exponential", {"lam": 0}, "lam > 0"),
    ("weibull", {"lam": 1, "k": -1}, "k > 0"),
    ("weibull", {"lam": -1, "k": 1}, "lam > 0"),
    ("uniform", {"a": 2, "b": 1}, "a < b"),
    ("uniform", {"a": 1, "b": 1}, "a < b"),
    ("kumaraswamy", {"a": 0, "b": 1}, "a > 0"),
    ("kumaraswamy", {"a": 1, "b": -3}, "b > 0"),
]


@pytest.mark.parametrize("name, values, rule", BAD_VALUES)
def test_constraints_reject_bad_values_with_the_rule_and_the_value(name, values, rule):
    fam = derive.family(name)
    with pytest.raises(DeriveError) as info:
        fam.check_values({fam.param(k): v for k, v in values.items()})
    message = str(info.value)
    assert rule in message and name in message and "choose values" in message
    bad = [k for k in values if k in rule]
    assert all(f"{k} = {values[k]}" in message for k in bad)


@pytest.mark.parametrize("name", FAMILIES)
def test_constraints_accept_valid_values(name):
    fam = derive.family(name)
    fam.check_values(_values(fam, name))


def test_an_unknown_family_names_the_choices():
    with pytest.raises(DeriveError, match="unknown family 'nromal'.*normal.*kumaraswamy"):
        derive.family("nromal")


def test_an_unknown_parameter_names_the_parameters():
    with pytest.raises(DeriveError, match="normal has no parameter 'tau'.*mu, sigma"):
        derive.family("normal").param("tau")


def test_each_catalog_call_builds_a_fresh_family():
    a, b = derive.family("normal"), derive.family("normal")
    assert a == b and a.reparametrize(sigma=sp.Integer(2)) != a


def _linked(fam_name, f_text, **exprs):
    """The direct problem, and the one with parameters as expressions of the user's symbols."""
    fam = derive.family(fam_name)
    direct = derive.problem(fam, derive.parse(f_text, fam))
    new = fam.reparametrize(**{k: derive.parse(v, fam, what=k) for k, v in exprs.items()})
    return direct, derive.problem(new, derive.parse(f_text, new))


@pytest.mark.parametrize("f_text", ["cos(2*z)", "z**2 - z"])
def test_reparametrized_gradients_follow_the_chain_rule(f_text):
    """mu = w*x + c, sigma = exp(s): d/dw = x d/dmu, d/dc = d/dmu, d/ds = exp(s) d/dsigma."""
    direct, linked = _linked("normal", f_text, mu="w*x + c", sigma="exp(s)")
    mu, sigma = direct.family.params
    by = {s.name: s for s in linked.family.symbols}
    w, x, c, s = by["w"], by["x"], by["c"], by["s"]
    theta = {mu: w * x + c, sigma: sp.exp(s)}
    grad = derive.exact_gradient(direct, budget=0)
    new = derive.exact_gradient(derive.problem(linked.family, linked.f, wrt=(w, c, s, x)),
                                budget=0)
    d_mu, d_sigma = (grad[p].expr.xreplace(theta) for p in (mu, sigma))
    expected = {w: x * d_mu, c: d_mu, s: sp.exp(s) * d_sigma, x: w * d_mu}
    for sym, value in expected.items():
        assert new[sym].method == "closed-form"
        assert sp.simplify(new[sym].expr - value) == 0


@pytest.mark.parametrize("kind", ["score", "pathwise"])
def test_reparametrized_estimators_follow_the_chain_rule(kind):
    direct, linked = _linked("normal", "exp(z/3)", mu="w*x + c", sigma="exp(s)")
    mu, sigma = direct.family.params
    by = {s.name: s for s in linked.family.symbols}
    w, x, s = by["w"], by["x"], by["s"]
    theta = {mu: w * x + by["c"], sigma: sp.exp(s)}
    old = derive.ESTIMATORS[kind](direct)
    new = derive.ESTIMATORS[kind](derive.problem(linked.family, linked.f, wrt=(w, s)))
    d_mu, d_sigma = (h.xreplace(theta) for h in old.in_base)
    assert sp.simplify(new.in_base[0] - x * d_mu) == 0
    assert sp.simplify(new.in_base[1] - sp.exp(s) * d_sigma) == 0


def test_a_reparametrized_rate_gives_the_chain_rule_for_exponential():
    direct, linked = _linked("exponential", "z**2 + cos(z)", lam="exp(t)")
    (lam,), t = direct.family.params, next(iter(linked.family.symbols))
    grad = derive.exact_gradient(direct, budget=0)[lam].expr
    new = derive.exact_gradient(linked, budget=0)[t].expr
    assert sp.simplify(new - sp.exp(t) * grad.xreplace({lam: sp.exp(t)})) == 0
