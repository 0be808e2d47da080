"""Baselines and control variates of the score-function estimator (derive/_baselines.py).

Every reference value (gradients, variances, baselines) comes from the symbolic layer or its
quadrature, never typed by hand. Monte Carlo tolerances are z * SE with z for a false-failure
rate of 1e-6 and the SE from the exact variance.
"""

import json
import math

import numpy as np
import pytest
import sympy as sp

import derive
import numeric
from mcgrad import cli
from mcgrad._check import check, parse_baseline

Z_TOL = numeric.z_for_rate(1e-6)
N = 40_000
X = sp.Symbol("x", real=True)
B = sp.Symbol("bl", real=True)  # a symbolic constant baseline


def _problem(name, f_text, extra=()):
    q = derive.family(name)
    return derive.problem(q, derive.parse(f_text, q, extra=extra))


def _values(p, **named):
    by_name = {s.name: s for s in p.family.symbols | (p.f.free_symbols - {derive.Z})}
    return {by_name[k]: derive.exact_number(v) for k, v in named.items()}


def _make(p, which):
    if which == "optimal":
        return derive.optimal_score_baseline(p)
    if which == "delta":
        return derive.delta_method(p)
    return derive.score_baseline(p, derive.exact_number(which))


CASES = [
    ("normal", "cos(2*z)", dict(mu=0.3, sigma=1.7), "0.7"),
    ("normal", "cos(2*z)", dict(mu=0.3, sigma=1.7), "optimal"),
    ("normal", "cos(2*z)", dict(mu=0.3, sigma=1.7), "delta"),
    ("normal", "z**3 + 100", dict(mu=-0.4, sigma=0.8), "optimal"),
    ("exponential", "z**2", dict(lam=1.3), "optimal"),
    ("exponential", "exp(-z)", dict(lam=0.7), "delta"),
    ("laplace", "z**2 - 50", dict(mu=0.2, b=0.6), "optimal"),
    ("uniform", "z**3", dict(a=-0.5, b=1.25), "delta"),
    ("lognormal", "z", dict(mu=0.1, sigma=0.4), "-3"),
]


@pytest.mark.parametrize("family, f, params, which", CASES)
def test_baseline_estimators_are_unbiased_with_the_exact_variance(family, f, params, which):
    p = _problem(family, f)
    est = _make(p, which)
    assert est.applies, est.refused
    vals = _values(p, **params)
    grad = derive.exact_gradient(p)
    g = derive.gradient_at(p, grad, vals)
    var = derive.variance_at(est, derive.variances(est, grad), g, vals)
    fn = derive.numpy_estimator(est)
    run = numeric.estimate(fn, N, seed=20240611, moments=4, **params)
    for j, w in enumerate(p.wrt):
        assert var[j].value is not None and var[j].value >= 0, (w, var[j])
        se = math.sqrt(var[j].value / N)
        err = abs(run.mean[j] - g[w].value)
        assert err <= Z_TOL * se + 1e-12 * (1 + abs(g[w].value)), (w, run.mean[j], g[w], se)
        if var[j].value > 0:
            assert numeric.variance_agrees(run, [v.value for v in var])[j], (w, run.variance, var)
        else:
            assert run.variance[j] <= 1e-20 * (1 + g[w].value ** 2)


def _plain_and_symbolic(p):
    grad = derive.exact_gradient(p)
    plain = derive.variances(derive.score_function(p), grad)
    with_b = derive.variances(derive.score_baseline(p, B), grad)
    return grad, plain, with_b


