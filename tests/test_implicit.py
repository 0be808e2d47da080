"""Implicit reparameterization (Figurnov, Mohamed, Mnih 2018): gamma, beta and studentt.

References come from the symbolic layer, mpmath or scipy (inverse CDFs), never typed by hand.
"""

import functools
import math

import mpmath
import numpy as np
import pytest
import scipy.special
import sympy as sp

import derive
import numeric
from derive import Z
from derive import _implicit as im
from mcgrad._check import check

Z_TOL = numeric.z_for_rate(1e-6)


def _helpers():
    namespace = {"numpy": np, "scipy": scipy}
    exec(im.HELPERS, namespace)  # the NumPy helpers the generated estimators use
    return namespace


def _subs(fam, expr, **values):
    return expr.xreplace({fam.param(k): sp.Rational(str(v)) for k, v in values.items()})


# ------------------------------------------------------------------ (a) implicit = explicit


def test_families_are_registered_and_explicit_ones_unchanged():
    for name in ("gamma", "beta", "studentt"):
        q = derive.family(name)
        assert q.implicit and not q.discrete
    for name, make in derive.CATALOG.items():
        assert not make().implicit, name


@pytest.mark.parametrize("name, w, transform", [
    ("gamma", "beta", lambda q, e: e / q.param("beta")),               # eps ~ Gamma(alpha, 1)
    ("studentt", "mu", lambda q, e: q.param("mu") + q.param("sigma") * e),  # eps ~ T(nu)
    ("studentt", "sigma", lambda q, e: q.param("mu") + q.param("sigma") * e),
])
def test_implicit_dz_equals_explicit_pathwise_derivative(name, w, transform):
    q = derive.family(name)
    eps = sp.Symbol("eps", positive=True) if name == "gamma" else sp.Symbol("eps", real=True)
    g = transform(q, eps)
    inverse = sp.solve(sp.Eq(Z, g), eps)[0]
    explicit = sp.diff(g, q.param(w)).xreplace({eps: inverse})
    implicit = derive.dz_dw(q, q.param(w))
    assert not implicit.has(*im.NUMERICAL)
    assert sp.simplify(implicit - explicit) == 0


def test_gamma_rate_from_sympys_own_incomplete_gamma():
    """-dF/dbeta / q with F = lowergamma(alpha, beta z)/Gamma(alpha) (SymPy's, not ours)."""
    q = derive.family("gamma")
    alpha, beta = q.params
    zp = sp.Symbol("zp", positive=True)
    F = sp.lowergamma(alpha, beta * zp) / sp.gamma(alpha)
    logq = q.log_density.xreplace({Z: zp}).replace(sp.loggamma, lambda x: sp.log(sp.gamma(x)))
    dz = -sp.diff(F, beta) / sp.exp(logq)
    assert sp.simplify(sp.powsimp(sp.expand_power_base(dz, force=True), force=True)
                       + zp / beta) == 0


def _mp_t_cdf(nu, mu, sigma, z):
    x = (z - mu) / sigma
    tail = mpmath.betainc(nu / 2, mpmath.mpf(1) / 2, 0, nu / (nu + x * x), regularized=True) / 2
    return tail if x < 0 else 1 - tail


@pytest.mark.parametrize("w", ["mu", "sigma"])
def test_studentt_location_scale_against_mpmath_cdf(w):
    """-dF/dw / q by mpmath.diff of an independent CDF, to 1e-10, at several z."""
    q = derive.family("studentt")
    point = {"nu": mpmath.mpf("3.5"), "mu": mpmath.mpf("0.3"), "sigma": mpmath.mpf("1.7")}
    dz = _subs(q, derive.dz_dw(q, q.param(w)), nu="3.5", mu="0.3", sigma="1.7")
    dens = _subs(q, sp.exp(q.log_density), nu="3.5", mu="0.3", sigma="1.7")
    with mpmath.workdps(40):
        for z in ("-4.1", "-0.2", "0.3", "1.9", "12"):
            zz = mpmath.mpf(z)

            def F(v):
                return _mp_t_cdf(**{**point, w: v}, z=zz)

            ref = -mpmath.diff(F, point[w]) / sp.N(dens.xreplace({Z: sp.Rational(z)}), 40)
            got = sp.N(dz.xreplace({Z: sp.Rational(z)}), 30)
            assert abs(float(got) - float(ref)) <= 1e-10 * max(1, abs(float(ref)))


