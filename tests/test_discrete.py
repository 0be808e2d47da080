"""Discrete families: exact sums, the score-function estimator, the pathwise refusal, the CLI.

References are computed independently here with mpmath (the pmf written from its definition,
sums by enumeration or ``mpmath.nsum``, gradients by ``mpmath.diff`` of those sums), never typed.
"""

import json

import mpmath
import numpy as np
import pytest
import sympy as sp

import derive
import numeric
from derive import _discrete
from mcgrad.cli import main

Z_TOL = numeric.z_for_rate(1e-6)
BUDGET = 1.0  # seconds for sympy.summation: keeps the file fast; failures fall back to series


def _softmax(ls):
    w = [mpmath.exp(x) for x in ls]
    return [x / sum(w) for x in w]


# name -> (family name, {param: value}, support(values) -> iterable or None, pmf(k, values))
PMF = {
    "bernoulli": (lambda v: range(2), lambda k, v: v["p"] if k == 1 else 1 - v["p"]),
    "categorical3": (lambda v: range(1, 4),
                     lambda k, v: _softmax([v["l1"], v["l2"], v["l3"]])[k - 1]),
    "poisson": (lambda v: None,
                lambda k, v: mpmath.exp(-v["lam"]) * v["lam"]**k / mpmath.factorial(k)),
    "binomial": (lambda v: range(int(v["n"]) + 1),
                 lambda k, v: mpmath.binomial(v["n"], k) * v["p"]**k * (1 - v["p"])**(v["n"] - k)),
    "geometric": (lambda v: None, lambda k, v: v["p"] * (1 - v["p"])**(k - 1)),
}
LOWEST = {"poisson": 0, "geometric": 1}

CASES = [  # (family, f text, f in mpmath, values)
    ("bernoulli", "(z - 0.45)**2", lambda z: (z - mpmath.mpf("0.45"))**2, {"p": "0.3"}),
    ("categorical3", "z**2 + sin(z)", lambda z: z**2 + mpmath.sin(z),
     {"l1": "0.2", "l2": "-0.5", "l3": "1.1"}),
    ("poisson", "z**2", lambda z: z**2, {"lam": "2.5"}),
    ("poisson", "cos(z)", mpmath.cos, {"lam": "1.7"}),
    ("binomial", "z**3 - z", lambda z: z**3 - z, {"n": "7", "p": "0.35"}),
    ("geometric", "sqrt(z)", mpmath.sqrt, {"p": "0.3"}),
    ("geometric", "z**2", lambda z: z**2, {"p": "0.45"}),
]


def _expect(name, g, values):
    """E_q[g(z)] by enumeration or mpmath.nsum, from the pmf's definition."""
    support, pmf = PMF[name]
    v = {k: mpmath.mpf(x) for k, x in values.items()}
    finite = support(v)
    if finite is not None:
        return mpmath.fsum(pmf(k, v) * g(mpmath.mpf(k)) for k in finite)
    return mpmath.nsum(lambda k: pmf(int(k), v) * g(k), [LOWEST[name], mpmath.inf])


def _gradient(name, g, values, w):
    x0 = mpmath.mpf(values[w])
    return mpmath.diff(lambda x: _expect(name, g, {**values, w: x}), x0)


def _analysis(name, f_text, wrt=None):
    fam = derive.family(name)
    p = derive.problem(fam, derive.parse(f_text, fam), wrt)
    return derive.analyze(p, budget=BUDGET, steps=False)


@pytest.fixture(scope="module")
def analyses():
    return {(name, f): _analysis(name, f) for name, f, _, _ in CASES}