@pytest.mark.parametrize("family, f, points", [
    ("normal", "cos(2*z)", [dict(mu=0.3, sigma=1.7), dict(mu=-1.1, sigma=0.4),
                            dict(mu=2.0, sigma=0.9)]),
    ("exponential", "z**2 + 3*z", [dict(lam=0.5), dict(lam=1.0), dict(lam=2.5)]),
    ("normal", "-(x - z)**2/2 - 1000000", [dict(mu=0.3, sigma=1.0, x=1.5),
                                           dict(mu=-2.0, sigma=0.3, x=0.1)]),
])
def test_the_optimal_baseline_minimises_the_exact_variance(family, f, points):
    p = _problem(family, f, extra=("x",))
    opt = derive.optimal_baseline(p)
    grad, plain, with_b = _plain_and_symbolic(p)
    opt_var = derive.variances(derive.optimal_score_baseline(p), grad)
    for j, w in enumerate(p.wrt):
        v_of_b = with_b[j].expr
        assert v_of_b is not None and opt[w].expr is not None
        # stationary at b*, and convex in b (the coefficient of b**2 is E[s_w**2] > 0)
        assert sp.simplify(sp.diff(v_of_b, B).xreplace({B: opt[w].expr})) == 0
        curvature = sp.diff(v_of_b, B, 2)
        assert not curvature.has(B)
        for point in points:
            vals = _values(p, **point)
            b_star = float(derive.evaluate(opt[w].expr, vals))
            at_opt = float(derive.evaluate(opt_var[j].expr, vals))
            assert float(derive.evaluate(curvature, vals)) > 0
            assert at_opt <= float(derive.evaluate(plain[j].expr, vals)) * (1 + 1e-12)
            for b in (b_star - 1, b_star + 0.01, 0.5 * b_star, -b_star, 0.0, 1e6):
                other = float(derive.evaluate(v_of_b, {**vals, B: derive.exact_number(b)}))
                assert at_opt <= other * (1 + 1e-12) + 1e-12, (w, point, b, at_opt, other)


def test_the_optimal_baseline_by_quadrature_matches_its_closed_form():
    p = _problem("normal", "cos(2*z)")
    vals = _values(p, mu=0.3, sigma=1.7)
    closed = derive.optimal_baseline_at(p, vals)
    missing = {w: derive.Exact(None, "quadrature", missing="forced") for w in p.wrt}
    quad = derive.optimal_baseline_at(p, vals, missing)
    for w in p.wrt:
        assert closed[w].method == "closed-form" and quad[w].method == "quadrature"
        assert quad[w].value == pytest.approx(closed[w].value, rel=1e-12, abs=1e-14)


def _lecture():
    p = _problem("normal", "-(x - z)**2/2 - 1000000", extra=("x",))
    return p, _values(p, mu=0.3, sigma=1.0, x=1.5)


def test_the_lecture_scenario_falls_from_1e12_to_the_pathwise_order():
    p, vals = _lecture()
    grad = derive.exact_gradient(p)
    g = derive.gradient_at(p, grad, vals)

    def var(est):
        return derive.variance_at(est, derive.variances(est, grad), g, vals)

    plain, path = var(derive.score_function(p)), var(derive.pathwise(p))
    best, delta = var(derive.optimal_score_baseline(p)), var(derive.delta_method(p))
    for j, w in enumerate(p.wrt):
        assert plain[j].value > 1e11
        assert plain[j].value / best[j].value >= 1e6
        assert best[j].value <= 10 * path[j].value, (w, best[j], path[j])
        assert delta[j].value == 0  # f is quadratic: the Taylor expansion is f itself


def test_the_lecture_scenario_in_mcgrad_check():
    report = check("normal", "-(x - z)**2/2 - 1000000", {"mu": "0.3", "sigma": "1", "x": "1.5"},
                   samples=20_000, baseline="optimal")
    for w, entry in report["gradient"].items():
        row = entry["score_baseline"]
        assert row["baseline"] == "optimal" and row["agrees"] is True
        assert entry["score"]["variance_exact"] > 1e11
        assert row["variance_reduction"] >= 1e6
        assert row["variance_exact"] <= 10 * entry["pathwise"]["variance_exact"]
        assert row["value"] == pytest.approx(
            float(derive.evaluate(derive.optimal_baseline(_lecture()[0])[
                next(s for s in _lecture()[0].wrt if s.name == w)].expr, _lecture()[1])),
            rel=1e-12)


@pytest.mark.parametrize("family, f, make, fragment", [
    ("cauchy", "cos(z)", "delta", "no finite mean"),
    ("normal", "abs(z)", "delta", "not twice differentiable"),
    ("normal", "sign(z - 1)", "delta", "not twice differentiable"),
    ("uniform", "z**2", "0.5", "constant on the support"),
    ("uniform", "z**2", "optimal", "constant on the support"),
])
def test_refusals_come_with_their_reason(family, f, make, fragment):
    est = _make(_problem(family, f), make)
    assert not est.applies and fragment in est.refused