# ------------------------------------------------------------------ (b) numerical dz/dtheta


def _richardson(fn, x, h):
    def d(k):
        return (fn(x + k) - fn(x - k)) / (2 * k)
    return (4 * d(h / 2) - d(h)) / 3


@pytest.mark.parametrize("alpha", [0.6, 2.5, 30.0])
def test_gamma_dz_dalpha_matches_difference_of_inverse_cdf(alpha):
    beta = 1.3
    u = np.array([1e-4, 0.03, 0.3, 0.5, 0.8, 0.99, 1 - 1e-5])
    ref = _richardson(lambda a: scipy.special.gammaincinv(a, u) / beta, alpha, 1e-3 * alpha)
    z = scipy.special.gammaincinv(alpha, u) / beta
    numpy_side = _helpers()["_gamma_dx_dalpha"](alpha, beta * z) / beta
    np.testing.assert_allclose(numpy_side, ref, rtol=1e-8)
    q = derive.family("gamma")
    dz = derive.dz_dw(q, q.param("alpha"))
    exact_side = [float(sp.N(_subs(q, dz, alpha=alpha, beta=beta).xreplace(
        {Z: sp.Float(float(v), 30)}), 20)) for v in z[::3]]
    np.testing.assert_allclose(exact_side, ref[::3], rtol=1e-8)


def test_beta_and_studentt_shape_derivatives_match_inverse_cdfs():
    h = _helpers()
    u = np.array([1e-4, 0.05, 0.5, 0.9, 1 - 1e-5])
    a, b = 0.7, 2.2
    z = scipy.special.betaincinv(a, b, u)
    np.testing.assert_allclose(
        h["_beta_dz_da"](a, b, z),
        _richardson(lambda s: scipy.special.betaincinv(s, b, u), a, 1e-3 * a), rtol=1e-7)
    np.testing.assert_allclose(
        h["_beta_dz_db"](a, b, z),
        _richardson(lambda s: scipy.special.betaincinv(a, s, u), b, 1e-3 * b), rtol=1e-7)
    nu, mu, sigma = 3.5, 0.3, 1.7
    u = np.array([1e-4, 0.05, 0.3, 0.7, 0.9, 1 - 1e-5])
    x = scipy.special.stdtrit(nu, u)
    np.testing.assert_allclose(
        sigma * h["_studentt_dx_dnu"](nu, x),
        _richardson(lambda s: mu + sigma * scipy.special.stdtrit(s, u), nu, 1e-3 * nu), rtol=1e-7)


def test_numpy_helpers_agree_with_mpmath():
    """The scipy Richardson differences against mpmath.diff at 30 digits, tails included."""
    h = _helpers()
    cases = [("_gamma_dx_dalpha", im._mp_gamma_dx_dalpha, (a,),
              scipy.special.gammaincinv(a, [1e-6, 0.2, 0.6, 1 - 1e-6])) for a in (0.1, 2.5, 100.0)]
    cases += [("_beta_dz_da", im._mp_beta_dz_da, (0.3, 0.4),
               scipy.special.betaincinv(0.3, 0.4, [1e-6, 0.5, 1 - 1e-6])),
              ("_beta_dz_db", im._mp_beta_dz_db, (20.0, 50.0),
               scipy.special.betaincinv(20.0, 50.0, [1e-6, 0.5, 1 - 1e-6]))]
    cases += [("_studentt_dx_dnu", im._mp_t_dx_dnu, (nu,),
               scipy.special.stdtrit(nu, [1e-6, 0.3, 0.9, 1 - 1e-6])) for nu in (0.5, 10.0)]
    with mpmath.workdps(30):
        for name, ref_fn, shape, points in cases:
            got = h[name](*shape, np.asarray(points))
            ref = [float(ref_fn(*shape, p)) for p in points]
            np.testing.assert_allclose(got, ref, rtol=1e-9, err_msg=f"{name}{shape}")


