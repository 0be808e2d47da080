"""Gradient estimators of grad_phi E_{q(z; phi)}[f(z, phi)], derived symbolically.

References: Mohamed, Rosca, Figurnov, Mnih (2020), "Monte Carlo Gradient Estimation in Machine
Learning", JMLR 21(132), sections 4 (score function) and 5 (pathwise).
"""

from dataclasses import dataclass, field
from typing import Mapping

import sympy as sp

from ._budget import OutOfTime, time_budget
from ._errors import DeriveError
from ._expectation import Closed, MomentError, closed_form, is_closed
from ._families import Family
from ._symbols import Z
from . import _discrete, _implicit
from ._discrete import PATHWISE_REFUSED, check_wrt, default_wrt

_DISCONTINUOUS = (sp.sign, sp.Heaviside, sp.floor, sp.ceiling, sp.Piecewise, sp.frac)


@dataclass(frozen=True)
class Problem:
    """grad_phi E_{q(z; phi)}[f] for the symbols ``wrt``: a family, an integrand, parameters."""

    family: Family
    f: sp.Expr
    wrt: tuple

    def __str__(self):
        names = ", ".join(map(str, self.wrt))
        return f"grad_({names}) E_{{z ~ {self.family}}}[{sp.sstr(self.f)}]"


def problem(family: Family, f, wrt=None) -> Problem:
    """Check and bundle a gradient problem; ``wrt`` defaults to all of the family's symbols.

    ``wrt`` may name the family's parameters or, after reparametrizing, the user's own symbols,
    and symbols of f (f may depend on phi).
    """
    f = sp.sympify(f)
    if not f.has(Z):
        raise DeriveError(f"f = {sp.sstr(f)} is not a function of z, so E_q[f] = f and its "
                          f"gradient needs no Monte Carlo; write f in terms of the sample z")
    known = family.symbols | (f.free_symbols - {Z})
    if wrt is None:
        wrt = sorted(family.symbols, key=lambda s: [str(t) for t in family.theta].index(str(s))
                     if str(s) in map(str, family.theta) else len(family.theta))
        wrt = default_wrt(family, wrt)
    wrt = tuple(_as_symbol(w, known) for w in wrt)
    check_wrt(family, wrt)
    if not wrt:
        raise DeriveError("no parameter to differentiate; name one with wrt")
    if len(set(wrt)) != len(wrt):
        raise DeriveError(f"wrt names a parameter twice: {', '.join(map(str, wrt))}")
    return Problem(family, f, wrt)


def _as_symbol(w, known):
    for s in known:
        if s == w or s.name == str(w):
            return s
    names = ", ".join(sorted(map(str, known)))
    raise DeriveError(f"cannot differentiate with respect to {w}: neither q nor f depends on it; "
                      f"the symbols are {names}")


@dataclass(frozen=True)
class Estimator:
    """A per-sample gradient estimator h, one component per parameter in ``wrt``.

    ``components`` are expressions of ``variable`` (z for the score function, the base noise
    for the pathwise estimator); ``in_base`` are the same expressions of the base noise eps, with
    z = g(eps; phi) substituted. ``refused`` says why the estimator does not apply (then the
    component fields are empty).
    """

    kind: str
    problem: Problem
    variable: sp.Symbol | None
    components: tuple
    in_base: tuple
    formula: str
    requires: str
    refused: str | None = None
    notes: tuple = field(default=())

    @property
    def applies(self) -> bool:
        return self.refused is None


def to_base(expr, family: Family) -> sp.Expr:
    """expr(z) with z = g(eps; phi) substituted and simplified where the base noise is positive."""
    if family.discrete or family.implicit:  # no noise: estimators are computed from z itself
        return sp.sympify(expr)
    out = sp.sympify(expr).xreplace({Z: family.q_transform})
    if family.base.symbol.is_positive:
        # no force=True: it assumes EVERY symbol positive (posify), which turned the boundary
        # term exp(-Abs(a)) of a Uniform(a, b) score into exp(-a) for a < 0; the noise is
        # declared positive, so its powers and logs denest without it
        out = sp.expand_log(sp.powdenest(out))
    return out


def score_function(p: Problem) -> Estimator:
    """Score-function (log-derivative, REINFORCE) estimator.

    Approximates grad_phi E_q[f] with h(z) = f(z) grad_phi log q(z; phi) + grad_phi f(z), z ~ q.
    Requires: q differentiable in phi with support independent of phi; f need not be
    differentiable or continuous. When the support [a(phi), b(phi)] moves, the Leibniz boundary
    term f(b) q(b) db/dphi - f(a) q(a) da/dphi (a constant) is added, so h stays unbiased.
    Reference: Williams (1992); Mohamed et al. (2020), section 4.
    """
    fam, f = p.family, p.f
    logq = fam.q_log_density
    comps, notes = [], []
    for w in p.wrt:
        try:
            boundary = _boundary_term(p, w)
        except DeriveError as err:
            return Estimator("score", p, None, (), (), "", "", refused=err.message)
        if boundary != 0:
            notes.append(f"d/d{w}: the support moves with {w}; the boundary term "
                         f"{sp.sstr(boundary)} is included")
        comps.append(f * sp.diff(logq, w) + sp.diff(f, w) + boundary)
    return Estimator(
        "score", p, Z, tuple(comps), tuple(to_base(c, fam) for c in comps),
        "h(z) = f(z) * grad log q(z; phi) + grad f(z) [+ boundary terms], z ~ q",
        "q differentiable in phi; E_q[f grad log q] finite", notes=tuple(notes))


