"""Mean-field products of scalar families (derive/_meanfield.py).

References come from the scalar layer (d = 1) or from independent numerical quadrature (mpmath,
d = 2), never typed by hand; Monte Carlo agreement is |mean - exact| <= z * SE with z for a
false-failure rate of 1e-6 per assertion, SE from the exact per-sample variance where known.
"""

import subprocess
import sys
import textwrap

import mpmath
import numpy as np
import pytest

import derive
import numeric
from derive._meanfield import (MEANFIELD_FAMILIES, meanfield_estimator, meanfield_exact,
                               meanfield_family, meanfield_module, meanfield_problem,
                               parse_meanfield_name, refusal)

Z = numeric.z_for_rate(1e-6)


def _problem(name, d, f):
    return meanfield_problem(meanfield_family(name, d), f)


def _arrays(values):
    return {k: np.asarray(v, float) if isinstance(v, list) else v for k, v in values.items()}


# ------------------------------------------------------------------ the family and its names

def test_names_are_parameter_major():
    fam = meanfield_family("gamma", 3)
    assert fam.wrt == ("alpha[0]", "alpha[1]", "alpha[2]", "beta[0]", "beta[1]", "beta[2]")
    assert (fam.k, fam.parameter_arrays, str(fam)) == (6, ("alpha", "beta"),
                                                      "gamma^3 (mean-field)")
    assert parse_meanfield_name("beta[2]", fam) == ("beta", 2)
    assert fam.scalar().name == "gamma"
    assert set(MEANFIELD_FAMILIES) == set(derive.CATALOG) | set(derive.IMPLICIT_CATALOG)


@pytest.mark.parametrize("call, words", [
    (lambda: meanfield_family("gamm", 2), "choose one of"),
    (lambda: meanfield_family("bernoulli", 2), "discrete"),
    (lambda: meanfield_family("normal", 0), "from 1 to 64"),
    (lambda: meanfield_family("normal", 65), "from 1 to 64"),
    (lambda: meanfield_family("normal", 2.0), "whole number"),
    (lambda: parse_meanfield_name("alpha[3]", meanfield_family("gamma", 3)), "alpha[0] .. alpha[2]"),
    (lambda: parse_meanfield_name("mu[0]", meanfield_family("gamma", 3)), "beta[0] .. beta[2]"),
    (lambda: _problem("gamma", 2, "alpha*z[0]"), "rename your symbol"),
    (lambda: _problem("normal", 2, "z[2]"), "out of range"),
    (lambda: _problem("normal", 2, "x + 1"), "write f in terms of z[0]"),
    (lambda: meanfield_exact(_problem("normal", 2, "z[0]"), {"mu": [0, 1, 2], "sigma": 1}),
     "it needs 2"),
    (lambda: meanfield_exact(_problem("normal", 2, "z[0]"), {"mu": 0, "sigma": [1, -1]}),
     "sigma > 0"),
])
def test_bad_arguments_say_what_to_write(call, words):
    with pytest.raises(derive.DeriveError) as info:
        call()
    assert words in str(info.value)


# ------------------------------------------------------------------ exact values

@pytest.mark.parametrize("name, f, values", [
    ("normal", "cos(2*z[0]) + z[0]**3", {"mu": 0.3, "sigma": 1.7}),
    ("gamma", "z[0]**2 + exp(-z[0])", {"alpha": 1.7, "beta": 0.6}),
    ("weibull", "z[0]**2", {"lam": 1.3, "k": 1.8}),
    ("uniform", "exp(z[0]) + z[0]**2", {"a": -0.4, "b": 1.1}),
])
def test_one_component_gradient_equals_the_scalar_engine(name, f, values):
    fam = derive.family(name)
    scalar = derive.analyze(derive.problem(fam, derive.parse(f.replace("z[0]", "z"), fam)),
                            steps=False).at(**values)
    reference = [scalar.gradient[p].value for p in fam.params]
    exact = meanfield_exact(_problem(name, 1, f), {k: [v] for k, v in values.items()})
    assert exact.missing is None
    assert exact.gradient == pytest.approx(reference, rel=1e-12, abs=1e-14)