# ------------------------------------------------------------------ (c) Monte Carlo vs exact


@functools.lru_cache(maxsize=None)
def _analysis(name, f):
    """The analysis of one problem, shared by the tests that need it (derivations take s)."""
    q = derive.family(name)
    p = derive.problem(q, derive.parse(f, q))
    return q, p, derive.analyze(p, steps=False)


def _mc_agrees(name, f, params, *, n=200_000, seed=7):
    q, p, a = _analysis(name, f)
    at = a.at(params)
    for j, w in enumerate(p.wrt):
        assert at.gradient[w].value is not None, (w, at.gradient[w].missing)
    for kind in ("score", "pathwise"):
        fn = derive.numpy_estimator(a.estimators[kind])
        est = numeric.estimate(fn, n, seed=seed, **params)
        for j, w in enumerate(p.wrt):
            exact = at.gradient[w].value
            var = at.variances[kind][j].value
            assert not at.variances[kind][j].infinite
            var = float(est.variance[j]) if var is None else var  # a large-sample variance
            se = math.sqrt(var / n)
            assert abs(float(est.mean[j]) - exact) <= Z_TOL * se, (kind, w, est.mean[j], exact, se)
    return a


@pytest.mark.parametrize("name, f, params, n", [
    ("gamma", "z**2", {"alpha": 2.5, "beta": 1.3}, 200_000),
    ("gamma", "log(1 + z)", {"alpha": 0.6, "beta": 2.0}, 200_000),
    ("beta", "z**2", {"a": 0.7, "b": 2.2}, 60_000),  # scipy's betainc is the slow part
    ("beta", "z*(1 - z)", {"a": 3.1, "b": 1.4}, 60_000),
    ("studentt", "z**2", {"nu": 9.0, "mu": 0.3, "sigma": 1.7}, 200_000),
    ("studentt", "z**2 - 2*z", {"nu": 5.5, "mu": -0.4, "sigma": 0.8}, 200_000),
])
def test_monte_carlo_means_agree_with_exact_gradient(name, f, params, n):
    a = _mc_agrees(name, f, params, n=n)
    assert a.estimators["pathwise"].applies
    assert all(n.startswith("d/d") and "implicit" in n for n in a.estimators["pathwise"].notes)


def test_closed_forms_agree_with_quadrature():
    """The new expectation rules (gamma via Exp(1), beta, studentt) against mpmath quadrature."""
    for name, f, values in [("gamma", "z**3*log(z)", {"alpha": "0.6", "beta": "2"}),
                            ("beta", "z**2*log(1 - z)", {"a": "0.7", "b": "2.2"}),
                            ("studentt", "z**2", {"nu": "5.5", "mu": "-0.4", "sigma": "0.8"})]:
        q = derive.family(name)
        h = derive.parse(f, q)
        closed = derive.expectation(q, h)
        assert closed.expr is not None and closed.method == "closed-form"
        vals = {q.param(k): sp.Rational(v) for k, v in values.items()}
        quad = im.quad_at(q, h, vals)
        assert abs(float(derive.evaluate(closed.expr, vals)) - float(quad)) <= 1e-15 * max(
            1, abs(float(quad)))


def test_studentt_score_variances_closed_form_against_quadrature():
    """E[h**2] of the score function (logs and powers of nu + x**2) by the studentt rule."""
    q, p, a = _analysis("studentt", "z**2")
    vals = {q.param("nu"): sp.Rational(9), q.param("mu"): sp.Rational(3, 10),
            q.param("sigma"): sp.Rational(17, 10)}
    for w, h, var in zip(p.wrt, a.estimators["score"].components, a.variances["score"]):
        assert var.expr is not None and var.method == "closed-form", w
        grad = derive.evaluate(a.gradient[w].expr, vals)
        quad = im.quad_at(q, h**2, vals) - grad**2
        assert abs(float(derive.evaluate(var.expr, vals)) - float(quad)) <= 1e-12 * float(quad)


