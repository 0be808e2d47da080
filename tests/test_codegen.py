"""Tests of derive.generate_module: generated code against the symbolic layer, without SymPy,
and through numeric.estimate for every family of the catalog.

Statistical assertions state their false-failure rate (1e-6 per test, split over its checks by
Bonferroni) and take the standard error from the exact per-sample variance.
"""

import functools
import math
import subprocess
import sys
import textwrap
import types

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import derive
import numeric
from derive._codegen import generate_module
from mcgrad._check import setup

CATALOG_F = {
    "normal": "-(x - z)**2/2 - 1000000", "lognormal": "z", "laplace": "z**2",
    "logistic": "z", "gumbel": "z", "cauchy": "cos(z)", "exponential": "z**2",
    "weibull": "z", "uniform": "z**2", "kumaraswamy": "z",
}
"""One integrand per family whose analysis is quick (budget 0: rules, then quadrature)."""

EXTRA = {
    "stable": ("normal", "softplus(x*z) + sigmoid(z)", None, None),
    "reparametrized": ("normal", "cos(2*z)", ("mu", "s"), {"sigma": "exp(s)"}),
    "logs": ("lognormal", "log(z)**2 + z", None, None),
    "gumbel-exp": ("gumbel", "exp(-z)", None, None),
    "indicator": ("uniform", "(z > 0)*z", None, None),
    "relu": ("laplace", "relu(z)", None, None),
    "conditions": ("exponential", "exp(t*z)", None, None),
    "clashing-names": ("normal", "(z - n)**2 + rng*z", None, None),
}
"""Problems exercising special forms: stable functions, reparametrization, Piecewise and
Heaviside, validity conditions, symbols named like the generated code's own variables."""

PROBLEMS = {**{name: (name, f, None, None) for name, f in CATALOG_F.items()}, **EXTRA}

def _floats(lo, hi):
    return st.floats(lo, hi, allow_subnormal=False)


NOISE = {
    "normal": _floats(-6, 6), "uniform": _floats(1e-6, 1 - 1e-6),
    "exponential": _floats(1e-6, 30), "laplace": _floats(-20, 20),
    "logistic": _floats(-20, 20), "gumbel": _floats(-2.5, 20),
    "cauchy": _floats(-1e4, 1e4),
}
"""Noise where nearly all draws fall (the base's quantiles 1e-6 .. 1 - 1e-6 or beyond)."""

RTOL = 1e-12
TINY = 1e-300  # results below this are subnormal in float64 and carry fewer digits


@functools.lru_cache(maxsize=None)
def analysed(name):
    """(analysis, setup) of a problem of PROBLEMS, once per session."""
    family, f, wrt, define = PROBLEMS[name]
    s = setup(family, f, wrt=wrt, define=define)
    return derive.analyze(s.problem, budget=0, steps=False), s


@functools.lru_cache(maxsize=None)
def generated(name, dtype="float64"):
    """(analysis, setup, module) for a problem of PROBLEMS, generated once per session."""
    analysis, s = analysed(name)
    return analysis, s, load(generate_module(analysis, dtype=dtype))


def load(source, name="generated"):
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


class FixedNoise:
    """A stand-in for numpy.random.Generator that hands out given noise values."""

    def __init__(self, noise):
        self.noise = np.asarray(noise, dtype=np.float64)

    def _give(self, size=None, dtype=np.float64, out=None):
        if out is not None:
            out[...] = self.noise.reshape(out.shape)
            return out
        return self.noise.reshape(size).copy()

    standard_normal = random = standard_exponential = _give

    def laplace(self, size=None):
        return self._give(size)

    logistic = gumbel = standard_cauchy = laplace


def symbols_of(s):
    return sorted(s.family.symbols | (s.problem.f.free_symbols - {derive.Z}),
                  key=lambda x: x.name)


def parameter_values(name):
    """A strategy of {symbol: float} in the family's domain."""
    _, s, _ = generated(name)
    fields = {x.name: _floats(0.2, 5) if x.is_positive else _floats(-3, 3)
              for x in symbols_of(s)}
    return st.fixed_dictionaries(fields)