def _gradient_by_quadrature(density, terms, arrays, lo=0, hi=mpmath.inf):
    """Parameter-major gradient of E[f(z0, z1)] for f = sum_t g_t0(z0) g_t1(z1) and independent
    components: sum_t int g_t0 q(.; theta_0) * int g_t1 q(.; theta_1), each partial by
    mpmath.diff of the 1-D quadratures (independent of the symbolic engine)."""
    names = list(arrays)

    def E(theta0, theta1):
        return mpmath.fsum(mpmath.quad(lambda x: g0(x) * density(x, *theta0), [lo, hi])
                           * mpmath.quad(lambda y: g1(y) * density(y, *theta1), [lo, hi])
                           for g0, g1 in terms)

    out = []
    for p in range(len(names)):
        for i in range(2):
            theta = [[mpmath.mpf(arrays[n][j]) for n in names] for j in range(2)]

            def moved(t, p=p, i=i, theta=theta):
                th = [list(theta[0]), list(theta[1])]
                th[i][p] = t
                return E(*th)
            out.append(float(mpmath.diff(moved, theta[i][p])))
    return out


def test_two_component_products_match_quadrature():
    one = lambda x: 1  # noqa: E731
    with mpmath.workdps(25):
        expo = lambda x, lam: lam * mpmath.exp(-lam * x)  # noqa: E731
        arrays = {"lam": [1.3, 2.0]}
        terms = [(lambda x: x, lambda y: y**2), (lambda x: mpmath.exp(-x), one)]
        ref = _gradient_by_quadrature(expo, terms, arrays)
        exact = meanfield_exact(_problem("exponential", 2, "z[0]*z[1]**2 + exp(-z[0])"), arrays)
        assert exact.gradient == pytest.approx(ref, rel=1e-9)

        def gam(x, a, b):
            return b**a * x**(a - 1) * mpmath.exp(-b * x) / mpmath.gamma(a)
        arrays = {"alpha": [1.7, 2.5], "beta": [0.8, 1.5]}
        terms = [(lambda x: x, lambda y: y**2), (lambda x: x**2, one),
                 (one, lambda y: mpmath.exp(-y))]
        ref = _gradient_by_quadrature(gam, terms, arrays)
        exact = meanfield_exact(_problem("gamma", 2, "z[0]*z[1]**2 + z[0]**2 + exp(-z[1])"),
                                arrays)
        assert exact.gradient == pytest.approx(ref, rel=1e-9)


def test_a_moment_that_does_not_exist_has_no_value_and_says_why():
    exact = meanfield_exact(_problem("cauchy", 2, "z[0]**2 + z[1]"), {"mu": 0.0, "gamma": 1.0})
    assert exact.gradient is None and exact.score_variance is None
    assert "does not exist" in exact.missing
    assert exact.pathwise_variance is None and exact.variance_missing["score"]


def test_a_coupling_factor_has_no_value_and_says_why():
    exact = meanfield_exact(_problem("normal", 2, "exp(z[0]*z[1]/4)"), {"mu": 0.1, "sigma": 0.5})
    assert exact.gradient is None and "couples components" in exact.missing


# ------------------------------------------------------------------ Monte Carlo

CASES = [
    ("gamma", "z[0]*z[1]**2 + exp(-z[2])", {"alpha": [0.7, 1.5, 2.0], "beta": [1.2, 0.8, 2.0]}),
    ("exponential", "z[0]*z[1]**2 + exp(-z[0])", {"lam": [1.3, 2.0]}),
    ("normal", "z[0]**2*z[1] + x*exp(z[1])", {"mu": [0.3, -0.2], "sigma": [0.9, 1.4], "x": 0.5}),
    ("uniform", "z[0]*z[1]**2 + exp(z[0])", {"a": [-0.5, 0.3], "b": [1.0, 2.0]}),
    ("laplace", "z[0]**2*z[1]", {"mu": [0.3, 1.0], "b": [0.7, 1.2]}),
    ("beta", "z[0]*z[1]**2", {"a": [1.5, 2.0], "b": [2.0, 0.8]}),
    ("weibull", "z[0]*z[1]", {"lam": [1.0, 2.0], "k": [1.5, 3.0]}),
]


