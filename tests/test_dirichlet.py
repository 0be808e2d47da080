"""The Dirichlet family: implicit pathwise and score-function estimators, exact moments.

References come from quadrature (K = 2, where z[0] ~ Beta(alpha[0], alpha[1])), from SymPy's
differentiation of the moment function, and from the chain rule; Monte Carlo assertions have a
false-failure rate of 1e-6 each (|mean - exact| <= z*SE, the SE from the exact variance where
there is one).
"""

import json
import re
import subprocess
import sys
import textwrap

import mpmath
import numpy as np
import pytest
import sympy as sp

import derive
import numeric
from derive import _dirichlet
from derive._vector import (vector_estimator, vector_exact, vector_family, vector_module,
                            vector_problem)
from mcgrad.cli import main

Z = numeric.z_for_rate(1e-6)


def _problem(K, f):
    return vector_problem(vector_family("dirichlet", K), f)


def _beta_expectation(h, a0, a1):
    """E[h(z0, z1)] with z0 ~ Beta(a0, a1), z1 = 1 - z0, by mpmath quadrature."""
    def density(u):
        return u ** (a0 - 1) * (1 - u) ** (a1 - 1) / mpmath.beta(a0, a1)
    return mpmath.quad(lambda u: h(u, 1 - u) * density(u), [0, 0.5, 1])


# ------------------------------------------------------------------ exact values

@pytest.mark.parametrize("f, h", [
    ("z[0]**2*log(z[1]) + sqrt(z[1])", lambda u, v: u**2 * mpmath.log(v) + mpmath.sqrt(v)),
    ("log(z[0]*z[1]**3) - 2*z[0]*z[1]", lambda u, v: mpmath.log(u * v**3) - 2 * u * v),
    ("z[0]**(-1/2) * log(z[0])**2", lambda u, v: u**-0.5 * mpmath.log(u)**2),
])
def test_the_exact_gradient_agrees_with_quadrature_for_two_components(f, h):
    """K = 2 is the Beta distribution: differentiate the quadrature of E[f] in each alpha."""
    alpha = (1.7, 2.3)
    ex = vector_exact(_problem(2, f), {"alpha": list(alpha)})
    with mpmath.workdps(30):
        for j in range(2):
            def mean(a, j=j):
                a0, a1 = (a, alpha[1]) if j == 0 else (alpha[0], a)
                return _beta_expectation(h, a0, a1)
            reference = mpmath.diff(mean, alpha[j])
            assert ex.gradient[j] == pytest.approx(float(reference), rel=1e-9, abs=1e-12)


def test_the_score_variance_agrees_with_quadrature_for_two_components():
    alpha = (0.8, 2.6)
    ex = vector_exact(_problem(2, "z[0]*z[1] + log(z[1])"), {"alpha": list(alpha)})
    with mpmath.workdps(30):
        A = sum(alpha)
        for j in range(2):
            def h(u, v, j=j):
                s = mpmath.digamma(A) - mpmath.digamma(alpha[j]) + mpmath.log((u, v)[j])
                return (u * v + mpmath.log(v)) * s
            m1 = _beta_expectation(h, *alpha)
            m2 = _beta_expectation(lambda u, v: h(u, v) ** 2, *alpha)
            assert ex.gradient[j] == pytest.approx(float(m1), rel=1e-9)
            assert ex.score_variance[j] == pytest.approx(float(m2 - m1**2), rel=1e-9)


@pytest.mark.parametrize("a, b", [
    ((1, 0, 2), (0, 0, 0)), ((0, 1, 0), (1, 0, 0)), ((2, 0, -0.5), (0, 2, 1)),
    ((0, 0, 0), (1, 1, 1)), ((1, 1, 1), (3, 0, 0)), ((0.5, 0, 0), (2, 2, 0)),
])
def test_the_cumulant_moments_equal_sympy_derivatives_of_the_moment_function(a, b):
    """Two independent routes to E[prod z^a log(z)^b]: SymPy differentiates M(t); the numeric
    route sums products of polygamma cumulants over set partitions."""
    alpha_values = (1.3, 0.9, 2.2)
    alpha = vector_family("dirichlet", 3).symbols()
    a_exact = tuple(sp.nsimplify(v) for v in a)
    symbolic = _dirichlet.symbolic_moment(a_exact, b, alpha)
    reference = derive.evaluate(symbolic, {s: derive.exact_number(v)
                                           for s, v in zip(alpha, alpha_values)})
    with mpmath.workdps(30):
        value = _dirichlet.numeric_moment(a, b, [mpmath.mpf(v) for v in alpha_values])
        assert float(value) == pytest.approx(float(reference), rel=1e-12)