def magnitude(expr):
    """A first-order scale of the rounding error of evaluating expr in floating point.

    Sums count the absolute values of their terms (the condition number of a sum), and a
    function f(u) adds |f'(u)| times the scale of u (cos(2.4*9771) inherits the rounding of its
    argument, about 2.6e-12 absolute). Errors up to 1e-12 of this scale are charged to the
    problem's conditioning, not to the generated code.
    """
    if expr.is_Add:
        return sp.Add(*map(magnitude, expr.args))
    if expr.is_Mul:
        return sp.Mul(*map(magnitude, expr.args))
    if expr.is_Pow and expr.exp.is_Integer:
        return magnitude(expr.base) ** expr.exp if expr.exp > 0 else sp.Abs(expr)
    if expr.is_Pow:
        b, p = expr.args
        return sp.Abs(expr) * (1 + sp.Abs(p) * magnitude(b) / sp.Abs(b)
                               + sp.Abs(sp.log(b)) * magnitude(p))
    if isinstance(expr, sp.Function) and len(expr.args) == 1 and expr.args[0].free_symbols:
        slope = expr.fdiff(1)
        if not slope.has(sp.Derivative, sp.Subs):   # sign, Heaviside: flat almost everywhere
            return sp.Abs(expr) + sp.Abs(slope) * magnitude(expr.args[0])
    return sp.Abs(expr)


def _heaviside(x, at_zero=0.5):
    return mpmath.mpf(at_zero) if x == 0 else mpmath.mpf(x > 0)


@functools.lru_cache(maxsize=None)
def _mp(expr, symbols):
    return sp.lambdify(symbols, expr, modules=[{"Heaviside": _heaviside}, "mpmath"])


def exact(expr, values):
    """expr at the values (floats, taken exactly) in 50-digit arithmetic (mpmath).

    Faster than derive.evaluate by 10-100x, and it takes the binary floats the generated code
    sees, not their shortest decimals. (derive.evaluate substitutes rationals first, which makes
    SymPy try exact powers such as (1 - 1/10**6)**(10**16/30000000000000001): minutes.)
    """
    symbols = tuple(sorted(values, key=lambda x: x.name))
    with mpmath.workdps(50):
        value = _mp(expr, symbols)(*[mpmath.mpf(float(values[x])) for x in symbols])
        if isinstance(value, mpmath.mpc):
            assert abs(value.imag) <= mpmath.mpf(10) ** -40 * (1 + abs(value.real)), value
            value = value.real
        return float(value)


def assert_close(got, expr, values, what):
    exact_value = exact(expr, values)
    scale = max(abs(exact_value), exact(magnitude(expr), values))
    assert abs(got - exact_value) <= RTOL * scale + TINY, \
        f"{what}: generated {got!r}, exact {exact_value!r}"


def check_values(s, params):
    values = {x: params[x.name] for x in symbols_of(s)}
    try:
        s.family.check_values(values)
    except derive.DeriveError:
        assume(False)
    return values


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@given(data=st.data())
def test_per_sample_functions_agree_with_their_expressions(name, data):
    """sample, score_function and pathwise at given noise equal z = g(eps) and the estimator
    components in the noise (Estimator.in_base), evaluated exactly, to 1e-12 relative."""
    analysis, s, module = generated(name)
    params = data.draw(parameter_values(name), label="params")
    values = check_values(s, params)
    base = s.family.base
    noise = data.draw(st.lists(NOISE[base.name], min_size=1, max_size=3), label="noise")
    at = {**values}
    z = module.sample(FixedNoise(noise), len(noise), **params)
    for i, e in enumerate(noise):
        at[base.symbol] = e
        assert_close(z[i], s.family.q_transform, at, f"z at eps={e}")
    for kind, est in analysis.estimators.items():
        if not est.applies:
            continue
        fn = getattr(module, {"score": "score_function", "pathwise": "pathwise"}[kind])
        rows = fn(FixedNoise(noise), len(noise), **params)
        assert rows.shape == (len(noise), len(s.problem.wrt))
        for i, e in enumerate(noise):
            at[base.symbol] = e
            for j, c in enumerate(est.in_base):
                assert_close(rows[i, j], c, at, f"{kind} column {j} at eps={e}")


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@given(data=st.data())
def test_closed_forms_agree_with_exact_evaluation(name, data):
    """exact_gradient and variance equal derive's closed forms, evaluated exactly, to 1e-12
    relative; nan (gradient) or inf (variance) where a validity condition fails."""
    analysis, s, module = generated(name)
    params = data.draw(parameter_values(name), label="params")
    values = check_values(s, params)
    if hasattr(module, "exact_gradient"):
        got = module.exact_gradient(**params)
        for j, w in enumerate(s.problem.wrt):
            _check_exact(got[j], analysis.gradient[w], values, f"d/d{w}", np.isnan)
    if hasattr(module, "variance"):
        for fname, got in module.variance(**params).items():
            kind = "score" if fname == "score_function" else fname
            for j, ex in enumerate(analysis.variances[kind]):
                if ex.infinite:
                    assert got[j] == np.inf
                elif ex.expr is None:
                    assert np.isnan(got[j])
                else:
                    _check_exact(got[j], ex, values, f"{fname} variance {j}", np.isposinf)