@pytest.mark.parametrize("name, f, values", CASES, ids=[c[0] for c in CASES])
def test_both_estimators_agree_with_the_exact_gradient(name, f, values):
    p = _problem(name, len(next(v for v in values.values() if isinstance(v, list))), f)
    exact = meanfield_exact(p, values)
    assert exact.missing is None
    for seed, (kind, n) in enumerate((("score", 40_000), ("pathwise", 20_000))):
        est = numeric.estimate(meanfield_estimator(p, kind), n, seed=seed, **_arrays(values))
        var = exact.variance(kind)
        se = np.sqrt(np.asarray(var) / n) if var is not None else est.stderr
        assert np.all(np.abs(est.mean - np.asarray(exact.gradient)) <= Z * se), (kind, est.mean)


def test_the_naive_score_function_of_a_moving_support_is_caught():
    """The check can fail: without the boundary term the uniform score is biased."""
    name, f, values = CASES[3]
    p = _problem(name, 2, f)
    exact = meanfield_exact(p, values)
    fn = meanfield_estimator(p, "score")
    ns = fn.module

    def naive(rng, n, *, a, b):
        a, b = ns["_params"](a, b)
        z, _ = ns["_draw"](rng, n, a, b)
        f = ns["_f"](z)
        return np.concatenate([f[:, None] / (b - a), -f[:, None] / (b - a)], axis=1)
    n = 40_000
    est = numeric.estimate(naive, n, seed=0, **_arrays(values))
    se = np.sqrt(np.asarray(exact.score_variance) / n)
    assert np.any(np.abs(est.mean - np.asarray(exact.gradient)) > Z * se)


# ------------------------------------------------------------------ refusals and modules

def test_pathwise_is_refused_for_a_discontinuous_f():
    p = _problem("normal", 2, "(z[0] > 0)*z[1]")
    assert "discontinuous" in refusal(p, "pathwise") and refusal(p, "score") is None
    with pytest.raises(derive.DeriveError, match="score function"):
        meanfield_estimator(p, "pathwise")
    ns = meanfield_estimator(p, "score").module
    with pytest.raises(ValueError, match="discontinuous"):
        ns["pathwise"](np.random.default_rng(0), 4, mu=0.0, sigma=1.0)
    exact = meanfield_exact(p, {"mu": [0.2, 0.1], "sigma": [1.0, 1.0]})
    assert "discontinuous" in exact.variance_missing["pathwise"]


