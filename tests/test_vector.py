"""Vector latents: mvnormal_diag and mvnormal, decoders, matrix-form estimators (derive/_vector.py).

References come from the symbolic layer (moment rules checked against SymPy's differentiation of
the expanded polynomial); Monte Carlo tolerances are z * SE with z for a false-failure rate of
1e-6 per comparison, SE from the exact per-sample variance where derive has it.
"""

import json
import math

import numpy as np
import pytest

import derive
import numeric
from derive import _vector
from derive._vector import (vector_estimator, vector_exact, vector_family, vector_problem,
                            verify_matrix_forms)
from mcgrad.cli import main

Z = numeric.z_for_rate(1e-6)
FAMILIES = ("mvnormal_diag", "mvnormal")


def _setup(name, d, D=6, seed=1):
    rng = np.random.default_rng(seed)
    vals = {"mu": 0.5 * rng.standard_normal(d), "W": rng.standard_normal((D, d)),
            "c": 0.1 * rng.standard_normal(D), "x": rng.standard_normal(D), "s": 0.7}
    scale = np.exp(0.3 * rng.standard_normal(d))
    if name == "mvnormal_diag":
        vals["sigma"] = scale
    else:
        L = np.tril(0.3 * rng.standard_normal((d, d)), -1)
        vals["L"] = L + np.diag(scale)
    return vals


def _plain(vals):
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vals.items()}


def _run(p, kind, vals, n, seed):
    fn = vector_estimator(p, kind)
    return numeric.estimate(fn, n, seed=seed, **{k: vals[k] for k in fn.parameters})


# ------------------------------------------------------------------ families and parsing

def test_wrt_names_each_scalar_parameter_in_column_order():
    assert vector_family("mvnormal_diag", 2).wrt == ("mu[0]", "mu[1]", "sigma[0]", "sigma[1]")
    assert vector_family("mvnormal", 3).wrt[3:] == ("L[0,0]", "L[1,0]", "L[1,1]", "L[2,0]",
                                                    "L[2,1]", "L[2,2]")
    assert vector_family("mvnormal", 32).k == 32 + 32 * 33 // 2


def test_components_are_written_z_index():
    p = vector_problem(vector_family("mvnormal_diag", 3), "z[0]*z[2] + sin(z[1]) - x")
    z0, z1, z2 = p.z
    assert p.f == z0 * z2 + derive.parse_expression("sin(a)", {"a": z1}) - p.data[0]
    assert p.data_names == ("x",)


@pytest.mark.parametrize("text, message", [
    ("z[3]", "out of range"),
    ("z[-1]", "whole number"),
    ("z[0.5]", "whole number"),
    ("z[x]", "whole number"),
    ("z[0:2]", "whole number"),
    ("z", "is a vector"),
    ("z[0][0]", "subscript"),
    ("y[0]", "subscript"),
    ("__import__('os').system('true')", "not allowed"),
    ("z[0].real", "attribute"),
    ("eps*z[0]", "reserved"),
])
def test_bad_component_expressions_are_refused(text, message):
    with pytest.raises(derive.DeriveError, match=message):
        vector_problem(vector_family("mvnormal_diag", 3), text)


@pytest.mark.parametrize("name, d", [("poisson", 2), ("nosuch", 2), ("normal", 0),
                                     ("mvnormal", 0), ("mvnormal", 1.5),
                                     ("mvnormal_diag", 10**6), ("mvnormal", True)])
def test_bad_family_or_dimension(name, d):
    with pytest.raises(derive.DeriveError):
        vector_family(name, d)


# ------------------------------------------------------------------ matrix forms vs SymPy

@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("f", ["gaussian_decoder", "bernoulli_decoder",
                               "z[0]*z[1] - 3*z[1]**2 + x*z[0]", "exp(z[0])*cos(z[1])"])
def test_matrix_formulas_equal_sympy_scalar_differentiation(name, d, f):
    p = vector_problem(vector_family(name, d), f)
    result = verify_matrix_forms(p, D=2)
    assert result["pathwise"] and result["score"]
    if f in ("gaussian_decoder", "z[0]*z[1] - 3*z[1]**2 + x*z[0]"):
        assert result["exact"] is True
    else:
        assert result["exact"] is None


def test_verification_is_not_vacuous(monkeypatch):
    p = vector_problem(vector_family("mvnormal", 2), "gaussian_decoder")
    right = _vector._matrix_g
    monkeypatch.setattr(_vector, "_matrix_g", lambda *a: 2 * right(*a))
    assert verify_matrix_forms(p, D=2)["pathwise"] is False


