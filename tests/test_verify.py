"""Tests of `mcgrad verify` and derive's verify_claim / verify_estimator.

Verification is deterministic (symbolic, 30-digit exact arithmetic at fixed or seeded points,
quadrature), so these tests have no false-failure rate to state.
"""

import re

import pytest
import sympy as sp
from hypothesis import given

import derive
from derive._verify import Verification, verify_claim, verify_estimator
from mcgrad import cli
from mcgrad._check import setup
from numeric import strategies as mst

OPTAX = ["verify", "normal", "--f", "z**4", "--wrt", "mu", "--claim", "3*mu**3 + 12*mu*sigma**2"]

# One problem per family, with a closed-form gradient except Kumaraswamy (quadrature).
CATALOG = [("normal", "z**4"), ("lognormal", "z"), ("laplace", "z**2"), ("logistic", "z**2"),
           ("gumbel", "z"), ("cauchy", "cos(z)"), ("exponential", "z**2"), ("weibull", "z"),
           ("uniform", "z**2")]

# A few wrong derivations through the command line (the whole power catalog, through the Python
# API, is in test_power.py): (name, family, f, wrt, option, wrong text, corrected text). A text
# that starts with "-" is passed as --claim=TEXT.
WRONG = [
    ("flipped sign", "normal", "cos(2*z)", "sigma", "claim",
     "4*sigma*exp(-2*sigma**2)*cos(2*mu)", "-4*sigma*exp(-2*sigma**2)*cos(2*mu)"),
    ("dropped factor (pathwise, in eps)", "normal", "z**2", "mu", "estimator", "mu + sigma*eps",
     "2*(mu + sigma*eps)"),
    ("dropped factor", "exponential", "z**2", "lam", "claim", "-2/lam**3", "-4/lam**3"),
    ("wrong Gamma argument", "weibull", "z", "lam", "claim", "gamma(1/k)", "gamma(1 + 1/k)"),
]


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_the_optax_claim_is_refuted_with_the_difference_and_a_counterexample(capsys):
    code, out, _ = run(OPTAX, capsys)
    assert code == 1
    assert out == ("REFUTED: d/dmu E[z**4] is 4*mu**3 + 12*mu*sigma**2; the claim differs by "
                   "-mu**3 (claim minus exact; at mu=1, sigma=1: claim 15, exact 16)")


def test_the_right_claim_is_confirmed_symbolically(capsys):
    code, out, _ = run(OPTAX[:-1] + ["4*mu*(mu**2 + 3*sigma**2)"], capsys)
    assert (code, out.split(":")[0]) == (0, "CONFIRMED")
    assert "simplifies to 0" in out


@pytest.mark.parametrize("name, family, f, wrt, option, wrong, right", WRONG,
                         ids=[f"{w[0]}-{w[1]}" for w in WRONG])
def test_wrong_derivations_are_refuted_and_their_fixes_confirmed_on_the_command_line(
        capsys, name, family, f, wrt, option, wrong, right):
    base = ["verify", family, "--f", f, "--wrt", wrt]
    code, out, err = run(base + [f"--{option}={wrong}"], capsys)
    assert code == 1, out + err
    assert out.startswith("REFUTED") and re.search(r"at \w+=", out), out
    code, out, err = run(base + [f"--{option}={right}"], capsys)
    assert code == 0, out + err


def test_a_counterexample_satisfies_the_family_constraints_and_the_values_differ():
    s = setup("uniform", "z**2", wrt=["a"])
    r = verify_claim(s.problem, None, "2*a/3 + b/2")
    assert r.refuted and r.method == "symbolic"
    s.problem.family.check_values(r.point)  # a < b
    assert r.point == {s.problem.family.param("a"): 1, s.problem.family.param("b"): 2}
    assert (r.claimed_value, r.exact_value) == (sp.Rational(5, 3), sp.Rational(4, 3))
    assert r.difference == s.problem.family.param("b") / 6


def test_a_difference_that_vanishes_at_the_simplest_point_moves_to_the_next():
    """sigma for sigma**2 agrees at sigma = 1; the counterexample must avoid it."""
    s = setup("normal", "exp(z)", wrt=["mu"])
    r = verify_claim(s.problem, None, "exp(mu + sigma/2)")
    assert r.refuted
    assert r.point[s.problem.family.param("sigma")] != 1
    assert abs(r.claimed_value - r.exact_value) > 1


def test_an_identity_simplify_cannot_prove_is_confirmed_numerically_and_says_so(monkeypatch):
    import derive._verify as v
    monkeypatch.setattr(v, "simplest", lambda e, seconds=0: e)  # as if simplify gave up
    s = setup("normal", "cos(2*z)", wrt=["mu"])
    r = verify_claim(s.problem, None, "-2*exp(-2*sigma**2)*sin(mu)*cos(mu)*2")
    assert r.confirmed and r.method == "exact arithmetic"
    assert r.points == v.SIMPLE_POINTS + v.RANDOM_POINTS
    assert r.tolerance == v.EXACT_TOLERANCE
    assert "could not simplify" in r.text() and "20 significant digits" in r.text()


def test_without_a_closed_form_the_claim_is_compared_with_quadrature_at_the_given_point(
        capsys, monkeypatch):
    monkeypatch.setattr("derive._expectation.INTEGRATE_SECONDS", 0.2)  # no closed form anyway
    base = ["verify", "normal", "--f", "softplus(z)", "--wrt", "mu", "--param", "mu=1",
            "--param", "sigma=1"]
    code, out, _ = run(base + ["--claim", "0.6967346701436833"], capsys)
    assert code == 0 and out.startswith("CONFIRMED (quadrature)") and "1e-08" in out
    code, out, _ = run(base + ["--claim", "sigmoid(mu)"], capsys)
    assert code == 1 and "by quadrature" in out and "exceeds the tolerance" in out


