"""Exact values for vector families beyond quadratics (derive/_vector.py, iterated Normal rules).

Every closed form is compared with an independent numerical value: tensor-product Gauss-Hermite
quadrature of the *generated* estimators' rows (the matrix formulas, not the symbolic engine) at
d = 2 and 3, and Monte Carlo at z * SE with the exact-variance SE (z for a false-failure rate of
1e-6 per comparison, fixed seeds).
"""

import json
import time

import numpy as np
import pytest

import numeric
from derive import _vector
from derive._vector import vector_estimator, vector_exact, vector_family, vector_problem
from mcgrad._check_vector import decoder_score_variance
from mcgrad.cli import main

Z = numeric.z_for_rate(1e-6)
FAMILIES = ("mvnormal_diag", "mvnormal")
EXPRESSIONS = ["z[0]**2*z[1] + sin(z[1])", "exp(z[0])*cos(z[1])", "z[0]**4*z[1]**2 - x*z[1]**3",
               "sin(z[0] + 2*z[1])*z[0]", "exp(-z[0]**2)*z[1]"]


class _Nodes:
    """A stand-in generator whose standard_normal returns the quadrature nodes."""

    def __init__(self, nodes):
        self.nodes = nodes

    def standard_normal(self, shape, dtype=float):
        assert shape == self.nodes.shape
        return self.nodes.astype(dtype)


def _grid(d, m):
    x, w = np.polynomial.hermite_e.hermegauss(m)
    w = w / w.sum()
    nodes = np.stack(np.meshgrid(*[x] * d, indexing="ij"), -1).reshape(-1, d)
    weights = np.prod(np.stack(np.meshgrid(*[w] * d, indexing="ij"), -1).reshape(-1, d), axis=1)
    return nodes, weights


def _values(name, d, seed=3):
    rng = np.random.default_rng(seed)
    vals = {"mu": 0.4 * rng.standard_normal(d), "x": 0.6}
    scale = np.exp(0.2 * rng.standard_normal(d)) * 0.6
    if name == "mvnormal_diag":
        vals["sigma"] = scale
    else:
        vals["L"] = np.tril(0.25 * rng.standard_normal((d, d)), -1) + np.diag(scale)
    return vals


def _plain(vals):
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vals.items()}


def _quadrature(p, kind, vals, m):
    """(E[row], Var[row]) of the generated estimator by Gauss-Hermite quadrature."""
    nodes, weights = _grid(p.family.d, m)
    fn = vector_estimator(p, kind)
    rows = fn(_Nodes(nodes), len(nodes), **{k: vals[k] for k in fn.parameters})
    mean = weights @ rows
    return mean, weights @ (rows - mean) ** 2


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("f", EXPRESSIONS)
def test_closed_forms_equal_quadrature_at_d2(name, f):
    vals = _values(name, 2)
    p = vector_problem(vector_family(name, 2), f)
    exact = vector_exact(p, _plain(vals))
    assert exact.gradient is not None, exact.missing
    assert exact.method.endswith("(closed form)")
    for kind in ("score", "pathwise"):
        mean, var = _quadrature(p, kind, vals, 80)
        assert np.allclose(exact.gradient, mean, rtol=1e-9, atol=1e-10), kind
        assert exact.variance(kind) is not None, exact.variance_missing
        assert np.allclose(exact.variance(kind), var, rtol=1e-8, atol=1e-10), kind


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("f", ["z[0]*z[1]*z[2] + cos(z[2] - z[0])", "exp(z[0] + z[1]/2)*z[2]**2"])
def test_closed_forms_equal_quadrature_at_d3(name, f):
    vals = _values(name, 3, seed=8)
    p = vector_problem(vector_family(name, 3), f)
    exact = vector_exact(p, _plain(vals))
    for kind in ("score", "pathwise"):
        mean, var = _quadrature(p, kind, vals, 40)
        assert np.allclose(exact.gradient, mean, rtol=1e-9, atol=1e-10), kind
        assert np.allclose(exact.variance(kind), var, rtol=1e-8, atol=1e-10), kind