@pytest.mark.parametrize("name, f, params", [
    ("gamma", "z[0]*z[1]**2 + x*exp(-z[2])", {"alpha": [0.7, 1.5, 2.0], "beta": 1.2, "x": 0.4}),
    ("uniform", "z[0]*z[1]", {"a": [-0.5, 0.3], "b": [1.0, 2.0]}),
])
def test_generated_module_runs_without_sympy_and_is_reproducible(name, f, params, tmp_path,
                                                                block_sympy):
    d = len(params[next(iter(params))])
    source = meanfield_module(_problem(name, d, f), command="test", version="0")
    assert source == meanfield_module(_problem(name, d, f), command="test", version="0")
    path = tmp_path / "mf.py"
    path.write_text(source)
    code = block_sympy + textwrap.dedent(f"""
        import numpy as np, importlib.util
        spec = importlib.util.spec_from_file_location("mf", {str(path)!r})
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        assert "sympy" not in sys.modules
        p = {params!r}
        out = [m.sample(np.random.default_rng(1), 5, **{{k: v for k, v in p.items()
                                                       if k in m.PARAMETERS[:len(m.WRT) // m.D]}})]
        for f in ("score_function", "pathwise"):
            out.append(getattr(m, f)(np.random.default_rng(1), 5, **p).ravel())
        print(repr(np.concatenate([o.ravel() for o in out]).tolist()))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ns = {}
    exec(compile(source, "<mf>", "exec"), ns)  # noqa: S102 (our generated module)
    arrays = ns["PARAMETERS"][:len(ns["WRT"]) // ns["D"]]
    expected = [ns["sample"](np.random.default_rng(1), 5, **{k: params[k] for k in arrays})]
    for fn in ("score_function", "pathwise"):
        expected.append(ns[fn](np.random.default_rng(1), 5, **params))
    assert eval(result.stdout) == np.concatenate([e.ravel() for e in expected]).tolist()  # noqa: S307


# ------------------------------------------------------------------ the command line

def test_check_with_dim_on_a_scalar_family_is_a_mean_field_product(capsys):
    import json
    from mcgrad.cli import main
    assert main(["check", "gamma", "--dim", "3", "--param", "alpha=2", "--param",
                 "alpha[1]=3.5", "--param", "beta=1.5", "--f", "z[0]*z[1] + z[2]**2",
                 "--samples", "50000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dim"] == 3 and report["params"]["alpha[1]"] == 3.5
    assert list(report["gradient"]) == list(meanfield_family("gamma", 3).wrt)
    for entry in report["gradient"].values():
        assert entry["exact"] is not None
        assert entry["score"]["agrees"] and entry["pathwise"]["agrees"]
        assert entry["pathwise"]["method"] == "implicit"


@pytest.mark.parametrize("argv, words", [
    (["uniform", "--param", "a=2", "--param", "b=1"], "component 0"),
    (["poisson", "--param", "lam=1"], "discrete"),
    (["normal", "--param", "mu=0", "--param", "sigma=1", "--param", "sigma[5]=2"],
     "sigma\\[0\\] .. sigma\\[1\\]"),
    (["normal", "--param", "mu=0"], "no value for sigma"),
])
def test_bad_mean_field_input_exits_2_with_the_reason(argv, words, capsys):
    import re
    from mcgrad.cli import main
    assert main(["check", argv[0], "--dim", "2", "--f", "z[0]*z[1]", *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert re.search(words, err) and "Traceback" not in err


def test_derive_and_codegen_on_the_command_line(tmp_path, capsys):
    from mcgrad.cli import main
    assert main(["derive", "exponential", "--dim", "2", "--f", "z[0]*exp(-z[1])"]) == 0
    text = capsys.readouterr().out
    assert "lam[0] .. lam[1]" in text and "f * (-z_i + 1/lam)" in text
    out = tmp_path / "m.py"
    assert main(["codegen", "normal", "--dim", "2", "--f", "z[0]*z[1]**2", "-o", str(out)]) == 0
    namespace = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    rows = namespace["pathwise"](np.random.default_rng(0), 5, mu=[0.1, 0.2], sigma=1.0)
    assert rows.shape == (5, 4) and namespace["WRT"] == ("mu[0]", "mu[1]", "sigma[0]",
                                                          "sigma[1]")


def test_a_jump_that_couples_components_is_checked_with_the_score_function_alone(capsys):
    """Heaviside(z[0] - z[1]): the module is generated without a gradient (DiracDelta once
    crashed the printer), the pathwise estimator is refused, and there is no exact value."""
    import json
    from mcgrad.cli import main
    assert main(["check", "normal", "--dim", "2", "--f", "Heaviside(z[0] - z[1])", "--param",
                 "mu=0.2", "--param", "sigma=1", "--samples", "20000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for entry in report["gradient"].values():
        assert entry["exact"] is None and "discontinuous" in entry["pathwise"]["refused"]
        assert np.isfinite(entry["score"]["mean"])