def test_the_decoder_gradient_equals_sympy_differentiation_of_the_moments():
    K = 3
    rng = np.random.default_rng(4)
    b, Q = rng.standard_normal(K), rng.standard_normal((K, K))
    Q = (Q + Q.T) / 2
    alpha_values = [0.7, 1.9, 3.1]
    z = sp.symbols("z0:3", positive=True)
    f = sum(sp.Float(b[i]) * z[i] for i in range(K)) + sum(
        sp.Float(Q[i, j]) * z[i] * z[j] for i in range(K) for j in range(K))
    alpha = vector_family("dirichlet", K).symbols()
    terms = _dirichlet.monomials(f, z)
    mean = sum(c * _dirichlet.symbolic_moment(a, bb, alpha) for (a, bb), c in terms.items())
    at = {s: derive.exact_number(v) for s, v in zip(alpha, alpha_values)}
    reference = [float(derive.evaluate(sp.diff(mean, s), at)) for s in alpha]
    got = _dirichlet.decoder_gradient(list(b), Q.tolist(), alpha_values)
    assert got == pytest.approx(reference, rel=1e-10)


def test_a_moment_that_does_not_exist_gives_no_exact_value_and_says_why():
    ex = vector_exact(_problem(3, "1/z[0] + z[1]"), {"alpha": [0.5, 1, 1]})
    assert ex.gradient is None and "infinite" in ex.missing and "alpha[0] > 1" in ex.missing
    finite = vector_exact(_problem(3, "1/z[0] + z[1]"), {"alpha": [1.5, 1, 1]})
    assert finite.gradient is not None


def test_an_integrand_outside_the_moment_rules_has_no_exact_value_and_says_why():
    ex = vector_exact(_problem(3, "exp(z[0])"), {"alpha": [1, 1, 1]})
    assert ex.gradient is None and "exp(z0)" in ex.missing


def test_the_pathwise_variance_is_not_claimed_exact():
    ex = vector_exact(_problem(3, "z[0]*z[1]"), {"alpha": [1, 2, 3]})
    assert ex.pathwise_variance is None and "no closed form" in ex.variance_missing["pathwise"]
    assert ex.score_variance is not None


# ------------------------------------------------------------------ the estimators

def test_the_pathwise_row_is_the_chain_rule_through_the_normalisation():
    """d/dalpha_j f(g / sum g) = sum_k df/dz_k dz_k/dg_j * dg_j/dalpha_j, by SymPy, equals the
    row (dg_j / S)(u_j - z.u) that the generated code computes."""
    g = sp.symbols("g0:3", positive=True)
    dg = sp.symbols("dg0:3")
    S = sum(g)
    z = [gk / S for gk in g]
    zs = sp.symbols("z0:3", positive=True)
    f = zs[0] * zs[1] ** 2 + sp.log(zs[2]) + sp.sin(zs[0] * zs[2])
    u = [sp.diff(f, zk).subs(dict(zip(zs, z))) for zk in zs]
    fz = f.subs(dict(zip(zs, z)))
    for j in range(3):
        chain = sp.diff(fz, g[j]) * dg[j]
        row = dg[j] / S * (u[j] - sum(zk * uk for zk, uk in zip(z, u)))
        assert sp.simplify(chain - row) == 0


CASES = [
    (3, "z[0]*z[1] + log(z[2])", [1.5, 0.7, 2.0]),
    (4, "z[0]**2 - 3*z[1]*z[3] + sqrt(z[2])", [0.4, 1.1, 2.5, 0.9]),
    (2, "log(z[0])**2", [3.0, 0.6]),
]