@pytest.mark.parametrize("name", FAMILIES)
def test_monte_carlo_agrees_within_z_exact_se_at_d3(name):
    vals = _values(name, 3, seed=5)
    p = vector_problem(vector_family(name, 3), "sin(z[0])*z[1] + exp(z[2]/2)*z[0]**2")
    exact = vector_exact(p, _plain(vals))
    assert exact.method == "iterated Normal rules (closed form)"
    for kind, seed in (("score", 21), ("pathwise", 22)):
        fn = vector_estimator(p, kind)
        est = numeric.estimate(fn, 400_000, seed=seed, moments=4,
                               **{k: vals[k] for k in fn.parameters})
        se = np.sqrt(np.array(exact.variance(kind)) / est.n)
        assert np.all(np.abs(est.mean - np.array(exact.gradient)) <= Z * se), kind
        assert all(numeric.variance_agrees(est, np.array(exact.variance(kind)))), kind


def test_the_users_example_has_an_exact_value_on_the_command_line(capsys):
    code = main(["check", "mvnormal_diag", "--dim", "2", "--f", "z[0]**2*z[1] + sin(z[1])",
                 "--param", "mu=0.3", "--param", "sigma=0.7", "--json", "--samples", "50000"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    mu1 = report["gradient"]["mu[1]"]  # d/dmu1 [(mu0^2 + s0^2) mu1 + sin(mu1) exp(-s1^2/2)]
    assert mu1["exact"] == pytest.approx(0.3**2 + 0.7**2 + np.cos(0.3) * np.exp(-0.245),
                                         rel=1e-14)
    assert mu1["exact_method"] == "iterated Normal rules (closed form)"
    for entry in report["gradient"].values():
        for kind in ("score", "pathwise"):
            assert entry[kind]["variance_exact"] is not None and entry[kind]["agrees"]


@pytest.mark.parametrize("f, sigma, reason", [
    ("(z[0] > 0)*z[1]", 0.7, "Normal rules do not cover"),
    ("log(1 + z[0]**2)", 0.7, "Normal rules do not cover"),
    ("exp(z[0]**2)", 0.8, "infinite"),  # 1 - 2 sigma^2 < 0
    ("bernoulli_decoder", 0.7, "no closed form"),
])
def test_no_exact_value_says_why(f, sigma, reason):
    p = vector_problem(vector_family("mvnormal_diag", 2), f)
    vals = {"mu": [0.1, 0.2], "sigma": [sigma, sigma], "W": [[1.0, 0.0]], "c": [0.0],
            "x": [1.0]}
    exact = vector_exact(p, vals)
    assert exact.gradient is None and reason in exact.missing
    assert exact.score_variance is None and exact.variance_missing["score"]


def test_a_gaussian_integrand_that_converges_is_exact():
    p = vector_problem(vector_family("mvnormal_diag", 2), "exp(z[0]**2)*z[1]")
    exact = vector_exact(p, {"mu": [0.1, 0.2], "sigma": [0.5, 0.5]})  # 1 - 2*0.25 > 0
    assert exact.gradient is not None
    # E[exp(z0^2)] finite needs sigma0^2 < 1/2, its square (the variance) sigma0^2 < 1/4
    assert exact.score_variance is None and "infinite" in exact.variance_missing["score"]


def test_out_of_time_gives_null_with_the_reason(monkeypatch):
    monkeypatch.setattr(_vector, "EXACT_SECONDS", 1e-3)
    p = vector_problem(vector_family("mvnormal", 3), "sin(z[0]*z[1])*exp(z[2])*z[1]**3")
    exact = vector_exact(p, _plain(_values("mvnormal", 3)))
    assert exact.gradient is None and "did not finish" in exact.missing


def _decoder(name, d, D, seed):
    rng = np.random.default_rng(seed)
    vals = {"mu": 0.3 * rng.standard_normal(d), "W": rng.standard_normal((D, d)) / np.sqrt(d),
            "c": 0.1 * rng.standard_normal(D), "x": rng.standard_normal(D), "s": 0.7}
    scale = 0.6 + 0.3 * rng.random(d)
    if name == "mvnormal_diag":
        vals["sigma"] = scale
    else:
        vals["L"] = np.diag(scale) + np.tril(0.1 * rng.standard_normal((d, d)), -1)
    return vals


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("d", [2, 3])
def test_decoder_score_variance_in_matrix_form_equals_the_symbolic_route(name, d):
    vals = _decoder(name, d, 3, seed=d)
    p = vector_problem(vector_family(name, d), "gaussian_decoder")
    exact = vector_exact(p, _plain(vals))
    assert exact.score_variance is None and "score" in exact.variance_missing
    matrix = decoder_score_variance(p, vals, exact.gradient)
    W, c, x, s = (vals[k] for k in ("W", "c", "x", "s"))
    rows = [" + ".join(f"({float(W[k, j])!r})*z[{j}]" for j in range(d)) for k in range(3)]
    text = " + ".join(f"({float(x[k] - c[k])!r} - ({row}))**2" for k, row in enumerate(rows))
    q = vector_problem(vector_family(name, d), f"-({text})/(2*{s}**2) - 3/2*log(2*pi*{s}**2)")
    symbolic = vector_exact(q, _plain(vals))
    assert np.allclose(symbolic.gradient, exact.gradient, rtol=1e-12)
    assert np.allclose(matrix, symbolic.score_variance, rtol=1e-10)


@pytest.mark.parametrize("name, n", [("mvnormal_diag", 200_000), ("mvnormal", 60_000)])
def test_decoder_score_variance_agrees_with_monte_carlo_at_d32(name, n):
    vals = _decoder(name, 32, 64, seed=7)
    p = vector_problem(vector_family(name, 32), "gaussian_decoder")
    exact = vector_exact(p, _plain(vals))
    var = np.array(decoder_score_variance(p, vals, exact.gradient))
    fn = vector_estimator(p, "score")
    est = numeric.estimate(fn, n, seed=13, moments=4, **{k: vals[k] for k in fn.parameters})
    assert all(numeric.variance_agrees(est, var))
    assert np.all(np.abs(est.mean - np.array(exact.gradient)) <= Z * np.sqrt(var / est.n))


def test_check_uses_the_decoders_exact_score_variance(capsys):
    code = main(["check", "mvnormal", "--dim", "4", "--f", "gaussian_decoder", "--param", "mu=0.1",
                 "--param", "L=0.8", "--param", "s=0.5", "--samples", "20000", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    for entry in report["gradient"].values():
        assert entry["score"]["variance_exact"] is not None and entry["score"]["agrees"]
        assert entry["pathwise"]["variance_exact"] is not None


@pytest.mark.parametrize("name", FAMILIES)
def test_the_two_gradient_routes_agree(name):
    """E[f] in the symbolic parameters, differentiated, equals E[d/dphi f(mu + S eps)] at the values
    (the route vector_exact takes for a differentiable f that is not a polynomial)."""
    vals = _values(name, 3, seed=4)
    p = vector_problem(vector_family(name, 3), "sin(z[0] - z[2])*exp(z[1]/3) + z[0]*cos(z[1])")
    mu, S = _vector._as_matrix(p.family, _plain(vals))
    symbolic, method = _vector._expression_gradient(p, {}, mu, S, time.monotonic() + 60)
    assert method == "iterated Normal rules (closed form)"
    assert np.allclose([float(v) for v in symbolic], vector_exact(p, _plain(vals)).gradient,
                       rtol=1e-13, atol=1e-15)
