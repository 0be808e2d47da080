"""Derivations as lists of checked steps, printable as text and LaTeX.

The log-derivative trick (lecture; Mohamed et al. 2020, section 4.1):

    grad E_q[f] = grad int q f dz = int grad q * f dz = int q grad log q * f dz = E_q[f grad log q]

and the pitfall it avoids: pushing the gradient inside the expectation, E_q[grad f], which is 0
for an f that does not depend on phi (f = log p(x|z)) and is not the gradient.
"""

import random
from dataclasses import dataclass

import sympy as sp

from ._budget import OutOfTime, time_budget
from ._estimators import Problem, score_function, pathwise, Exact, expectation, _boundary_term
from ._expectation import is_closed
from ._errors import DeriveError
from ._numbers import evaluate
from ._symbols import Z


@dataclass(frozen=True)
class Step:
    """lhs = rhs, because ``reason``; ``checked`` is True/False, or None where it could not be
    checked (``how`` says how it was or why not)."""

    lhs: sp.Basic
    rhs: sp.Basic
    reason: str
    checked: bool | None
    how: str

    def text(self) -> str:
        mark = {True: "checked", False: "FAILS", None: "not checked"}[self.checked]
        return f"  = {sp.sstr(self.rhs)}\n      [{self.reason}; {mark}: {self.how}]"


@dataclass(frozen=True)
class Derivation:
    """A chain start = step1.rhs = step2.rhs = ...; ``pitfall`` is an equality that fails."""

    title: str
    start: sp.Basic
    steps: tuple
    pitfall: Step | None = None

    @property
    def checked(self) -> bool:
        return all(s.checked is not False for s in self.steps)

    def text(self) -> str:
        lines = [self.title, f"    {sp.sstr(self.start)}"] + [s.text() for s in self.steps]
        if self.pitfall is not None:
            p = self.pitfall
            lines.append(f"  pitfall: {sp.sstr(p.lhs)} = {sp.sstr(p.rhs)}, which is NOT the "
                         f"gradient ({p.how})")
        return "\n".join(lines)

    def latex(self) -> str:
        body = [sp.latex(self.start)] + [r"&= " + sp.latex(s.rhs) for s in self.steps]
        out = r"\begin{aligned}" + " \\\\\n".join(
            [body[0] + " " + body[1]] + body[2:]) + r"\end{aligned}"
        if self.pitfall is not None:
            out += (r"\quad\text{but}\quad " + sp.latex(self.pitfall.lhs) + " = "
                    + sp.latex(self.pitfall.rhs) + r"\neq \text{the gradient}")
        return out


class _E(sp.Function):
    """Display-only expectation E_q[...], over z ~ q."""

    under = "q"

    def _latex(self, printer):
        return (r"\mathbb{E}_{" + self.under + r"}\left[" + printer._print(self.args[0])
                + r"\right]")

    def _sympystr(self, printer):
        return f"E_{self.under}[{printer._print(self.args[0])}]"


class _Eeps(_E):
    """Display-only expectation E_eps[...], over the base noise eps."""

    under = "eps"

    def _latex(self, printer):
        return r"\mathbb{E}_{\epsilon}\left[" + printer._print(self.args[0]) + r"\right]"