@pytest.mark.parametrize("K, f, alpha", CASES)
@pytest.mark.parametrize("kind", ["score", "pathwise"])
def test_both_estimators_agree_with_the_exact_gradient(K, f, alpha, kind):
    p = _problem(K, f)
    ex = vector_exact(p, {"alpha": alpha})
    n = 200_000
    run = numeric.estimate(vector_estimator(p, kind), n, seed=11, alpha=np.array(alpha),
                           moments=4)
    if kind == "score":
        se = np.sqrt(np.array(ex.score_variance) / n)
        # the estimated per-sample variance within 4.89 SE(s**2) of the exact one (bounded z)
        verdicts = numeric.variance_agrees(run, list(ex.score_variance), false_failure_rate=1e-6)
        assert all(v is not False for v in verdicts), (run.variance, ex.score_variance)
    else:
        se = run.stderr
    assert np.all(np.abs(run.mean - np.array(ex.gradient)) <= Z * se), (run.mean, ex.gradient)


def test_a_planted_sign_error_in_the_pathwise_rows_is_caught(monkeypatch):
    """The Monte Carlo check can fail: with z.u added instead of subtracted the means miss."""
    monkeypatch.setattr(_dirichlet, "ESTIMATORS", _dirichlet.ESTIMATORS.replace(
        "out = u - numpy.einsum", "out = u + numpy.einsum"))
    K, f, alpha = CASES[0]
    p = _problem(K, f)
    ex = vector_exact(p, {"alpha": alpha})
    run = numeric.estimate(vector_estimator(p, "pathwise"), 200_000, seed=11,
                           alpha=np.array(alpha))
    assert np.any(np.abs(run.mean - np.array(ex.gradient)) > Z * run.stderr)


def test_the_score_has_mean_zero():
    p = _problem(3, "1 + 0*z[0]")
    alpha = [0.3, 1.0, 4.0]
    ex = vector_exact(p, {"alpha": alpha})
    assert ex.gradient == pytest.approx((0, 0, 0), abs=1e-14)
    run = numeric.estimate(vector_estimator(p, "score"), 100_000, seed=3, alpha=np.array(alpha))
    assert np.all(np.abs(run.mean) <= Z * np.sqrt(np.array(ex.score_variance) / 100_000))