def test_matrix_derivation_of_the_decoder_does_not_depend_on_d():
    g = [str(derive.matrix_derivation(vector_problem(vector_family("mvnormal_diag", d),
                                                     "gaussian_decoder"))["g"]) for d in (2, 32)]
    assert g[0] == g[1] == "s**(-2)*W.T*(-W*z - c + x)"


# ------------------------------------------------------------------ Monte Carlo vs exact

@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("kind", ["score", "pathwise"])
def test_gaussian_decoder_estimators_agree_with_moment_rules(name, kind):
    vals = _setup(name, 4)
    p = vector_problem(vector_family(name, 4), "gaussian_decoder")
    exact = vector_exact(p, _plain(vals))
    est = _run(p, kind, vals, 200_000, seed=11)
    if kind == "pathwise":  # exact per-sample variance; the sample variance agrees with it
        se = np.sqrt(np.array(exact.pathwise_variance) / est.n)
        assert np.allclose(est.variance, exact.pathwise_variance, rtol=0.05)
    else:
        se = est.stderr
    assert np.all(np.abs(est.mean - np.array(exact.gradient)) <= Z * se)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("f", ["z[0]*z[1] - 3*z[2]**2 + x*z[0] + 1", "z[0]**2*z[1]**2 + z[2]**3"])
def test_expression_estimators_agree_with_gaussian_moments(name, f):
    vals = {**_setup(name, 3), "x": 0.4}
    p = vector_problem(vector_family(name, 3), f)
    exact = vector_exact(p, _plain(vals))
    assert exact.gradient is not None
    for kind, n in (("score", 400_000), ("pathwise", 100_000)):
        est = _run(p, kind, vals, n, seed=5)
        assert np.all(np.abs(est.mean - np.array(exact.gradient)) <= Z * est.stderr + 1e-12)


@pytest.mark.parametrize("name", FAMILIES)
def test_score_has_mean_zero(name):
    vals = _setup(name, 3)
    p = vector_problem(vector_family(name, 3), "1")
    est = _run(p, "score", vals, 200_000, seed=2)
    assert vector_exact(p, _plain(vals)).gradient == (0.0,) * p.family.k
    if name == "mvnormal_diag":  # Var(eps/sigma) = 1/sigma^2, Var((eps^2-1)/sigma) = 2/sigma^2
        sigma = vals["sigma"]
        se = np.sqrt(np.concatenate([1 / sigma**2, 2 / sigma**2]) / est.n)
    else:
        se = est.stderr
    assert np.all(np.abs(est.mean) <= Z * se)


def test_bernoulli_decoder_has_no_exact_value_and_the_estimators_agree_with_each_other():
    vals = _setup("mvnormal_diag", 4)
    vals["x"] = (vals["x"] > 0).astype(float)
    p = vector_problem(vector_family("mvnormal_diag", 4), "bernoulli_decoder")
    exact = vector_exact(p, _plain(vals))
    assert exact.gradient is None and "no closed form" in exact.missing
    a, b = _run(p, "score", vals, 200_000, seed=3), _run(p, "pathwise", vals, 200_000, seed=4)
    assert np.all(np.abs(a.mean - b.mean) <= Z * np.hypot(a.stderr, b.stderr))


def test_pathwise_is_refused_for_a_discontinuous_integrand():
    p = vector_problem(vector_family("mvnormal_diag", 2), "(z[0] > 0)*z[1]")
    with pytest.raises(derive.DeriveError, match="discontinuous"):
        vector_estimator(p, "pathwise")
    assert vector_estimator(p, "score").wrt == p.family.wrt


def test_generated_exact_gradient_equals_derive_and_rows_have_the_contract_shape():
    for name in FAMILIES:
        vals = _setup(name, 5, D=7)
        p = vector_problem(vector_family(name, 5), "gaussian_decoder")
        fn = vector_estimator(p, "pathwise")
        rows = fn(np.random.default_rng(0), 10, **{k: vals[k] for k in fn.parameters})
        assert rows.shape == (10, p.family.k) and len(fn.wrt) == p.family.k
        generated = fn.module["exact_gradient"](**{k: vals[k] for k in fn.parameters})
        assert np.allclose(generated, vector_exact(p, _plain(vals)).gradient, rtol=1e-12,
                           atol=1e-12)


