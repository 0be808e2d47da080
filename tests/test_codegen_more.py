"""`mcgrad codegen` for the discrete families and the measure-valued estimator (--mvd).

Reference values come from the symbolic layer only (derive's closed forms, enumeration or
series sums at values, and derive.mvd_moments_at); tolerances for Monte Carlo means are z
standard errors from the exact per-sample variance, z for a false-failure rate of 1e-6."""

import functools
import importlib.util
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import derive
import numeric
from derive._codegen import generate_module
from derive._discrete import sum_at
from mcgrad._check import setup
from mcgrad.cli import main

DISCRETE = {
    "bernoulli": ("(z - x)**2", dict(p=0.3, x=0.45)),
    "categorical3": ("z**2 - z", dict(l1=0.2, l2=-0.5, l3=0.7)),
    "poisson": ("z**2", dict(lam=1.7)),
    "binomial": ("z**3", dict(n=5, p=0.35)),
    "geometric": ("1/z", dict(p=0.4)),
}
SAMPLES = 200_000
Z_RATE = 1e-6


def load(path, name="generated_more"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def discrete(name):
    """(analysis, its values at the parameters, module source, module namespace)."""
    f, params = DISCRETE[name]
    s = setup(name, f)
    a = derive.analyze(s.problem, steps=False)
    source = generate_module(a, command=f"mcgrad codegen {name}", version="0")
    namespace = {"__name__": f"generated_{name}"}
    exec(compile(source, f"<{name}>", "exec"), namespace)  # our own generated code
    return a, a.at(params), source, namespace


def _exact(at, wrt):
    return [at.gradient[w].value for w in wrt]


@pytest.mark.parametrize("name", sorted(DISCRETE))
def test_discrete_module_runs_without_sympy(name, tmp_path, block_sympy):
    """Written by the CLI, imported where SymPy cannot be imported: sample and score_function
    give the rows derive.numpy_estimator gives for the same seed, exactly; exact_gradient is
    derive's value to 1e-12 relative where a closed form exists, and absent otherwise."""
    f, params = DISCRETE[name]
    path = tmp_path / "grads.py"
    assert main(["codegen", name, "--f", f, "-o", str(path)]) == 0
    code = block_sympy + textwrap.dedent(f"""
        import numpy as np, importlib.util
        spec = importlib.util.spec_from_file_location("grads", {str(path)!r})
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        assert "sympy" not in sys.modules and not hasattr(m, "pathwise")
        p = {params!r}
        out = {{"wrt": list(m.WRT), "parameters": list(m.PARAMETERS),
               "sample": m.sample(np.random.default_rng(1), 6, **p).tolist(),
               "score": m.score_function(np.random.default_rng(2), 9, **p).tolist()}}
        if hasattr(m, "exact_gradient"):
            out["exact"] = m.exact_gradient(**p).tolist()
        if hasattr(m, "variance"):
            out["variance"] = m.variance(**p)["score_function"].tolist()
        print(repr(out))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    got = eval(result.stdout)  # noqa: S307 - a dict of lists of floats we printed
    a, at, source, _ = discrete(name)
    p = a.problem
    assert got["wrt"] == [w.name for w in p.wrt]
    assert "n" not in got["wrt"]  # the binomial's n is fixed, never differentiated
    fn = derive.numpy_estimator(a.estimators["score"])
    assert got["parameters"] == list(fn.parameters)
    assert got["score"] == fn(np.random.default_rng(2), 9, **params).tolist()
    assert all(float(v).is_integer() and v >= 0 for v in got["sample"])
    exact = _exact(at, p.wrt)
    closed = all(a.gradient[w].expr is not None for w in p.wrt)
    assert ("exact" in got) == closed, name
    if closed:
        np.testing.assert_allclose(got["exact"], exact, rtol=1e-12, atol=0)
    if "variance" in got:
        np.testing.assert_allclose(got["variance"], [v.value for v in at.variances["score"]],
                                   rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", sorted(DISCRETE))
def test_estimate_of_discrete_module_agrees_with_the_exact_gradient(name):
    """numeric.estimate of the generated score_function: |mean - exact| <= z SE per column,
    SE from derive's exact per-sample variance; and the variance estimate is near it."""
    a, at, _, module = discrete(name)
    _, params = DISCRETE[name]
    wrt = a.problem.wrt
    z = numeric.z_for_rate(Z_RATE / (len(DISCRETE) * len(wrt)))
    run = numeric.estimate(module["score_function"], SAMPLES, seed=11, moments=4, **params)
    variances = [at.variances["score"][j].value for j in range(len(wrt))]
    for j, w in enumerate(wrt):
        exact, var = at.gradient[w].value, variances[j]
        se = math.sqrt(var / SAMPLES)
        assert abs(run.mean[j] - exact) <= z * se, (w, run.mean[j], exact, se)
    # and the estimated per-sample variances within z SE(s**2) (fourth moments: light tails)
    verdicts = numeric.variance_agrees(run, variances, false_failure_rate=Z_RATE / (
        len(DISCRETE) * len(wrt)))
    assert all(v is not False for v in verdicts), (run.variance, variances)


def test_discrete_sample_has_the_family_law():
    """sample draws z from q: the mean of the generated sampler against E_q[z] from derive."""
    for name in ("poisson", "geometric", "categorical3", "binomial"):
        a, _, _, module = discrete(name)
        _, params = DISCRETE[name]
        q = a.problem.family
        values = {q.param(k): v for k, v in params.items()}
        ez = float(sum_at(q, q.q_pmf * derive.Z, values)[0])  # enumeration or series
        zs = module["sample"](np.random.default_rng(5), 100_000, **params)
        se = zs.std() / math.sqrt(zs.size)
        assert abs(zs.mean() - ez) <= numeric.z_for_rate(1e-6 / 4) * se, name


@pytest.mark.parametrize("name", ["categorical3", "binomial"])
def test_discrete_output_is_byte_identical(name, tmp_path):
    f, _ = DISCRETE[name]
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    assert main(["codegen", name, "--f", f, "-o", str(a)]) == 0
    assert main(["codegen", name, "--f", f, "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    text = a.read_text()
    assert f"mcgrad codegen {name} --f" in text and "Generated by mcgrad" in text
    assert "# pathwise is not generated" in text and "z is discrete" in text


def test_discrete_source_is_deterministic_across_hash_seeds():
    here = discrete("categorical3")[2]
    code = textwrap.dedent(f"""
        import sys, derive
        from mcgrad._check import setup
        from derive._codegen import generate_module
        s = setup("categorical3", {DISCRETE['categorical3'][0]!r})
        a = derive.analyze(s.problem, steps=False)
        sys.stdout.write(generate_module(a, command="mcgrad codegen categorical3", version="0"))
    """)
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "4321", "PATH": ""},
                           timeout=60).stdout
    assert there == here


def test_discrete_header_names_family_f_formulas_and_the_command():
    source = discrete("binomial")[2]
    head = source.split('"""')[1]
    for text in ("q = Binomial(n, p)", "f(z) = z**3", "score_function(rng, n_, **params):",
                 "d/dp: z**3*", "exact_gradient(**params):", "pathwise: not generated.",
                 "scalar parameters only", "mcgrad codegen binomial", "Generated by mcgrad 0"):
        assert text in head, text


def test_discrete_float32_is_refused_and_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "grads.py"
    assert main(["codegen", "bernoulli", "--f", "z", "--dtype", "float32", "-o", str(out)]) == 2
    assert "float64 only" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_binomial_number_of_trials_stays_fixed(capsys):
    assert main(["codegen", "binomial", "--f", "z", "--wrt", "n,p"]) == 2
    assert "cannot differentiate with respect to n" in capsys.readouterr().err
    _, _, _, module = discrete("binomial")
    with pytest.raises(ValueError, match="positive whole number"):
        module["score_function"](np.random.default_rng(0), 3, n=2.5, p=0.3)
    with pytest.raises(ValueError, match="0 < p < 1"):
        module["sample"](np.random.default_rng(0), 3, n=4, p=1.2)


# ------------------------------------------------------------------ measure-valued (--mvd)

MVD_F = "cos(2*z)"
MVD_VALUES = dict(mu=0.3, sigma=1.2)


def mvd_module(tmp):
    path = f"{tmp}/mvd.py"
    assert main(["codegen", "normal", "--f", MVD_F, "--mvd", "-o", path]) == 0
    return path


def _mvd_reference(problem, values):
    """(exact gradient, exact MVD per-sample variances) at the values, from derive."""
    a = derive.analyze(problem, steps=False)
    est = derive.measure_valued(problem, coupled=True)
    symbols = {s.name: s for s in problem.family.symbols}
    moments = derive.mvd_moments_at(est, {symbols[k]: v for k, v in values.items()})
    return est, _exact(a.at(values), problem.wrt), [m.variance for m in moments]


def _assert_mvd_agrees(fn, values, exact, var, seed):
    n = 200_000
    run = numeric.estimate(fn, n, seed=seed, **values)
    z = numeric.z_for_rate(Z_RATE / 6)  # 2 columns in each of 3 tests
    for j in range(2):
        assert abs(run.mean[j] - exact[j]) <= z * math.sqrt(var[j] / n), (j, run.mean, exact)


def test_mvd_module_agrees_with_derive(tmp_path):
    """measure_valued in the module: the rows of derive.numpy_estimator(measure_valued(p)) for
    the same seed, exactly; its mean within z SE of the exact gradient (SE from derive's exact
    MVD variance); variance()["measure_valued"] is derive's to 1e-12 relative where derive has
    a closed form."""
    path = mvd_module(str(tmp_path))
    module = load(path, "generated_mvd")
    text = open(path).read()
    assert "mcgrad codegen normal --f 'cos(2*z)' --mvd" in text and "sections 4, 5 and 6" in text
    s = setup("normal", MVD_F)
    est, exact, var = _mvd_reference(s.problem, MVD_VALUES)
    fn = derive.numpy_estimator(est)
    np.testing.assert_array_equal(module.measure_valued(np.random.default_rng(3), 50,
                                                        **MVD_VALUES),
                                  fn(np.random.default_rng(3), 50, **MVD_VALUES))
    got = module.variance(**MVD_VALUES)["measure_valued"]
    closed = [v.expr is not None for _, v in derive.mvd_moments(est)]
    assert any(closed)
    for j in range(2):  # nan where derive has no closed form (it uses quadrature there)
        assert got[j] == pytest.approx(var[j], rel=1e-12) if closed[j] else np.isnan(got[j])
    _assert_mvd_agrees(module.measure_valued, MVD_VALUES, exact, var, seed=13)


@pytest.mark.parametrize("f, define, values", [
    ("Heaviside(z - 1/2)", None, dict(mu=0.2, sigma=0.9)),
    ("z**3", {"sigma": "exp(s)"}, dict(mu=0.2, s=-0.1)),
], ids=["heaviside", "sigma=exp(s)"])
def test_mvd_discontinuous_f_and_reparametrized_scale(f, define, values):
    """A Heaviside f: pathwise is left out, measure_valued is written; sigma = exp(s): the
    chain rule. The mean agrees with derive's exact gradient within z SE."""
    s = setup("normal", f, define=define)
    source = generate_module(s.problem, mvd=True)
    assert "def measure_valued(" in source
    assert ("# pathwise is not generated" in source) == (define is None)
    namespace = {"__name__": "generated_mvd_more"}
    exec(compile(source, "<mvd>", "exec"), namespace)  # our own generated code
    _, exact, var = _mvd_reference(s.problem, values)
    _assert_mvd_agrees(namespace["measure_valued"], values, exact, var, seed=17)


def test_mvd_refusals():
    """Another family: an error naming the reason; f depending on a parameter differentiated:
    the function is left out with the reason; vector parameters: ValueError."""
    with pytest.raises(derive.DeriveError, match="normal family only"):
        generate_module(setup("poisson", "z").problem, mvd=True)
    source = generate_module(setup("normal", "(z - mu)**2").problem, mvd=True)
    assert "# measure_valued is not generated" in source and "f depends on mu" in source
    assert "def measure_valued" not in source
    namespace = {"__name__": "generated_mvd_arrays"}
    exec(compile(generate_module(setup("normal", "z**2").problem, mvd=True), "<m>", "exec"),
         namespace)
    with pytest.raises(ValueError, match="scalar parameters only"):
        namespace["measure_valued"](np.random.default_rng(0), 3, mu=np.zeros(2), sigma=1.0)
    with pytest.raises(ValueError, match="sigma > 0"):
        namespace["measure_valued"](np.random.default_rng(0), 3, mu=0.0, sigma=-1.0)


def test_binomial_exact_gradient_holds_for_p_above_one_half():
    """SymPy's summation over {0, ..., n} comes with the convergence condition of a
    hypergeometric series (p/(1 - p) < 1); the finite sum has no such condition, so the
    generated exact_gradient is a number at p >= 1/2 too: derive's enumeration there."""
    from derive._discrete import gradient_at
    a, _, _, module = discrete("binomial")
    p = a.problem
    n, prob = p.family.params
    for value in (0.5, 0.7, 0.95):
        enumerated = float(gradient_at(p, prob, {n: 5, prob: value})[0])
        got = module["exact_gradient"](n=5, p=value)[0]
        assert got == pytest.approx(enumerated, rel=1e-12)