def _check_exact(got, ex, values, what, when_fails):
    if ex.expr is None:
        assert np.isnan(got), what
        return
    if any(derive._numbers.holds(c, values) is False for c in ex.conditions):
        assert when_fails(got), f"{what}: {got} where a condition fails"
        return
    assert_close(got, ex.expr, values, what)


def test_every_catalog_family_is_covered():
    assert set(CATALOG_F) == set(derive.CATALOG)


PARAMS = {
    "normal": dict(mu=0.3, sigma=1.2, x=0.7), "lognormal": dict(mu=0.1, sigma=0.4),
    "laplace": dict(mu=0.5, b=1.1), "logistic": dict(mu=0.2, s=0.8),
    "gumbel": dict(mu=0.3, beta=1.5), "cauchy": dict(mu=0.4, gamma=0.7),
    "exponential": dict(lam=1.7), "weibull": dict(lam=1.3, k=2.2),
    "uniform": dict(a=-0.5, b=1.5), "kumaraswamy": dict(a=2.0, b=3.0),
}
SAMPLES = 200_000


@functools.lru_cache(maxsize=None)
def _comparisons(name):
    """[(kind, column, exact gradient, exact variance)] where a mean can be compared: the
    gradient exists and the per-sample variance is finite (the CLT then gives the SE)."""
    analysis, s, _ = generated(name)
    at = analysis.at(PARAMS[name])
    out = []
    for kind, est in analysis.estimators.items():
        if not est.applies:
            continue
        for j, w in enumerate(s.problem.wrt):
            g, v = at.gradient[w], at.variances[kind][j]
            if g.value is not None and v.value is not None:
                out.append((kind, j, g.value, v.value))
    return out


@functools.lru_cache(maxsize=None)
def total_checks():
    return sum(len(_comparisons(name)) for name in CATALOG_F)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CATALOG_F))
def test_estimate_of_generated_code_agrees_with_the_exact_gradient(name, dtype):
    """|mean - exact| <= z * sqrt(Var_exact / n) for each estimator column of every catalog
    family, z for a false-failure rate of 1e-6 over all columns of all families and both
    dtypes (float32 rounding, ~1e-7 relative, is far below the standard error). Columns whose
    per-sample variance is infinite (Cauchy pathwise d/dgamma) have no standard error."""
    _, _, module = generated(name, dtype)
    z = numeric.z_for_rate(1e-6 / (2 * total_checks()))
    runs = {}
    for kind, j, exact, var in _comparisons(name):
        fn = getattr(module, {"score": "score_function", "pathwise": "pathwise"}[kind])
        if kind not in runs:
            runs[kind] = numeric.estimate(fn, SAMPLES, seed=7, **PARAMS[name])
        mean = runs[kind].mean[j]
        se = math.sqrt(var / SAMPLES)
        assert abs(mean - exact) <= z * se + 1e-6 * abs(exact), (kind, j, mean, exact, se)


