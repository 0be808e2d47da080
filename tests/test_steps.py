"""Tests of the derivations: every step of the log-derivative trick and of the
reparameterization is checked, the lecture's pitfall is shown, and both render."""

from functools import lru_cache

import pytest
import sympy as sp

import derive

CASES = [(name, text) for name in ("normal", "laplace", "exponential")
         for text in ("z**2", "cos(z)", "exp(z/4)", "z**3 - 2*z")]


@lru_cache(maxsize=None)
def _analysis(name, text):
    fam = derive.family(name)
    return derive.analyze(derive.problem(fam, derive.parse(text, fam)), budget=0)


@pytest.mark.parametrize("name, text", CASES)
def test_every_step_of_the_log_derivative_trick_is_checked(name, text):
    a = _analysis(name, text)
    for w in a.problem.wrt:
        trick, _ = a.steps[w]
        assert len(trick.steps) == 3
        assert [s.checked for s in trick.steps] == [True, True, True], trick.text()
        assert trick.checked


@pytest.mark.parametrize("name, text", CASES)
def test_every_step_of_the_reparameterization_is_checked(name, text):
    a = _analysis(name, text)
    for w in a.problem.wrt:
        _, reparam = a.steps[w]
        assert [s.checked for s in reparam.steps] == [True, True, True], reparam.text()


def test_the_pitfall_is_shown_for_a_log_likelihood():
    """f = log p(x|z) does not depend on phi, so E_q[grad f] = 0, which is not the gradient."""
    fam = derive.family("normal")
    p = derive.problem(fam, derive.parse("-(x - z)**2/2", fam))
    a = derive.analyze(p, budget=0)
    mu, sigma = fam.params
    x = next(s for s in p.f.free_symbols if s.name == "x")
    assert sp.simplify(a.gradient[mu].expr - (x - mu)) == 0
    assert sp.simplify(a.gradient[sigma].expr + sigma) == 0
    for w in (mu, sigma):
        trick, _ = a.steps[w]
        assert trick.checked
        pit = trick.pitfall
        assert pit is not None and pit.rhs == 0 and pit.checked is True
        assert "NOT the gradient" in trick.text()


def test_no_pitfall_is_claimed_when_pushing_the_gradient_inside_happens_to_be_right():
    """d/dsigma E_q[z] = 0 = E_q[d/dsigma z]: the equality holds, so no pitfall is claimed."""
    fam = derive.family("normal")
    p = derive.problem(fam, derive.parse("z", fam))
    a = derive.analyze(p, budget=0)
    sigma = fam.params[1]
    trick, _ = a.steps[sigma]
    assert trick.pitfall is None


def test_a_failing_step_is_marked_in_the_text():
    fam = derive.family("uniform")
    p = derive.problem(fam, derive.parse("1/(z - a)", fam))
    a = derive.analyze(p, budget=0)
    trick, _ = a.steps[fam.params[0]]
    assert trick.steps[0].checked is False and not trick.checked
    assert "FAILS" in trick.text() and "moving end" in trick.text()


def test_the_uniform_derivation_carries_the_boundary_term():
    fam = derive.family("uniform")
    p = derive.problem(fam, derive.parse("z**2", fam))
    a = derive.analyze(p, budget=0)
    for w in fam.params:
        trick, _ = a.steps[w]
        assert trick.checked and "boundary term" in trick.steps[0].how


def test_a_discontinuous_f_fails_the_interchange_step():
    fam = derive.family("normal")
    a = derive.analyze(derive.problem(fam, derive.parse("sign(z)", fam)), budget=0)
    _, reparam = a.steps[fam.params[0]]
    assert reparam.steps[-1].checked is False and "discontinuous" in reparam.steps[-1].how


def test_derivations_render_as_text_and_latex():
    a = _analysis("normal", "cos(z)")
    trick, reparam = a.steps[a.problem.wrt[0]]
    text = trick.text()
    assert text.startswith("log-derivative trick for d/dmu E_q[cos(z)]")
    assert text.count("checked:") == 3 and "Integral" in text and "E_q[" in text
    latex = trick.latex()
    assert latex.startswith(r"\begin{aligned}") and r"\end{aligned}" in latex
    assert r"\mathbb{E}_{q}" in latex and r"\int" in latex and "&=" in latex
    assert r"\neq \text{the gradient}" in latex
    assert reparam.text().startswith("reparameterization for d/dmu")
    assert r"\mathbb{E}_{q}" in reparam.latex()
