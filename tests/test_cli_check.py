"""`mcgrad check`, `derive` and `demo` on the command line: the report, exit codes, bad input."""

import json
import math
import subprocess
import sys
import time

import pytest

import derive
from mcgrad import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_json_has_the_documented_shape_and_agrees(capsys):
    code, out, _ = run(capsys, "check", "normal", "--param", "mu=0.3", "--param", "sigma=1.7",
                       "--f", "cos(2*z)", "--samples", "20000", "--json")
    report = json.loads(out)
    assert code == 0
    assert set(report) == {"family", "params", "f", "samples", "seed", "gradient"}
    mu = report["gradient"]["mu"]
    assert set(mu) == {"exact", "exact_method", "score", "pathwise"}
    assert mu["exact_method"] == "closed-form"
    a = derive.analyze(derive.problem(derive.family("normal"),
                                      derive.parse("cos(2*z)", derive.family("normal"))))
    assert mu["exact"] == pytest.approx(a.at(mu=0.3, sigma=1.7).gradient[a.problem.wrt[0]].value,
                                        rel=1e-15)
    for kind in ("score", "pathwise"):
        row = mu[kind]
        assert set(row) == {"mean", "stderr", "variance", "variance_exact", "agrees"}
        assert row["stderr"] == pytest.approx(math.sqrt(row["variance"] / 20000), rel=1e-12)
        assert row["agrees"] is True


def test_a_refused_estimator_is_reported_with_its_reason(capsys):
    code, out, _ = run(capsys, "check", "normal", "--param", "mu=0.3", "--param", "sigma=1.2",
                       "--f", "sign(z)", "--samples", "20000", "--json")
    report = json.loads(out)
    assert "discontinuous" in report["gradient"]["mu"]["pathwise"]["refused"]
    assert report["gradient"]["mu"]["score"]["agrees"] is True
    assert code == 0


def test_moments_that_do_not_exist_give_no_exact_value_and_no_verdict(capsys):
    code, out, _ = run(capsys, "check", "cauchy", "--param", "mu=0.2", "--param", "gamma=0.5",
                       "--f", "z**2", "--samples", "2000", "--json")
    report = json.loads(out)
    for entry in report["gradient"].values():
        assert entry["exact"] is None
        assert entry["score"]["agrees"] is None and entry["pathwise"]["agrees"] is None
    assert code == 0


def test_a_biased_estimator_exits_1(capsys, monkeypatch):
    real = derive.numpy_estimator

    def biased(est):
        fn = real(est)

        def shifted(rng, n, **params):
            return fn(rng, n, **params) + 1.0  # 1.0 is > 200 standard errors at 1e4 samples

        shifted.parameters = fn.parameters
        return shifted

    monkeypatch.setattr(derive, "numpy_estimator", biased)
    code, out, _ = run(capsys, "check", "normal", "--param", "mu=0.3", "--param", "sigma=0.5",
                       "--f", "z**2", "--samples", "10000")
    assert code == 1
    assert "DISAGREES" in out