@pytest.mark.parametrize("name", ["normal", "logistic"])
def test_float32_module_computes_in_float32(name):
    """float32 draws (or float64 draws cast, where the Generator has no dtype) and float32
    arithmetic: the same numbers as float64 on the same noise, to float32 rounding."""
    _, _, narrow = generated(name, "float32")
    _, _, wide = generated(name)
    rows = narrow.score_function(np.random.default_rng(0), 1000, **PARAMS[name])
    assert rows.dtype == np.float32
    assert narrow.sample(np.random.default_rng(0), 5, **PARAMS[name]).dtype == np.float32
    noise = np.random.default_rng(1).standard_normal(1000)
    expected = wide.score_function(FixedNoise(noise), 1000, **PARAMS[name])
    # f ~ -1e6 in the normal problem: float32 rounding of f, 6e-8 relative, sets the scale
    np.testing.assert_allclose(narrow.score_function(FixedNoise(noise), 1000, **PARAMS[name]),
                               expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_estimate_does_not_depend_on_the_chunk_size():
    """One draw per call: chunks see the same stream, so estimates differ by rounding only."""
    _, _, module = generated("normal")
    a = numeric.estimate(module.score_function, 100_003, seed=3, chunk_size=1000,
                         **PARAMS["normal"])
    b = numeric.estimate(module.score_function, 100_003, seed=3, **PARAMS["normal"])
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
    np.testing.assert_allclose(a.variance, b.variance, rtol=1e-10)


@pytest.mark.parametrize("name", ["normal", "weibull", "uniform"])
def test_parameter_arrays_broadcast_like_separate_calls(name):
    """A batch of parameters gives, for each of its elements, what a scalar call gives on the
    same noise; layouts (n, *S, k), (n, *S) and (*S, k)."""
    _, s, module = generated(name)
    params = dict(PARAMS[name])
    first = symbols_of(s)[0].name
    batch = np.array([[params[first], params[first] * 0.5 + 0.1, params[first] * 0.9]])
    if first == "a" and name == "uniform":
        batch = np.array([[-0.5, -1.0, 0.25]])
    noise = np.random.default_rng(1).random((1, 3, 4)) * 0.9 + 0.05
    rows = module.pathwise(FixedNoise(noise), 4, **{**params, first: batch})
    z = module.sample(FixedNoise(noise), 4, **{**params, first: batch})
    grad = module.exact_gradient(**{**params, first: batch})
    assert rows.shape == (4, 1, 3, len(module.WRT)) and z.shape == (4, 1, 3)
    assert grad.shape == (1, 3, len(module.WRT))
    for i in range(3):
        one = {**params, first: batch[0, i]}
        np.testing.assert_array_equal(rows[:, 0, i], module.pathwise(FixedNoise(noise[0, i]), 4,
                                                                     **one))
        np.testing.assert_array_equal(z[:, 0, i], module.sample(FixedNoise(noise[0, i]), 4,
                                                                **one))
        np.testing.assert_array_equal(grad[0, i], module.exact_gradient(**one))


def test_bad_parameters_are_refused_with_the_constraint():
    _, _, module = generated("normal")
    with pytest.raises(ValueError, match="sigma > 0"):
        module.pathwise(np.random.default_rng(0), 3, mu=0.0, sigma=np.array([1.0, -1.0]), x=0.0)
    _, _, uniform = generated("uniform")
    with pytest.raises(ValueError, match="a < b"):
        uniform.sample(np.random.default_rng(0), 3, a=1.0, b=0.0)


def test_softplus_and_sigmoid_stay_finite_far_out():
    """log(1 + exp(800)) is inf in float64; the generated logaddexp form is 800."""
    analysis, s, module = generated("stable")
    params = dict(mu=0.0, sigma=1.0, x=1.0)
    rows = module.score_function(FixedNoise([800.0, -800.0]), 2, **params)
    assert np.isfinite(rows).all()
    assert rows[0, 0] == pytest.approx(800 * (800 + 1))   # f * eps with f = 800 + 1
    assert "numpy.logaddexp" in generate_module(analysis)


def test_refused_estimator_is_left_out_with_the_reason():
    analysis, _, module = generated("indicator")
    source = generate_module(analysis)
    assert not hasattr(module, "pathwise") and hasattr(module, "score_function")
    assert "# pathwise is not generated" in source and "discontinuous" in source


def test_generated_source_is_deterministic_across_hash_seeds():
    """Byte-identical output for the same inputs, in another process with another hash seed."""
    analysis, _, _ = generated("normal")
    here = generate_module(analysis, command="mcgrad codegen normal", version="0.1.0")
    assert here == generate_module(analysis, command="mcgrad codegen normal", version="0.1.0")
    code = textwrap.dedent(f"""
        import sys, derive
        from mcgrad._check import setup
        from derive._codegen import generate_module
        s = setup("normal", {CATALOG_F['normal']!r})
        a = derive.analyze(s.problem, budget=0, steps=False)
        sys.stdout.write(generate_module(a, command="mcgrad codegen normal", version="0.1.0"))
    """)
    for seed in ("12345",):
        there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        assert there == here


@pytest.mark.parametrize("name", ["normal", "logistic", "weibull", "relu"])
def test_generated_module_runs_without_sympy(name, tmp_path, block_sympy):
    """The module imports and runs where SymPy cannot be imported, and gives the same numbers
    as in this process (scipy.special where a special function needs it)."""
    analysis, s, module = generated(name)
    path = tmp_path / "grads.py"
    path.write_text(generate_module(analysis))
    params = PARAMS.get(name, dict(mu=0.3, b=1.1))
    code = block_sympy + textwrap.dedent(f"""
        import numpy as np, importlib.util
        spec = importlib.util.spec_from_file_location("grads", {str(path)!r})
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        assert "sympy" not in sys.modules
        p = {params!r}
        out = [m.sample(np.random.default_rng(1), 5, **p)]
        for f in ("score_function", "pathwise"):
            if hasattr(m, f):
                out.append(getattr(m, f)(np.random.default_rng(1), 5, **p).ravel())
        if hasattr(m, "exact_gradient"):
            out.append(m.exact_gradient(**p))
        print(repr(np.concatenate(out).tolist()))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    params_here = params
    expected = [module.sample(np.random.default_rng(1), 5, **params_here)]
    for f in ("score_function", "pathwise"):
        if hasattr(module, f):
            expected.append(getattr(module, f)(np.random.default_rng(1), 5, **params_here).ravel())
    if hasattr(module, "exact_gradient"):
        expected.append(module.exact_gradient(**params_here))
    assert eval(result.stdout) == np.concatenate(expected).tolist()  # noqa: S307 (a list of floats)


def test_numpy_estimator_is_the_generated_function():
    analysis, s, module = generated("normal")
    fn = derive.numpy_estimator(analysis.estimators["pathwise"])
    assert fn.parameters == module.PARAMETERS == ("mu", "sigma", "x")
    assert "def pathwise(" in fn.source
    np.testing.assert_array_equal(fn(np.random.default_rng(2), 7, **PARAMS["normal"]),
                                  module.pathwise(np.random.default_rng(2), 7, **PARAMS["normal"]))
    refused = generated("indicator")[0].estimators["pathwise"]
    with pytest.raises(derive.DeriveError, match="does not apply"):
        derive.numpy_estimator(refused)


@pytest.mark.parametrize("bad, message", [
    (dict(dtype="float16"), "dtype must be one of float64, float32"),
])
def test_bad_arguments_are_refused(bad, message):
    analysis, _, _ = generated("normal")
    with pytest.raises(derive.DeriveError, match=message):
        generate_module(analysis, **bad)


@pytest.mark.parametrize("f, message", [
    ("(z - numpy)**2", "would shadow a name"),
    ("(z - DTYPE)**2", "would shadow a name"),
])
def test_symbols_that_would_shadow_the_module_are_refused(f, message):
    s = setup("exponential", f)
    with pytest.raises(derive.DeriveError, match=message):
        generate_module(s.problem, budget=0)