def _boundary_term(p: Problem, w):
    lo, hi = p.family.q_support
    term = sp.Integer(0)
    for end, sign in ((hi, 1), (lo, -1)):
        if end in (sp.oo, -sp.oo) or not end.has(w):
            continue
        density = sp.exp(p.family.q_log_density).xreplace({Z: end})
        value = p.f.xreplace({Z: end})
        if value.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
            raise DeriveError(f"f is not finite at the moving end z = {end} of the support, so "
                              f"the score-function boundary term does not exist")
        term += sign * value * density * sp.diff(end, w)
    return sp.simplify(term) if sp.count_ops(term) < 60 else term


def pathwise(p: Problem) -> Estimator:
    """Pathwise (reparameterization) estimator.

    Approximates grad_phi E_q[f] with h(eps) = grad_phi f(g(eps; phi), phi), eps ~ base, where
    z = g(eps; phi) has the law of q. Requires f continuous and almost everywhere differentiable
    in z (a jump contributes a Dirac term that no sample sees) and g differentiable in phi.
    Reference: Kingma and Welling (2014); Mohamed et al. (2020), section 5.
    """
    fam, f = p.family, p.f
    if fam.discrete:
        return Estimator("pathwise", p, None, (), (), "", "", refused=PATHWISE_REFUSED)
    if fam.implicit:  # dz/dphi = -(dF/dphi)/q: derive/_implicit.py
        return _implicit.pathwise(p, _DISCONTINUOUS)
    eps = fam.base.symbol
    jumps = [a for a in f.atoms(*_DISCONTINUOUS) if a.has(Z)]
    if jumps:
        return Estimator(
            "pathwise", p, None, (), (), "", "",
            refused=f"f is discontinuous in z (it contains {sp.sstr(jumps[0])}); the pathwise "
                    f"estimator misses the jump's contribution and would be biased. Use the "
                    f"score-function estimator, or smooth f")
    g = fam.q_transform
    composed = f.xreplace({Z: g})
    comps = tuple(sp.diff(composed, w) for w in p.wrt)
    return Estimator(
        "pathwise", p, eps, comps, comps,
        f"h(eps) = grad_phi f(g(eps; phi)), z = g(eps; phi), {fam.base.text}",
        "f continuous and a.e. differentiable in z; E|grad f(g(eps))| finite")


ESTIMATORS = {"score": score_function, "pathwise": pathwise}
"""Every estimator by the name the command line and the JSON use."""


@dataclass(frozen=True)
class Exact:
    """An exact quantity: a closed form (``expr``) with its method and validity conditions, or
    the reason none exists (``missing``; ``infinite`` when the quantity does not exist)."""

    expr: sp.Expr | None
    method: str
    conditions: tuple = ()
    missing: str | None = None
    infinite: bool = False


def expectation(p_or_family, h_in_z, *, budget=None) -> Exact:
    """E_q[h(z)] in closed form, where one can be had."""
    fam = p_or_family.family if isinstance(p_or_family, Problem) else p_or_family
    if fam.discrete:
        return _exact(lambda: _discrete.closed_form(fam, h_in_z, budget=budget))
    if fam.implicit:
        return _exact(lambda: _implicit.closed_form(fam, h_in_z, budget=budget))
    return _exact(lambda: closed_form(to_base(h_in_z, fam), fam.base, budget=budget))


def _exact(compute) -> Exact:
    try:
        c: Closed | None = compute()
    except MomentError as err:
        return Exact(None, "none", missing=err.message, infinite=True)
    if c is None:
        return Exact(None, "quadrature", missing="no closed form found in the time budget")
    return Exact(c.value, c.method, c.conditions)


def exact_gradient(p: Problem, *, budget=None) -> dict:
    """{w: Exact} for grad_w E_q[f]: differentiate the closed form of E_q[f] when there is one."""
    ef = expectation(p, p.f, budget=budget)
    if ef.infinite:
        return {w: Exact(None, "none", missing=f"E_q[f] does not exist: {ef.missing}",
                         infinite=True) for w in p.wrt}
    if ef.expr is None:
        return {w: Exact(None, "quadrature", missing=ef.missing) for w in p.wrt}
    out = {}
    for w in p.wrt:
        d = _tidy(sp.diff(ef.expr, w))
        out[w] = (Exact(d, ef.method, ef.conditions) if is_closed(d) else
                  Exact(None, "quadrature", missing="the closed form could not be differentiated"))
    return out


def variances(est: Estimator, gradient: Mapping, *, budget=None) -> tuple:
    """Exact per-sample variances Var h_j = E[h_j**2] - (grad_j)**2, one Exact per component."""
    if not est.applies:
        return ()
    fam = est.problem.family
    out = []
    for w, h in zip(est.problem.wrt, est.in_base):
        second = (_exact(lambda: _discrete.closed_form(fam, h**2, budget=budget))
                  if fam.discrete else
                  _exact(lambda: _implicit.closed_form(fam, h**2, budget=budget))
                  if fam.implicit else
                  _exact(lambda: closed_form(sp.expand(h**2), fam.base, budget=budget)))
        g = gradient[w]
        if second.infinite:
            out.append(Exact(None, "none", missing=f"the variance is infinite: {second.missing}",
                             infinite=True))
        elif second.expr is None or g.expr is None or not is_closed(second.expr):
            out.append(Exact(None, "quadrature", missing=second.missing or g.missing))
        else:
            out.append(Exact(_tidy(second.expr - g.expr**2), second.method,
                             tuple(dict.fromkeys(second.conditions + g.conditions))))
    return tuple(out)


def _tidy(expr, seconds=2.0):
    if sp.count_ops(expr) > 400:
        return expr
    try:
        with time_budget(seconds):
            return sp.simplify(expr)
    except OutOfTime:
        return expr