def test_a_refused_score_function_refuses_every_baseline():
    p = _problem("uniform", "log(z - a)")
    assert not derive.score_function(p).applies
    for make in ("0.5", "delta"):
        est = _make(p, make)
        assert est.refused == derive.score_function(p).refused
    assert all(ex.expr is None for ex in derive.optimal_baseline(p).values())


@pytest.mark.parametrize("baseline, fragment", [
    (derive.Z, "function of the sample z"),
    ("3", "is text"),
    ({"mu": 1}, "missing: sigma"),
])
def test_bad_baselines_raise(baseline, fragment):
    with pytest.raises(derive.DeriveError, match=fragment):
        derive.score_baseline(_problem("normal", "z**2"), baseline)


def test_a_parameter_q_does_not_depend_on_gets_a_zero_baseline():
    q = derive.family("normal")
    p = derive.problem(q, derive.parse("sin(x*z)", q, extra=("x",)), wrt=("mu", "x"))
    opt = derive.optimal_baseline(p)
    assert opt[X].expr == 0
    est = derive.optimal_score_baseline(p)
    assert est.components[1] == derive.score_function(p).components[1]


@pytest.mark.parametrize("text, parsed", [
    ("none", None), ("optimal", ("optimal", None)), ("delta", ("delta", None)),
    ("constant=-1e6", ("constant", sp.Integer(-10**6))), (" Optimal ", ("optimal", None)),
])
def test_baseline_text_is_parsed(text, parsed):
    assert parse_baseline(text) == parsed


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


LECTURE = ["normal", "--param", "mu=0.3", "--param", "sigma=1", "--param", "x=1.5",
           "--f", "-(x - z)**2/2 - 1000000"]


@pytest.mark.parametrize("bad", ["foo", "constant", "constant=", "constant=abc",
                                 "constant=inf", "constant=nan", "optimal=2", "delta=1"])
def test_a_bad_baseline_exits_2_with_one_line(capsys, bad):
    code, out, err = run(capsys, "check", *LECTURE, "--baseline", bad, "--samples", "100")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--baseline" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("baseline, value_key", [("constant=-1e6", "value"),
                                                 ("optimal", "value"),
                                                 ("delta", "expansion_point")])
def test_check_json_reports_the_baseline(capsys, baseline, value_key):
    code, out, _ = run(capsys, "check", *LECTURE, "--baseline", baseline, "--samples", "5000",
                       "--json")
    assert code == 0
    for entry in json.loads(out)["gradient"].values():
        row = entry["score_baseline"]
        assert {"baseline", "value", "mean", "stderr", "variance", "variance_exact", "agrees",
                "variance_reduction"} <= set(row)
        assert row["agrees"] is True and row[value_key] is not None
        if baseline == "delta":
            assert row["variance_exact"] == 0 and row["variance_reduction"] is None
        else:
            assert row["variance_reduction"] > 1e9


def test_check_table_shows_the_baseline_and_a_refusal(capsys):
    code, out, _ = run(capsys, "check", *LECTURE, "--baseline", "optimal", "--samples", "2000")
    assert code == 0 and "optimal b" in out and "variance divided by" in out
    code, out, _ = run(capsys, "check", "cauchy", "--param", "mu=0.1", "--param", "gamma=0.5",
                       "--f", "cos(z)", "--baseline", "delta", "--samples", "2000")
    assert code == 0 and "refused: " in out and "no finite mean" in out


def test_the_generated_module_has_the_optimal_baseline_when_asked():
    from derive._codegen import generate_module
    p, vals = _lecture()
    assert "score_function_baseline" not in generate_module(p)
    namespace = {}
    exec(compile(generate_module(p, baseline=True), "<generated>", "exec"), namespace)
    params = {s.name: float(v) for s, v in vals.items()}
    opt = derive.optimal_baseline(p)
    got = namespace["optimal_baseline"](**params)
    grad = derive.exact_gradient(p)
    g = derive.gradient_at(p, grad, vals)
    est = derive.optimal_score_baseline(p)
    var = derive.variance_at(est, derive.variances(est, grad), g, vals)
    run = numeric.estimate(namespace["score_function_baseline"], N, seed=7, **params)
    for j, w in enumerate(p.wrt):
        assert got[j] == pytest.approx(float(derive.evaluate(opt[w].expr, vals)), rel=1e-14)
        assert abs(run.mean[j] - g[w].value) <= Z_TOL * math.sqrt(var[j].value / N)