@pytest.mark.parametrize("argv, fragment", [
    (["check", "normall", "--param", "mu=1", "--f", "z"], "did you mean 'normal'"),
    (["check", "normal", "--param", "mu=1", "--param", "sigma=1", "--param", "y=2", "--f", "z"],
     "unknown parameter y"),
    (["check", "normal", "--param", "mu=1", "--f", "z"], "no value for sigma"),
    (["check", "normal", "--param", "mu=1", "--param", "sigma=-1", "--f", "z"], "sigma > 0"),
    (["check", "uniform", "--param", "a=2", "--param", "b=1", "--f", "z"], "a < b"),
    (["check", "normal", "--param", "mu=1", "--param", "sigma=1", "--f", "mu"],
     "not a function of z"),
    (["check", "normal", "--param", "mu=1", "--param", "sigma=1", "--f", "z +"], "syntax"),
    (["check", "normal", "--param", "mu=1", "--param", "sigma=1", "--f", "9**9**9**9"],
     "exponent"),
    (["check", "normal", "--param", "mu=1", "--param", "sigma=1", "--f",
      "__import__('os').system('touch PWNED')"], "not allowed"),
    (["derive", "normal", "--f", "cos(z)", "--wrt", "nu"], "cannot differentiate"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(capsys, tmp_path, monkeypatch,
                                                           argv, fragment):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("argv", [
    ["check", "normal", "--param", "mu=abc", "--param", "sigma=1", "--f", "z"],
    ["check", "normal", "--param", "mu=1", "--param", "sigma=1", "--f", "z", "--samples", "0"],
])
def test_malformed_options_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_derive_prints_the_gradient_and_the_checked_steps(capsys):
    code, out, _ = run(capsys, "derive", "normal", "--f", "z**4", "--wrt", "mu")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("d/dmu E_q[f] = "))
    printed = derive.parse(line.split("= ", 1)[1].split("   [")[0], derive.family("normal"))
    mu, sigma = derive.family("normal").params
    assert (printed - (4 * mu**3 + 12 * mu * sigma**2)).expand() == 0
    assert "log-derivative trick" in out and "FAILS" not in out


def test_demo_shows_the_score_variance_dwarfing_the_pathwise_one():
    done = subprocess.run([sys.executable, "-m", "mcgrad", "demo", "--samples", "2000"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("d/dmu")]
    score = float(next(r for r in rows if r[1] == "score")[5])
    path = float(next(r for r in rows if r[1] == "pathwise")[5])
    assert score > 1e11 and path < 10


def test_a_deep_expression_is_refused_at_once(capsys):
    start = time.perf_counter()
    code, _, err = run(capsys, "check", "normal", "--param", "mu=0.3", "--param", "sigma=1.7",
                       "--f", "(" * 500 + "z" + ")" * 500)
    assert code == 2 and "Traceback" not in err
    assert time.perf_counter() - start < 10


def test_derive_latex_prints_aligned_equations(capsys):
    code, out, _ = run(capsys, "derive", "exponential", "--f", "z**2", "--latex")
    assert code == 0 and r"\begin{aligned}" in out


def test_the_console_entry_point_checks_and_refuses_from_any_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mcgrad", "check", "exponential", "--param", "lam=1.3", "--f",
         "cos(2*z)", "--samples", "20000"], capture_output=True, text=True, timeout=300,
        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "every estimate agrees" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "mcgrad", "check", "exponential", "--f", "z"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "no value for lam" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_an_estimator_that_overflows_is_reported_in_its_row_not_as_bad_input(capsys):
    """exp(z/5) under Cauchy noise has no mean: samples overflow to inf. The check still
    reports (exit 0, no comparison made), with the reason in each estimator's row."""
    code, out, err = run(capsys, "check", "cauchy", "--param", "mu=0", "--param", "gamma=0.5",
                         "--f", "exp(z/5)*sin(z)", "--json")
    assert code == 0, err
    report = json.loads(out)
    for entry in report["gradient"].values():
        assert entry["exact"] is None
        for kind in ("score", "pathwise"):
            assert "Monte Carlo failed" in entry[kind]["refused"]
            assert "does not exist" in entry[kind]["refused"]


def test_an_internal_error_exits_3_without_a_traceback(capsys, monkeypatch):
    """A bug of ours (here a planted one) is not reported as bad input (2) or as a traceback."""
    def broken(*args, **kwargs):
        raise RuntimeError("planted")
    monkeypatch.setattr("mcgrad.cli.check", broken)
    monkeypatch.delenv("MCGRAD_DEBUG", raising=False)
    code, out, err = run(capsys, "check", "normal", "--param", "mu=0", "--param", "sigma=1",
                         "--f", "z")
    assert code == 3
    assert "internal error (RuntimeError: planted)" in err and "Traceback" not in err