def test_check_reports_implicit_method():
    report = check("gamma", "z**2", {"alpha": "2.5", "beta": "1.3"}, samples=20_000, seed=3)
    for entry in report["gradient"].values():
        assert entry["pathwise"]["method"] == "implicit"
        assert entry["exact_method"] == "closed-form"
        assert "method" not in entry["score"]
    assert check("normal", "z**2", {"mu": "0.3", "sigma": "1.2"}, samples=2_000)[
        "gradient"]["mu"]["pathwise"].get("method") is None


# ------------------------------------------------------------------ (d) moments that do not exist


@pytest.mark.parametrize("nu", ["2", "1.5", "0.8"])
def test_studentt_second_moment_does_not_exist_for_small_nu(nu):
    report = check("studentt", "z**2", {"nu": nu, "mu": "0.3", "sigma": "1.7"},
                   samples=2_000, seed=0)
    for w, entry in report["gradient"].items():
        assert entry["exact"] is None, w
        assert entry["exact_method"] == "none"
        for kind in ("score", "pathwise"):
            assert entry[kind]["agrees"] is None
            assert entry[kind]["variance_exact"] is None


def test_studentt_moment_existence_is_a_condition_not_a_number():
    q = derive.family("studentt")
    ex = derive.expectation(q, Z**2)
    nu = q.param("nu")
    assert any(c.has(nu) for c in ex.conditions)
    ex3 = derive.expectation(q, Z**3)
    assert any(c.subs(nu, 3) is sp.false for c in ex3.conditions)


# ------------------------------------------------------------------ refusals


def test_discontinuous_f_refuses_implicit_pathwise():
    q = derive.family("beta")
    p = derive.problem(q, derive.parse("Heaviside(z - 1/2)", q))
    est = derive.pathwise(p)
    assert not est.applies and "discontinuous" in est.refused


def test_codegen_module_runs_and_agrees(tmp_path):
    """mcgrad codegen for an implicit family: a standalone module whose exact_gradient is the
    analysis' closed form and whose estimators agree with it; float32 is refused."""
    q, p, a = _analysis("studentt", "z**2 - 2*z")
    source = derive.generate_module(a)
    assert "import scipy.special" in source and "_studentt_dx_dnu" in source
    namespace = {}
    exec(compile(source, "<generated studentt module>", "exec"), namespace)
    params = {"nu": 5.5, "mu": -0.4, "sigma": 0.8}
    exact = a.at(params).gradient
    want = [exact[w].value for w in p.wrt]
    np.testing.assert_allclose(namespace["exact_gradient"](**params), want, rtol=1e-12)
    n = 50_000
    for name in ("score_function", "pathwise"):
        est = numeric.estimate(namespace[name], n, seed=11, **params)
        se = np.sqrt(np.asarray(est.variance) / n)
        assert np.all(np.abs(np.asarray(est.mean) - want) <= Z_TOL * se), name
    with pytest.raises(ValueError, match="scalar"):
        namespace["pathwise"](np.random.default_rng(0), 4, nu=np.array([3.0, 4.0]), mu=0.0,
                              sigma=1.0)
    with pytest.raises(derive.DeriveError, match="float64 only"):
        derive.generate_module(p, dtype="float32")


def test_exp_under_studentt_is_infinite_not_a_crash():
    """exp(-z) has no mean under a Student-t (polynomial tails). The t rule met exp(eps) in a
    denominator and crashed with a PolynomialError; now the expectation is refused as infinite."""
    fam = derive.family("studentt")
    p = derive.problem(fam, derive.parse("exp(-z)", fam))
    ex = derive.expectation(p, p.f)
    assert ex.expr is None
    values = dict(nu=11.845, mu=-1.868, sigma=0.403)
    at = derive.analyze(p, steps=False).at(values)
    assert all(at.gradient[w].value is None for w in p.wrt)
    assert any("does not exist" in (at.gradient[w].missing or "") for w in p.wrt)
