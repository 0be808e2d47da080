"""Tests of the estimators: textbook forms, refusals, unbiasedness, and exact variances checked
along an independent route (quadrature of h**2 in the base noise)."""

import mpmath
import pytest
import sympy as sp

import derive
import mcgrad
from derive import Z

FAMILIES = sorted(derive.CATALOG)


def _problem(name, text, wrt=None):
    fam = derive.family(name)
    return derive.problem(fam, derive.parse(text, fam), wrt)


@pytest.mark.parametrize("text", ["cos(2*z)", "z**3 - z", "exp(z/2)", "-(x - z)**2/2"])
def test_normal_estimators_have_the_textbook_forms(text):
    """Score: f (z - mu)/sigma**2 and f ((z - mu)**2/sigma**3 - 1/sigma); pathwise: f'(z) and
    f'(z) eps at z = mu + sigma eps (Mohamed et al. 2020, sections 4 and 5)."""
    p = _problem("normal", text)
    mu, sigma = p.family.params
    eps = p.family.base.symbol
    f = p.f
    score = derive.score_function(p).components
    assert sp.simplify(score[0] - f * (Z - mu) / sigma**2) == 0
    assert sp.simplify(score[1] - f * ((Z - mu)**2 / sigma**3 - 1 / sigma)) == 0
    fprime = sp.diff(f, Z).xreplace({Z: mu + sigma * eps})
    path = derive.pathwise(p).components
    assert sp.simplify(path[0] - fprime) == 0
    assert sp.simplify(path[1] - fprime * eps) == 0


def test_an_f_that_depends_on_phi_adds_its_own_gradient_to_the_score():
    p = _problem("normal", "mu*z**2")
    mu, sigma = p.family.params
    h = derive.score_function(p).components[0]
    assert sp.simplify(h - (mu * Z**2 * (Z - mu) / sigma**2 + Z**2)) == 0


@pytest.mark.parametrize("text, culprit", [("sign(z)", "sign"), ("Heaviside(z - 1)", "Heaviside"),
                                           ("floor(3*z)", "floor"), ("z > 0.5", "Piecewise"),
                                           ("z**2*(z <= 1)", "Piecewise")])
def test_the_pathwise_estimator_is_refused_for_a_discontinuous_f(text, culprit):
    p = _problem("normal", text)
    est = derive.pathwise(p)
    assert not est.applies and est.components == ()
    assert "discontinuous" in est.refused and culprit in est.refused
    assert "score-function" in est.refused
    assert derive.score_function(p).applies
    with pytest.raises(ValueError, match="does not apply"):
        derive.numpy_estimator(est)


@pytest.mark.parametrize("text", ["z**2", "exp(z)", "cos(3*z)"])
def test_the_uniform_score_includes_the_boundary_term_and_is_unbiased(text):
    p = _problem("uniform", text)
    est = derive.score_function(p)
    assert any("boundary term" in note for note in est.notes)
    grad = derive.exact_gradient(p, budget=0)
    for w, h in zip(p.wrt, est.components):
        mean = derive.expectation(p, h, budget=0)
        assert mean.method == "closed-form" and grad[w].method == "closed-form"
        assert sp.simplify(mean.expr - grad[w].expr) == 0
        without = derive.expectation(p, h - _boundary(p, w), budget=0)
        assert sp.simplify(without.expr - grad[w].expr) != 0  # the term is needed


def _boundary(p, w):
    """f(b) q(b) db/dw - f(a) q(a) da/dw with q = 1/(b - a)."""
    a, b = p.family.params
    return (p.f.xreplace({Z: b}) * sp.diff(b, w) - p.f.xreplace({Z: a}) * sp.diff(a, w)) / (b - a)


def test_the_score_of_a_moving_support_is_refused_when_f_blows_up_at_the_end():
    p = _problem("uniform", "1/(z - a)")
    est = derive.score_function(p)
    assert not est.applies and "moving end" in est.refused


VALUES = {
    "normal": {"mu": 0.3, "sigma": 1.7}, "lognormal": {"mu": -0.2, "sigma": 0.6},
    "laplace": {"mu": 0.4, "b": 0.8}, "logistic": {"mu": -0.5, "s": 1.3},
    "gumbel": {"mu": 0.2, "beta": 0.9}, "cauchy": {"mu": 0.1, "gamma": 0.7},
    "exponential": {"lam": 1.6}, "weibull": {"lam": 1.2, "k": 1.8},
    "uniform": {"a": -0.4, "b": 1.3}, "kumaraswamy": {"a": 2.5, "b": 1.5},
}


@pytest.mark.parametrize("name", FAMILIES)
def test_the_score_has_mean_zero(name):
    """E_q[grad log q] = 0 where the support is fixed; for uniform, whose support moves, the
    Leibniz boundary term makes up the difference: E_q[grad log q] + boundary = 0."""
    fam = derive.family(name)
    values = {fam.param(k): v for k, v in VALUES[name].items()}
    for w in fam.params:
        score = sp.diff(fam.log_density, w)
        e = derive.expectation(fam, score, budget=0)
        if name == "uniform":
            a, b = fam.params
            boundary = (sp.diff(b, w) - sp.diff(a, w)) / (b - a)  # f = 1 at both ends
            assert sp.simplify(e.expr + boundary) == 0
        elif e.expr is not None:
            assert sp.simplify(e.expr) == 0
        else:
            value = derive.quad_expectation(derive.to_base(score, fam), fam.base, values)
            assert abs(value) < 1e-15