@pytest.mark.parametrize("name, f_text, g, values", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_exact_gradient_matches_independent_sums(analyses, name, f_text, g, values):
    a = analyses[(name, f_text)]
    at = a.at(values)
    with mpmath.workdps(30):
        for w in a.problem.wrt:
            reference = _gradient(name, g, values, w.name)
            got = at.gradient[w]
            assert got.value is not None, got.missing
            assert abs(got.value - float(reference)) <= 1e-12 * (1 + abs(reference)), \
                (w, got, reference)


@pytest.mark.parametrize("name, f_text, g, values", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_exact_expectation_matches_independent_sums(analyses, name, f_text, g, values):
    a = analyses[(name, f_text)]
    fam = a.problem.family
    exact = {fam.param(k) if k in fam.param_names else derive.user_symbol(k):
             derive.exact_number(v) for k, v in values.items()}
    if a.expectation.expr is not None:
        value = derive.evaluate(a.expectation.expr, exact)
    else:
        value, _ = _discrete.sum_at(fam, fam.q_pmf * a.problem.f, exact)
    with mpmath.workdps(30):
        reference = _expect(name, g, values)
    assert abs(value - reference) <= mpmath.mpf(10)**-20 * (1 + abs(reference))


@pytest.mark.parametrize("name", ["bernoulli", "categorical3", "poisson", "binomial",
                                  "geometric"])
def test_score_has_mean_zero(name):
    fam = derive.family(name)
    for w in fam.params:
        if w in fam.fixed:
            continue
        s = sp.diff(fam.q_log_density, w)
        ex = derive.expectation(fam, s, budget=BUDGET)
        if ex.expr is not None:
            assert sp.simplify(ex.expr) == 0, (w, ex.expr)
        else:
            values = {p: sp.Rational(3, 10) if p.name != "n" else 5 for p in fam.params}
            value, _ = _discrete.sum_at(fam, fam.q_pmf * s, values)
            assert abs(value) < 1e-25


@pytest.mark.parametrize("seed", [0, 20260101])
@pytest.mark.parametrize("name, f_text, g, values", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_score_function_monte_carlo_agrees(analyses, name, f_text, g, values, seed):
    a = analyses[(name, f_text)]
    at = a.at(values)
    fn = derive.numpy_estimator(a.estimators["score"])
    kwargs = {k: float(v) for k, v in values.items()}
    est = numeric.estimate(fn, 200_000, seed=seed, moments=4, **kwargs)
    for j, w in enumerate(a.problem.wrt):
        var = at.variances["score"][j].value
        assert var is not None and var > 0
        se = (var / est.n) ** 0.5
        assert abs(est.mean[j] - at.gradient[w].value) <= Z_TOL * se, (w, est.mean[j])
    agree = numeric.variance_agrees(est, [v.value for v in at.variances["score"]])
    assert all(agree), (est.variance, at.variances["score"])


def test_pathwise_is_refused_with_the_reason(analyses):
    for a in analyses.values():
        pw = a.estimators["pathwise"]
        assert not pw.applies and "discrete" in pw.refused and "score-function" in pw.refused
        assert a.variances["pathwise"] == ()
        with pytest.raises(derive.DeriveError, match="does not apply"):
            derive.numpy_estimator(pw)


@pytest.mark.parametrize("name, f_text, values", [
    ("poisson", "exp(exp(z))", {"lam": "1.5"}),
    ("geometric", "2**z", {"p": "0.3"}),      # ratio 2 (1 - p) = 1.4 > 1
    ("geometric", "2**z", {"p": "0.5"}),      # terms constant: do not fall to 0
    ("geometric", "2**z/z", {"p": "0.5"}),    # terms 1/z: the harmonic series
])
def test_divergent_expectations_give_no_number(name, f_text, values):
    a = _analysis(name, f_text)
    at = a.at(values)
    for w in a.problem.wrt:
        assert at.gradient[w].value is None and at.gradient[w].infinite, at.gradient[w]
    fam = a.problem.family
    exact = {fam.param(k): derive.exact_number(v) for k, v in values.items()}
    with pytest.raises(derive.MomentError):
        _discrete.sum_at(fam, fam.q_pmf * a.problem.f, exact)


def test_convergent_neighbour_of_a_divergent_case():
    """2**z under Geometric(0.6): ratio 0.8, finite, and the gradient matches the sums."""
    a = _analysis("geometric", "2**z")
    at = a.at({"p": "0.6"})
    with mpmath.workdps(30):
        reference = _gradient("geometric", lambda z: 2**z, {"p": "0.6"}, "p")
    got = at.gradient[a.problem.wrt[0]].value
    assert abs(got - float(reference)) <= 1e-12 * abs(reference)


def test_variance_is_infinite_where_the_second_moment_diverges():
    """E[f s] finite but E[(f s)**2] infinite: Geometric(0.6), f = 1.7**z (1.7 * 0.4 < 1 <
    1.7**2 * 0.4)."""
    a = _analysis("geometric", "1.7**z")
    at = a.at({"p": "0.6"})
    assert at.gradient[a.problem.wrt[0]].value is not None
    v = at.variances["score"][0]
    assert v.value is None and v.infinite, v


def test_binomial_refuses_n_and_needs_a_whole_number():
    fam = derive.family("binomial")
    f = derive.parse("z", fam)
    with pytest.raises(derive.DeriveError, match="number of trials"):
        derive.problem(fam, f, wrt=["n"])
    p = derive.problem(fam, f)
    assert [w.name for w in p.wrt] == ["p"]
    with pytest.raises(derive.DeriveError, match="whole number"):
        fam.check_values({fam.param("n"): sp.Rational(5, 2), fam.param("p"): sp.Rational(1, 3)})


def test_categorical_k_from_name_or_logits():
    assert derive.family("categorical4").param_names == ("l1", "l2", "l3", "l4")
    assert derive.discrete_family_name("categorical", {"l1": 0, "l2": 1}) == "categorical2"
    with pytest.raises(derive.DeriveError, match="without gaps"):
        derive.discrete_family_name("categorical", {"l1": 0, "l3": 1})
    with pytest.raises(derive.DeriveError, match="categorical3"):
        derive.family("categorical")


def test_categorical_draws_follow_softmax():
    a = _analysis("categorical3", "z")
    fn = derive.numpy_estimator(a.estimators["score"])
    ns = {"l1": 0.2, "l2": -0.5, "l3": 1.1}
    # z from the estimator's own sampler: column l1 of f*s + 0 is z*(1[z=1] - pi1)
    src = fn.source.replace("return _out.T", "return z")
    space = {}
    exec(compile(src, "<test>", "exec"), space)  # the generated source, sampling only
    z = space["score_function"](np.random.default_rng(5), 400_000, **ns)
    probs = [float(x) for x in _softmax([mpmath.mpf(str(ns[k])) for k in ("l1", "l2", "l3")])]
    for k, pk in enumerate(probs, 1):
        share = np.mean(z == k)
        assert abs(share - pk) <= Z_TOL * (pk * (1 - pk) / z.size) ** 0.5


@pytest.mark.parametrize("name, f_text, values", [
    ("poisson", "z**2", {"lam": 2.0}), ("categorical3", "z", {"l1": 0.0, "l2": 1.0, "l3": -1.0}),
    ("binomial", "z", {"n": 9, "p": 0.4}), ("geometric", "z", {"p": 0.2}),
    ("bernoulli", "z", {"p": 0.7})])
def test_estimates_do_not_depend_on_the_chunk_size(name, f_text, values):
    """One draw call per invocation: the same stream whatever the chunk size."""
    fn = derive.numpy_estimator(_analysis(name, f_text).estimators["score"])
    e1 = numeric.estimate(fn, 30_000, seed=3, chunk_size=30_000, **values)
    e2 = numeric.estimate(fn, 30_000, seed=3, chunk_size=7_000, **values)
    np.testing.assert_allclose(e1.mean, e2.mean, rtol=1e-10)


CLI_EXIT = [
    (["check", "bernoulli", "--param", "p=0.3", "--f", "(z - 0.45)**2"], 0),
    (["check", "categorical", "--param", "l1=0.2", "--param", "l2=-0.5", "--param", "l3=1.1",
      "--f", "z**2"], 0),
    (["check", "binomial", "--param", "n=10", "--param", "p=0.3", "--f", "z", "--wrt", "n"], 2),
    (["check", "binomial", "--param", "n=2.5", "--param", "p=0.3", "--f", "z"], 2),
    (["check", "bernoulli", "--param", "p=1.3", "--f", "z"], 2),
    (["check", "poison", "--param", "lam=1", "--f", "z"], 2),
    (["derive", "categorical", "--f", "z"], 2),
    (["codegen", "poisson", "--f", "z**2", "--dtype", "float32"], 2),  # float64 only
]


@pytest.mark.parametrize("argv, code", CLI_EXIT, ids=[" ".join(a[:2]) + f"-{c}"
                                                      for a, c in CLI_EXIT])
def test_cli_exit_codes(argv, code, capsys):
    assert main(argv) == code
    if code == 2:
        assert "error:" in capsys.readouterr().err


def test_cli_json_shape(capsys):
    argv = ["check", "poisson", "--param", "lam=2.5", "--f", "cos(z)", "--json",
            "--samples", "50000"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "poisson" and report["f"] == "cos(z)"
    entry = report["gradient"]["lam"]
    assert set(entry) == {"exact", "exact_method", "score", "pathwise"}
    assert entry["exact_method"] in ("summation", "series")
    assert set(entry["score"]) == {"mean", "stderr", "variance", "variance_exact", "agrees"}
    assert entry["score"]["agrees"] is True
    assert "discrete" in entry["pathwise"]["refused"]


@pytest.mark.parametrize("estimator, verdict", [("cos(z)*(z/lam - 1)", "confirmed"),
                                                ("cos(z)*(z/lam - 2)", "refuted")])
def test_verify_decides_a_claimed_discrete_estimator(estimator, verdict):
    """mcgrad verify --estimator on a family without base noise: E_q[h] by summation (it used to
    fail with an AttributeError on family.base)."""
    fam = derive.family("poisson")
    p = derive.problem(fam, derive.parse("cos(z)", fam))
    result = derive.verify_estimator(p, "lam", estimator)
    assert result.verdict == verdict, result.reason


def test_categorical_scores_do_not_overflow_at_large_logits(capsys):
    """exp(l1)/(exp(l1) + ...) printed as it comes is nan at l1 = 800; the generated code
    shifts every logit by the largest (the softmax is invariant), so the check agrees."""
    import json
    from mcgrad.cli import main
    assert main(["check", "categorical3", "--param", "l1=800", "--param", "l2=799.5",
                 "--param", "l3=0", "--f", "z**2", "--samples", "50000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    grads = [report["gradient"][w] for w in ("l1", "l2")]
    assert all(abs(g["exact"]) > 0.1 and g["score"]["agrees"] for g in grads)


def test_the_logit_shift_is_used_only_where_the_components_are_invariant():
    from derive._discrete import _shifted_logits
    fam = derive.family("categorical3")
    l1, l2, l3 = fam.params
    softmax = sp.exp(l1) / (sp.exp(l1) + sp.exp(l2) + sp.exp(l3))
    assert _shifted_logits(fam, [derive.Z * softmax]) is not None
    assert _shifted_logits(fam, [derive.Z * softmax + sp.exp(l1)]) is None
