"""Exact values at given parameters: closed forms evaluated exactly, quadrature otherwise.

Where E_q[f] has no closed form, the exact gradient is a Richardson-extrapolated central
difference of the 30-digit quadrature of E_q[f] = E_eps[f(g(eps; phi), phi)]. It depends on
neither estimator's formula, so it can catch a wrong one; its error (step**4 and quadrature
error / step) is below 1e-18 relative for the smooth cases here.
"""

from dataclasses import dataclass
from typing import Mapping

import mpmath
import sympy as sp

from . import _discrete, _implicit
from ._errors import DeriveError
from ._estimators import Estimator, Exact, Problem, to_base
from ._expectation import MomentError
from ._numbers import evaluate, exact_number, holds
from ._quadrature import quad_expectation


@dataclass(frozen=True)
class Number:
    """A number from the symbolic layer: ``value`` (None when it does not exist or could not be
    had, with the reason in ``missing``; ``infinite`` when it does not exist) and its ``method``."""

    value: float | None
    method: str
    missing: str | None = None
    infinite: bool = False


def gradient_at(p: Problem, exact: Mapping, values: Mapping) -> dict:
    """{w: Number}: the exact gradient at the values."""
    return {w: _gradient_one(p, w, exact[w], values) for w in p.wrt}


def _gradient_one(p, w, ex: Exact, values):
    if ex.infinite:
        return Number(None, "none", ex.missing, True)
    if ex.expr is not None:
        number = _closed_at(ex, values)
        if number is not None:
            return number
    try:
        if p.family.discrete:  # the sum of d/dw [q(k) f(k)], see derive/_discrete.py
            value, method = _discrete.gradient_at(p, w, values)
            return Number(float(value), method)
        if p.family.implicit:  # quadrature over the family's own density: derive/_implicit.py
            return Number(float(_implicit.gradient_at(p, w, values)), "quadrature")
        return Number(float(_difference_of_quadrature(p, w, values)), "quadrature")
    except MomentError as err:
        return Number(None, "none", f"E_q[f] does not exist: {err.message}", True)
    except DeriveError as err:
        return Number(None, "none", err.message)


def _closed_at(ex: Exact, values):
    """The closed form at the values; None (use quadrature) where it cannot be evaluated or
    its conditions cannot be decided. A failing condition of a rule means divergence (exp(t eps)
    beyond the MGF's domain); one of SymPy's integrate only means its formula does not apply
    there (E_N[Heaviside(z - 1/2)] comes with Eq(2*arg(1/2 - mu) - 2*pi, 0))."""
    for c in ex.conditions:
        verdict = holds(c, values)
        if verdict is False and ex.method == "closed-form":
            return Number(None, "none", f"infinite at these values ({c} fails)", True)
        if verdict is not True:
            return None
    try:
        return Number(float(evaluate(ex.expr, values)), ex.method)
    except DeriveError:
        return None


def _difference_of_quadrature(p: Problem, w, values):
    fam = p.family
    integrand = to_base(p.f, fam)
    exact = {s: exact_number(v) for s, v in values.items()}
    x0 = exact[w]
    step = sp.Rational(1, 10**5) * (abs(x0) if x0 != 0 else 1)

    def F(x):
        return quad_expectation(integrand, fam.base, {**exact, w: x},
                                what=f"E_q[{sp.sstr(p.f)}]")

    def D(h):
        return (F(x0 + h) - F(x0 - h)) / (2 * mpmath.mpf(h.p) / h.q)

    with mpmath.workdps(30):
        F(x0)  # the expectation itself must exist, not just the difference
        return (4 * D(step / 2) - D(step)) / 3


def variance_at(est: Estimator, exact_variances, gradient: Mapping, values: Mapping) -> tuple:
    """(Number, ...): the exact per-sample variance of each component at the values."""
    if not est.applies:
        return ()
    out = []
    for w, h, ex in zip(est.problem.wrt, est.in_base, exact_variances):
        g = gradient[w]
        if ex.infinite:
            out.append(Number(None, "none", ex.missing, True))
            continue
        number = _closed_at(ex, values) if ex.expr is not None else None
        if number is None:
            number = _variance_by_quadrature(est, h, g, values)
        out.append(number)
    return tuple(out)


def _variance_by_quadrature(est, h, g: Number, values):
    if g.value is None:
        return Number(None, "none", g.missing, g.infinite)
    try:
        with mpmath.workdps(30):
            method = "quadrature"
            if est.problem.family.discrete:
                second, method = _discrete.second_moment_at(est.problem.family, h, values)
            elif est.problem.family.implicit:
                second = _implicit.quad_at(est.problem.family, h**2, values, what="E[h**2]")
            else:
                second = quad_expectation(h**2, est.problem.family.base, values,
                                          what="E[h**2]")
            return Number(float(second - mpmath.mpf(g.value) ** 2), method)
    except MomentError as err:
        return Number(None, "none", f"the variance is infinite: {err.message}", True)
    except DeriveError as err:
        return Number(None, "none", err.message)