VARIANCE_CASES = [
    ("normal", "cos(2*z)"), ("normal", "z**3"), ("lognormal", "z"), ("laplace", "z**2"),
    ("laplace", "cos(z)"), ("logistic", "exp(z/3)"), ("gumbel", "exp(z/2)"),
    ("cauchy", "cos(2*z)"), ("cauchy", "1/(1 + z**2)"), ("exponential", "cos(2*z) + z"),
    ("weibull", "z**2"), ("uniform", "exp(z)"), ("kumaraswamy", "z**2"),
]


@pytest.mark.parametrize("name, text", VARIANCE_CASES)
def test_exact_variances_equal_the_second_moment_minus_the_squared_gradient(name, text):
    """Var h from the engine (closed form where it has one) against E[h**2] - grad**2 with both
    terms by quadrature in the base noise, grad by differencing the quadrature of E_q[f]."""
    p = _problem(name, text)
    a = derive.analyze(p, budget=0, steps=False)
    values = {p.family.param(k): v for k, v in VALUES[name].items()}
    at = a.at(values)
    checked = 0
    for kind, est in a.estimators.items():
        for w, h, number in zip(p.wrt, est.in_base, at.variances[kind]):
            if number.infinite:
                with pytest.raises(derive.MomentError):
                    derive.quad_expectation(h**2, p.family.base, values)
                continue
            assert number.value is not None, number.missing
            with mpmath.workdps(30):
                second = derive.quad_expectation(h**2, p.family.base, values)
                mean = derive.quad_expectation(h, p.family.base, values)
                reference = second - mean**2
            assert abs(number.value - reference) <= 1e-9 * max(1, abs(reference))
            assert abs(at.gradient[w].value - mean) <= 1e-9 * max(1, abs(mean))
            checked += 1
    assert checked >= 2


def test_some_closed_form_variances_exist_for_each_kind_of_noise():
    for name, text in [("normal", "cos(2*z)"), ("cauchy", "cos(2*z)"), ("exponential", "z**2"),
                       ("uniform", "exp(z)"), ("gumbel", "exp(z/2)")]:
        a = derive.analyze(_problem(name, text), budget=0, steps=False)
        assert any(v.method == "closed-form" for vs in a.variances.values() for v in vs), name


def test_cauchy_with_z_squared_has_no_exact_value_and_no_verdict():
    report = mcgrad.check("cauchy", "z**2", {"mu": 0.1, "gamma": 0.7},
                          samples=2000, seed=3, budget=0)
    for entry in report["gradient"].values():
        assert entry["exact"] is None and entry["exact_method"] == "none"
        for kind in ("score", "pathwise"):
            assert entry[kind]["agrees"] is None
            assert entry[kind]["variance_exact"] is None
    assert any("does not exist" in note for note in report["_notes"])


def test_a_refused_estimator_has_no_variance():
    p = _problem("normal", "Heaviside(z)")
    a = derive.analyze(p, budget=0, steps=False)
    assert a.variances["pathwise"] == ()
    at = a.at({"mu": 0.2, "sigma": 1.1})
    assert at.variances["pathwise"] == ()
    mu, sigma = p.family.params
    exact = sp.exp(-mu**2 / (2 * sigma**2)) / (sp.sqrt(2 * sp.pi) * sigma)  # d/dmu P(z > 0)
    value = float(exact.subs({mu: sp.Rational(1, 5), sigma: sp.Rational(11, 10)}))
    assert at.gradient[mu].value == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize("text", ["exp(-abs(z))", "abs(z)", "sqrt(z**2 + 1)*sign(z)"])
def test_the_noise_form_keeps_symbols_that_may_be_negative(text):
    """Uniform(a, b) with a < 0 < b: the boundary term f(a) q(a) is a function of a that may be
    negative, so Abs(a) must stay Abs(a) in the form in the base noise (force=True in powdenest
    took every symbol positive and turned exp(-Abs(a)) into exp(-a): a biased estimator)."""
    p = _problem("uniform", text)
    est = derive.score_function(p)
    a, b = p.family.params
    point = {a: sp.Rational(-737, 1000), b: sp.Rational(1243, 1000), derive.EPS: sp.Rational(1, 3)}
    u = next(iter(est.in_base[0].free_symbols - {a, b}))
    for z_form, noise_form in zip(est.components, est.in_base):
        at_z = z_form.xreplace({Z: a + point[derive.EPS] * (b - a)}).xreplace(point)
        at_noise = noise_form.xreplace({u: point[derive.EPS]}).xreplace(point)
        assert abs(sp.N(at_z - at_noise, 30)) < 1e-25, (z_form, noise_form)