def test_estimates_do_not_depend_on_the_chunk_size():
    vals = _setup("mvnormal", 3)
    p = vector_problem(vector_family("mvnormal", 3), "gaussian_decoder")
    fn = vector_estimator(p, "score")
    kw = {k: vals[k] for k in fn.parameters}
    a = numeric.estimate(fn, 5000, seed=9, chunk_size=5000, **kw)
    b = numeric.estimate(fn, 5000, seed=9, chunk_size=777, **kw)
    assert np.allclose(a.mean, b.mean, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ command line

def test_check_json_has_one_entry_per_scalar_parameter(capsys):
    code = main(["check", "mvnormal_diag", "--dim", "8", "--f", "gaussian_decoder",
                 "--param", "mu=0.1", "--param", "mu[2]=-0.4", "--param", "sigma=0.8",
                 "--param", "s=0.5", "--samples", "50000", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert list(report["gradient"]) == list(vector_family("mvnormal_diag", 8).wrt)
    assert report["params"]["mu[2]"] == -0.4 and report["data"]["obs_dim"] == 16
    entry = report["gradient"]["sigma[3]"]
    assert entry["exact_method"].startswith("moment rules")
    assert entry["pathwise"]["agrees"] and entry["score"]["agrees"]


def test_check_full_covariance_with_wrt_and_data_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, W=rng.standard_normal((5, 3)), c=np.zeros(5), x=rng.standard_normal(5))
    code = main(["check", "mvnormal", "--dim", "3", "--f", "gaussian_decoder", "--data",
                 str(path), "--param", "mu=0", "--param", "L=0.7", "--param", "L[2,0]=0.2",
                 "--param", "s=1", "--wrt", "mu[1],L[2,0]", "--json", "--samples", "20000"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and list(report["gradient"]) == ["mu[1]", "L[2,0]"]


def test_codegen_writes_a_module_for_d_32(tmp_path, capsys):
    out = tmp_path / "vae.py"
    assert main(["codegen", "mvnormal_diag", "--dim", "32", "--f", "gaussian_decoder",
                 "-o", str(out)]) == 0
    namespace = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    assert len(namespace["WRT"]) == 64 and namespace["WRT"][32] == "sigma[0]"
    rng = np.random.default_rng(0)
    rows = namespace["pathwise"](rng, 3, mu=np.zeros(32), sigma=np.ones(32),
                                 W=rng.standard_normal((64, 32)), c=np.zeros(64),
                                 x=np.zeros(64), s=1.0)
    assert rows.shape == (3, 64)


@pytest.mark.parametrize("argv", [
    ["check", "mvnormal_diag", "--f", "gaussian_decoder", "--param", "mu=0"],  # no --dim
    ["check", "mvnormal_diag", "--dim", "0", "--f", "z[0]", "--param", "mu=0"],
    ["check", "mvnormal_diag", "--dim", "two", "--f", "z[0]"],
    ["check", "normal", "--dim", "3", "--f", "z", "--param", "mu=0", "--param", "sigma=1"],
    ["check", "mvnormal_diag", "--dim", "3", "--f", "z[3]", "--param", "mu=0",
     "--param", "sigma=1"],
    ["check", "mvnormal_diag", "--dim", "3", "--f", "gaussian_decoder", "--param", "mu=0",
     "--param", "sigma=1"],  # no s
    ["check", "mvnormal_diag", "--dim", "3", "--f", "z[0]", "--param", "mu=0",
     "--param", "sigma=-1"],
    ["check", "mvnormal", "--dim", "3", "--f", "z[0]", "--param", "mu=0", "--param", "L=1",
     "--param", "L[0,1]=2"],  # upper triangle
    ["check", "mvnormal_diag", "--dim", "3", "--f", "z[0]", "--param", "mu=0",
     "--param", "sigma=1", "--param", "nu=2"],
    ["check", "mvnormal_diag", "--dim", "3", "--f", "gaussian_decoder", "--param", "mu=0",
     "--param", "sigma=1", "--param", "s=1", "--data", "/nonexistent.npz"],
    ["check", "mvnormal_diag", "--dim", "3", "--f", "z[0]", "--param", "mu=0",
     "--param", "sigma=1", "--wrt", "sigma[7]"],
    ["codegen", "mvnormal_diag", "--dim", "3", "--f", "z[0]", "--define", "sigma=exp(t)"],
])
def test_bad_input_exits_2_with_an_error_line(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own checks (--dim two)
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "Traceback" not in err


def test_scalar_families_are_unchanged(capsys):
    assert main(["check", "normal", "--f", "z**2", "--param", "mu=0.3", "--param", "sigma=1.2",
                 "--samples", "20000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["gradient"]) == {"mu", "sigma"} and "dim" not in report
    assert math.isclose(report["gradient"]["mu"]["exact"], 0.6)