def test_the_gaussian_decoder_agrees_with_the_moment_gradient(capsys):
    assert main(["check", "dirichlet", "--dim", "5", "--f", "gaussian_decoder", "--obs-dim",
                 "30", "--param", "alpha=1.2", "--param", "alpha[3]=0.4", "--param", "s=0.6",
                 "--samples", "100000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["gradient"]) == [f"alpha[{i}]" for i in range(5)]
    for entry in report["gradient"].values():
        assert entry["score"]["agrees"] and entry["pathwise"]["agrees"]
        assert entry["pathwise"]["method"] == "implicit"
        assert entry["pathwise"]["variance_exact"] is None
        assert entry["score"]["variance_exact"] > 0


def test_pathwise_is_refused_for_a_discontinuous_integrand():
    p = _problem(3, "Heaviside(z[0] - 1/2)")
    with pytest.raises(derive.DeriveError, match="discontinuous"):
        vector_estimator(p, "pathwise")
    assert "raise ValueError" in vector_module(p)


# ------------------------------------------------------------------ bad input, code

@pytest.mark.parametrize("argv, message", [
    (["--dim", "1", "--param", "alpha=1", "--f", "z[0]"], "from 2 to 64"),
    (["--dim", "3", "--param", "alpha=0", "--f", "z[0]"], "alpha\\[0\\] = 0"),
    (["--dim", "3", "--param", "alpha=1", "--param", "alpha[1]=0.01", "--f", "z[0]"],
     "underflow"),
    (["--dim", "3", "--param", "alpha=1", "--param", "alpha[3]=2", "--f", "z[0]"],
     "alpha\\[0\\] .. alpha\\[2\\]"),
    (["--dim", "3", "--param", "mu=1", "--f", "z[0]"], "no value for alpha|unknown parameter"),
    (["--dim", "3", "--param", "alpha=1", "--f", "alpha*z[0]"], "reserved"),
])
def test_bad_input_exits_2_with_a_teaching_message(argv, message, capsys):
    assert main(["check", "dirichlet", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_the_generated_module_runs_without_sympy_and_is_deterministic(tmp_path,
                                                                     block_sympy):
    p = _problem(3, "z[0]*log(z[1]) + x*z[2]")
    source = vector_module(p, dtype="float32")
    assert source == vector_module(_problem(3, "z[0]*log(z[1]) + x*z[2]"), dtype="float32")
    path = tmp_path / "dirichlet_grads.py"
    path.write_text(source)
    code = block_sympy + textwrap.dedent(f"""
        import numpy as np, importlib.util
        spec = importlib.util.spec_from_file_location("m", {str(path)!r})
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        assert "sympy" not in sys.modules
        rng = np.random.default_rng(0)
        z = m.sample(rng, 4, alpha=[0.5, 1.0, 2.0])
        assert z.dtype == np.float32 and np.allclose(z.sum(axis=1), 1, atol=1e-6)
        for fn in (m.score_function, m.pathwise):
            rows = fn(rng, 6, alpha=[0.5, 1.0, 2.0], x=0.3)
            assert rows.shape == (6, 3) and rows.dtype == np.float32 and np.isfinite(rows).all()
        try:
            m.pathwise(rng, 6, alpha=[0.01, 1.0, 2.0], x=0.3)
        except ValueError as err:
            assert "underflow" in str(err)
        else:
            raise AssertionError("alpha = 0.01 was not refused")
        print(m.WRT)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('alpha[0]', 'alpha[1]', 'alpha[2]')"


def test_codegen_and_derive_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "m.py"
    assert main(["codegen", "dirichlet", "--dim", "4", "--f", "gaussian_decoder", "-o",
                 str(out)]) == 0
    namespace = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    rng = np.random.default_rng(2)
    W, c, x = rng.standard_normal((7, 4)), rng.standard_normal(7), rng.standard_normal(7)
    p = _problem(4, "gaussian_decoder")
    from derive._vector import _decoder_quadratic
    vals = {"alpha": [0.6, 1.0, 1.4, 2.2], "W": W.tolist(), "c": c.tolist(), "x": x.tolist(),
            "s": 0.8}
    expected = vector_exact(p, vals).gradient
    assert _decoder_quadratic(p, vals) is not None
    got = namespace["exact_gradient"](alpha=vals["alpha"], W=W, c=c, x=x, s=0.8)
    assert got == pytest.approx(expected, rel=1e-10)
    capsys.readouterr()
    assert main(["derive", "dirichlet", "--dim", "3", "--f", "z[0]*z[1]"]) == 0
    text = capsys.readouterr().out
    assert "psi(A) - psi(alpha_j) + log z_j" in text and "implicit" in text


def test_the_vectorized_score_variances_equal_the_cumulant_route():
    """Without logs in f the variances are vectorized floats; they must equal the 30-digit
    cumulant moments (the route every f with logs takes)."""
    rng = np.random.default_rng(8)
    K = 4
    b, Q = rng.standard_normal(K), rng.standard_normal((K, K))
    Q = ((Q + Q.T) / 2).tolist()
    terms = _dirichlet._quadratic_terms(-3.7, list(b), Q)
    alpha = [0.6, 1.4, 2.0, 0.9]
    grad = _dirichlet.decoder_gradient(list(b), Q, alpha)
    fast = _dirichlet.score_variances(terms, alpha, grad)
    squared = {}
    for (a1, b1), c1 in terms.items():
        for (a2, b2), c2 in terms.items():
            key = (tuple(x + y for x, y in zip(a1, a2)), tuple(x + y for x, y in zip(b1, b2)))
            squared[key] = squared.get(key, 0) + c1 * c2
    slow = _dirichlet._score_variances_by_cumulants(squared, alpha, grad, float("inf"))
    assert fast == pytest.approx(slow, rel=1e-10)