def log_derivative_trick(p: Problem, w, gradient: Exact) -> Derivation:
    """The lecture's derivation for d/dw E_q[f], each step checked for this family and f."""
    fam, f = p.family, p.f
    q = sp.Function("q")(Z)
    lo, hi = fam.q_support
    logq = fam.q_log_density
    density = sp.exp(logq)
    start = sp.Derivative(sp.Integral(q * f, (Z, lo, hi)), w)
    fixed = not (sp.sympify(lo).has(w) or sp.sympify(hi).has(w))
    extra = sp.Integral(q * sp.diff(f, w), (Z, lo, hi)) if f.has(w) else sp.Integer(0)
    sf = score_function(p)
    if fixed:
        boundary, ok, why = sp.Integer(0), True, f"the support does not depend on {w}"
    elif sf.applies:
        boundary, ok = _boundary_term(p, w), True
        why = (f"the support moves with {w}: Leibniz's rule adds the boundary term "
               f"f(b) q(b) db/d{w} - f(a) q(a) da/d{w} = {sp.sstr(_boundary_term(p, w))}")
    else:
        boundary, ok, why = sp.Integer(0), False, sf.refused
    s1 = Step(start, sp.Integral(sp.Derivative(q, w) * f, (Z, lo, hi)) + extra + boundary,
              "differentiate under the integral sign (Leibniz)", ok, why)
    ident = sp.diff(density, w) - density * sp.diff(logq, w)
    s2 = Step(s1.rhs, sp.Integral(q * sp.Derivative(sp.log(q), w) * f, (Z, lo, hi)) + extra
              + boundary, "grad q = q grad log q", _is_zero(ident),
              f"d/d{w} q - q d/d{w} log q simplifies to 0 for {fam}")
    score = sp.diff(logq, w)
    if sf.applies:
        value = expectation(p, sf.components[p.wrt.index(w)])
        agree, how = _same(value, gradient, p)
    else:
        agree, how = None, sf.refused
    s3 = Step(s2.rhs, _E(f * score + sp.diff(f, w)) + boundary, "the definition of E_q", agree,
              how)
    inside = expectation(p, sp.diff(f, w))
    pit_value = inside.expr if inside.expr is not None else _E(sp.diff(f, w))
    differs, _ = _same(inside, gradient, p)
    pitfall = Step(_E(sp.Derivative(f, w)), pit_value, "pushing the gradient inside",
                   None if differs is None else not differs,
                   f"the gradient is {sp.sstr(gradient.expr)}" if gradient.expr is not None
                   else "the gradient has no closed form")
    return Derivation(f"log-derivative trick for d/d{w} E_q[{sp.sstr(f)}], q = {fam}",
                      start, (s1, s2, s3), pitfall if differs is not True else None)


def reparameterization(p: Problem, w, gradient: Exact) -> Derivation:
    """grad E_q[f(z)] = grad E_eps[f(g(eps))] = E_eps[grad f(g(eps))], each step checked."""
    fam, f = p.family, p.f
    eps = fam.base.symbol
    g = fam.q_transform
    start = sp.Derivative(_E(f), w)
    composed = f.xreplace({Z: g})
    s1 = Step(start, sp.Derivative(_Eeps(composed), w), f"z = g(eps) has law q ({fam.base.text})",
              True, "by construction of the sampler")
    pw = pathwise(p)
    if not pw.applies:
        s2 = Step(s1.rhs, _Eeps(sp.Derivative(composed, w)), "interchange", False, pw.refused)
        return Derivation(f"reparameterization for d/d{w} E_q[{sp.sstr(f)}]", start, (s1, s2))
    comp = pw.components[p.wrt.index(w)]
    chain = sp.diff(f, Z).xreplace({Z: g}) * sp.diff(g, w) + sp.diff(f, w).xreplace({Z: g})
    s2 = Step(s1.rhs, _Eeps(comp), "differentiate inside (f continuous, a.e. differentiable)",
              *_same(Exact(*_closed(pw, comp)), gradient, p))
    s3 = Step(s2.rhs, _Eeps(chain), "chain rule: f'(g) dg/dphi", _is_zero(comp - chain),
              "the difference simplifies to 0")
    return Derivation(f"reparameterization for d/d{w} E_q[{sp.sstr(f)}]", start, (s1, s2, s3))


def _closed(est, comp):
    from ._expectation import closed_form, MomentError
    try:
        c = closed_form(comp, est.problem.family.base)
    except MomentError as err:
        return None, "none", (), err.message, True
    return (None, "quadrature") if c is None else (c.value, c.method, c.conditions)


def _is_zero(expr) -> bool | None:
    expr = sp.sympify(expr)
    try:
        with time_budget(3.0):
            z = sp.simplify(expr)
            if z == 0:
                return True
    except OutOfTime:
        pass
    return _zero_at_points(expr)


def _same(a: Exact, b: Exact, p: Problem):
    if a.expr is None or b.expr is None or not is_closed(a.expr):
        return None, "no closed form on one side; checked by Monte Carlo in mcgrad check"
    verdict = _is_zero(a.expr - b.expr)
    return verdict, ("the two closed forms agree" if verdict else
                     "the two closed forms differ" if verdict is False else "undecided")


def _zero_at_points(expr, points=3) -> bool | None:
    """expr == 0 at random positive rational points (30 digits), or None if not evaluable."""
    rng = random.Random(0)
    symbols = sorted(expr.free_symbols, key=str)
    seen = 0
    for _ in range(4 * points):
        values = {s: sp.Rational(rng.randint(3, 29), 10) for s in symbols}
        try:
            v = evaluate(expr, values)
        except DeriveError:  # a point outside the domain: try another
            continue
        if abs(v) > 1e-20:
            return False
        seen += 1
        if seen == points:
            return True
    return None