def test_a_gradient_that_does_not_exist_refutes_every_claim():
    s = setup("cauchy", "z", wrt=["mu"])
    r = verify_claim(s.problem, None, "1")
    assert r.refuted and r.method == "none" and "does not exist" in r.reason


def test_an_estimator_without_a_mean_is_refuted():
    """The pathwise estimator of d/dgamma E_Cauchy[cos z] is -eps sin(gamma eps + mu): its
    expectation converges only conditionally, E|h| is infinite, so it has no mean."""
    s = setup("cauchy", "cos(z)", wrt=["gamma"])
    r = verify_estimator(s.problem, None, "-eps*sin(gamma*eps + mu)")
    assert r.refuted and "does not exist" in r.reason


@pytest.mark.parametrize("family, f", CATALOG)
def test_across_the_catalog_exact_gradients_and_derived_estimators_are_confirmed(family, f):
    """SymPy's integrate gets 1 s (budget=1): E_q[h] falls back to quadrature sooner."""
    p = setup(family, f).problem
    grad = derive.exact_gradient(p)
    estimators = [derive.score_function(p), derive.pathwise(p)]
    for j, w in enumerate(p.wrt):
        exact = grad[w].expr
        assert verify_claim(p, w, exact).confirmed
        wrong = verify_claim(p, w, 2 * exact + 1)
        assert wrong.refuted and wrong.claimed_value != wrong.exact_value
        p.family.check_values(wrong.point)
        for est in estimators:
            if family == "cauchy" and (w.name == "gamma" or est.kind == "score"):
                continue  # score: oscillatory, integrate or quadrature is slow or fails;
                #           pathwise for gamma: no mean (above)
            r = verify_estimator(p, w, est.components[j], budget=1.0)
            assert r.confirmed, r.text()


def test_kumaraswamy_has_no_closed_form_gradient_and_is_checked_by_quadrature():
    s = setup("kumaraswamy", "z", wrt=["a"], params={"a": "2", "b": "3"})
    values = {k.name: v for k, v in s.values.items()}
    h = derive.pathwise(s.problem).components[0]
    r = verify_estimator(s.problem, None, h, values=values, budget=0)
    assert r.confirmed and r.method == "quadrature" and r.points == 1
    wrong = verify_claim(s.problem, None, "0", values=values, budget=0)
    assert wrong.refuted and wrong.method == "quadrature"


@given(mst.problems(families=("normal", "laplace", "gumbel", "exponential", "uniform"),
                    kinds=("polynomial", "loglik")))
def test_verify_confirms_the_exact_gradient_and_refutes_a_perturbed_one(case):
    """Property over drawn problems (polynomials have closed forms under these families): the
    exact gradient is confirmed at the drawn parameters; exact + 1 + w**2 is refuted at a valid
    point."""
    p = setup(case.family, case.f).problem
    grad = derive.exact_gradient(p)
    w = p.wrt[0]
    exact = grad[w].expr
    assert verify_claim(p, w, exact, values=case.params).confirmed
    wrong = verify_claim(p, w, exact + 1 + w**2, values=case.params)
    assert wrong.refuted
    p.family.check_values(wrong.point)


@pytest.mark.parametrize("argv, message", [
    (["--claim", "z"], "depends on the sample z"),
    (["--claim", "x*mu"], "x, which is not a symbol"),
    (["--claim", "__import__('os')"], "names starting with '_'"),
    (["--claim", "2*mu", "--param", "mu=1"], "no value for sigma"),
    (["--claim", "2*mu", "--param", "mu=1", "--param", "sigma=-1"], "sigma > 0"),
    (["--claim", "2*mu", "--param", "mu=1", "--param", "mu=2"], "given twice"),
    (["--estimator", "w*z"], "w, which is not a symbol"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_bad_input_exits_2_with_a_one_line_message(capsys, argv, message):
    code, out, err = run(["verify", "normal", "--f", "z**2", "--wrt", "mu"] + argv, capsys)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_a_claim_needs_one_parameter(capsys):
    code, _, err = run(["verify", "normal", "--f", "z**2", "--claim", "2*mu"], capsys)
    assert code == 2 and "--wrt" in err
    code, _, err = run(["verify", "normal", "--f", "z**2", "--wrt", "mu,sigma", "--claim", "1"],
                       capsys)
    assert code == 2 and "one derivative" in err


def test_claim_and_estimator_are_mutually_exclusive_and_one_is_required(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "normal", "--f", "z**2", "--wrt", "mu"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "normal", "--f", "z**2", "--wrt", "mu", "--claim", "1",
                  "--estimator", "z"])
    assert exit_.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_json_output_and_reparametrized_families(capsys):
    import json
    code, out, _ = run(["verify", "normal", "--f", "exp(z)", "--define", "sigma=exp(s)",
                        "--wrt", "s", "--claim", "exp(mu + 2*s + exp(2*s)/2)", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["verdict"] == "confirmed" and data["difference"] == "0"


def test_the_python_api_takes_sympy_expressions_matched_by_name():
    s = setup("normal", "z**4", wrt=["mu"])
    mu, sigma = sp.symbols("mu sigma")  # no assumptions: matched to the family's by name
    r = verify_claim(s.problem, None, 4 * mu**3 + 12 * mu * sigma**2)
    assert isinstance(r, Verification) and r.confirmed
    with pytest.raises(derive.DeriveError, match="text such as"):
        verify_claim(s.problem, None, 3.5j)
