"""Numerical expectations at given parameter values, when no closed form can be had.

E[h(eps)] = integral of p(eps) h(eps) over the base's support, by mpmath's tanh-sinh quadrature
at 30 digits with breakpoints at the base's grid, at discontinuities and at singular points of
h. Before integrating, integrability is probed: |d * p h| must fall as the distance d to each
infinite end grows, and as the distance d to each finite end or singular point shrinks. An
integrand that fails the probe raises :class:`MomentError` rather than giving the finite number
quadrature would return for a divergent integral (Cauchy with z**2, 1/z under Exp).
"""

from typing import Mapping

import mpmath
import sympy as sp

from ._bases import Base
from ._errors import DeriveError
from ._expectation import MomentError
from ._numbers import exact_values

DIGITS = 20
_NEAR = (1e-4, 1e-8, 1e-16, 1e-24)
_PROBE_DIGITS = 60
_WIGGLE = (1.0, 1.13, 1.37, 1.61)


def quad_expectation(h: sp.Expr, base: Base, values: Mapping, *, what: str = "") -> mpmath.mpf:
    """E[h(eps)] for eps ~ base at the given values, by quadrature; MomentError if it diverges."""
    eps = base.symbol
    h = sp.sympify(h).xreplace(exact_values(values))
    label = what or f"E[{sp.sstr(h)}]"
    missing = h.free_symbols - {eps}
    if missing:
        raise DeriveError(f"no value for {', '.join(sorted(map(str, missing)))}", context=label)
    integrand = base.density * h
    fn = sp.lambdify(eps, integrand, modules="mpmath")
    lo, hi = base.support
    inner = sorted(p for p in _special_points(h, eps) if _inside(p, lo, hi))
    with mpmath.workdps(_PROBE_DIGITS):
        _probe_ends(fn, lo, hi, base, label)
        for p in inner:
            _probe_point(fn, p, label)
    with mpmath.workdps(DIGITS):
        points = _breakpoints(base, inner)
        try:
            value, error = mpmath.quad(_real(fn, label), points, error=True, maxdegree=8)
        except (ZeroDivisionError, ValueError, OverflowError) as exc:
            raise DeriveError(f"quadrature failed ({exc})", context=label) from None
        if not mpmath.isfinite(value):
            raise MomentError(f"{label} is not finite", context=label)
        if error > mpmath.mpf(10) ** -12 * max(1, abs(value)):
            raise DeriveError(
                f"quadrature did not converge (estimate {mpmath.nstr(value, 8)}, error "
                f"{mpmath.nstr(error, 2)}); the integrand may be too oscillatory or discontinuous "
                f"at points that could not be located", context=label)
        return +value


def _real(fn, label):
    def f(x):
        y = fn(x)
        if isinstance(y, mpmath.mpc):
            if abs(y.imag) > mpmath.mpf(10) ** (-DIGITS // 2) * (1 + abs(y.real)):
                raise DeriveError(f"the integrand is not real at eps = {mpmath.nstr(x, 6)}: is f "
                                  f"defined on the whole support of q?", context=label)
            return y.real
        return y
    return f


def _probe_ends(fn, lo, hi, base, label):
    for end, sign in ((lo, -1), (hi, 1)):
        if end in (sp.oo, -sp.oo):
            samples = [(r, sign * r) for r in base.tail_probes]
        else:
            samples = [(d, mpmath.mpf(int(end)) - sign * mpmath.mpf(d)) for d in _NEAR]
        _check_decay(fn, samples, label, f"eps -> {end}")


def _probe_point(fn, p, label):
    for side in (-1, 1):
        _check_decay(fn, [(d, p + side * d) for d in _NEAR], label, f"eps -> {p}")


def _check_decay(fn, samples, label, where):
    if not samples:
        return
    sizes = []
    for d, x in samples:
        size = mpmath.mpf(0)
        for w in _WIGGLE:
            xw = x + (w - 1) * d * (1 if x >= 0 else -1) if abs(x) > d else x * w
            try:
                y = fn(mpmath.mpf(xw))
            except (ZeroDivisionError, ValueError):
                y = mpmath.inf
            size = max(size, abs(d) * abs(y))
        sizes.append(size)
    if not all(mpmath.isfinite(s) for s in sizes) or (
            sizes[-1] > mpmath.mpf(10) ** -40 and sizes[-1] > sizes[0] / 2):
        raise MomentError(
            f"{label} does not exist: the integrand does not fall fast enough as {where} "
            f"(|distance * integrand| = {', '.join(mpmath.nstr(s, 3) for s in sizes)})")


def _special_points(h, eps):
    """Real points where h may jump or blow up: zeros of denominators, of log arguments, of the
    arguments of sign/Heaviside/Abs and of Piecewise conditions."""
    candidates = set()
    for atom in h.atoms(sp.Pow):
        if atom.exp.is_negative and atom.base.has(eps):
            candidates.add(atom.base)
    for kind in (sp.log, sp.sign, sp.Heaviside, sp.Abs):
        candidates |= {a.args[0] for a in h.atoms(kind) if a.args[0].has(eps)}
    for pw in h.atoms(sp.Piecewise):
        for _, cond in pw.args:
            for rel in cond.atoms(sp.Rel):
                candidates.add(rel.lhs - rel.rhs)
    points = set()
    for expr in candidates:
        try:
            for root in sp.solve(expr, eps):
                if root.is_real:
                    points.add(float(root))
        except (NotImplementedError, ValueError, TypeError):
            continue
    return points


def _inside(p, lo, hi):
    return (lo == -sp.oo or p > float(lo)) and (hi == sp.oo or p < float(hi))


def _breakpoints(base, inner):
    lo, hi = base.support
    grid = [p for p in base.quad_points if p not in (sp.oo, -sp.oo)]
    pts = sorted(set(float(p) for p in grid) | set(inner))
    pts = [p for p in pts if _inside(p, lo, hi)]
    start = mpmath.ninf if lo == -sp.oo else mpmath.mpf(float(lo))
    if base.quad_points and base.quad_points[0] not in (-sp.oo,) and lo == -sp.oo:
        start = mpmath.mpf(float(base.quad_points[0]))  # a doubly exponential tail: cut it
        pts = [p for p in pts if p > start]
    end = mpmath.inf if hi == sp.oo else mpmath.mpf(float(hi))
    return [start] + [mpmath.mpf(p) for p in pts] + [end]
