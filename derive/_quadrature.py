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
from ._budget import OutOfTime, time_budget
from ._errors import DeriveError
from ._expectation import MomentError
from ._numbers import exact_values

DIGITS = 20
_NEAR = (1e-4, 1e-8, 1e-16, 1e-24)
_PROBE_DIGITS = 60
_WIGGLE = (1.0, 1.13, 1.37, 1.61)
_SOLVE_SECONDS = 1.0
_MAX_EXTRA_DIGITS = 400
_NEGLIGIBLE = mpmath.mpf(10) ** -(2 * DIGITS)


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
        cuts = _probe_ends(fn, lo, hi, base, label)
        for p in inner:
            _probe_point(fn, p, label)
    with mpmath.workdps(DIGITS):
        points = _breakpoints(base, inner, cuts)
        try:
            near = [p for p in (lo, hi) if p not in (sp.oo, -sp.oo)] + inner
            value, error = mpmath.quad(_real(fn, label, near), points, error=True, maxdegree=8)
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


def _real(fn, label, near=()):
    """fn as a real integrand. Near the finite ends and special points ``near`` it is evaluated
    with as many extra digits as the distance has leading zeros (twice, then four times as many
    where that still gives 0/0): tanh-sinh puts nodes at distances down to 1e-100 and beyond,
    where an expression such as 1 - (1 - eps)**(1/b) cancels completely in working precision
    (0/0 at the end of Kumaraswamy's support; its square expanded cancels twice as much)."""
    near = [mpmath.mpf(p) for p in near]

    def f(x):
        gap = min((abs(x - p) for p in near), default=mpmath.inf)
        zeros = 0 if gap >= 1 or gap == 0 else int(-mpmath.log10(gap)) + 3
        for times in (1, 2, 4):  # cancellation of order 1, 2 (an expanded square), 4
            with mpmath.workdps(DIGITS + min(_MAX_EXTRA_DIGITS, times * zeros)):
                try:
                    y = fn(x)
                except ZeroDivisionError:
                    if not zeros or times == 4:
                        raise
                    continue
                if mpmath.isfinite(y) or not zeros:
                    break
        if isinstance(y, mpmath.mpc):
            if abs(y.imag) > mpmath.mpf(10) ** (-DIGITS // 2) * (1 + abs(y.real)):
                raise DeriveError(f"the integrand is not real at eps = {mpmath.nstr(x, 6)}: is f "
                                  f"defined on the whole support of q?", context=label)
            return +y.real
        return +y
    return f


def _probe_ends(fn, lo, hi, base, label) -> dict:
    """Check integrability at both ends; return {infinite end: finite cut-off} for the tails
    that are negligible from a probe on.

    A tail is cut at the nearest probe distance from which every probe has |d * p h| below
    ``_NEGLIGIBLE``: what lies beyond is below the quadrature's tolerance, and integrating it
    would evaluate h where z = g(eps) is astronomically large (cos(exp(mu + sigma*eps)) at
    eps = 1e6 makes mpmath reduce an argument of 10**200000 digits modulo pi, for minutes).
    """
    cuts = {}
    for end, sign in ((lo, -1), (hi, 1)):
        if end in (sp.oo, -sp.oo):
            samples = [(r, sign * r) for r in base.tail_probes]
        else:
            samples = [(d, mpmath.mpf(int(end)) - sign * mpmath.mpf(d)) for d in _NEAR]
        sizes = _check_decay(fn, samples, label, f"eps -> {end}")
        if end in (sp.oo, -sp.oo):
            for i, (_, x) in enumerate(samples):
                if all(size < _NEGLIGIBLE for size in sizes[i:]):
                    cuts[end] = x
                    break
    return cuts


def _probe_point(fn, p, label):
    for side in (-1, 1):
        _check_decay(fn, [(d, p + side * mpmath.mpf(d)) for d in _NEAR], label,
                     f"eps -> {mpmath.nstr(p, 15)}")


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
    return sizes


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
        points |= _real_roots(expr, eps)
    return points


def _real_roots(expr, eps) -> set:
    """The real zeros of expr in eps, as mpmath numbers to _PROBE_DIGITS (a float root is off by
    1e-17, more than the probes' nearest distance, so a pole would look integrable). A polynomial's come from its numerical roots; an
    expression of known sign has none (1 + exp(...), the argument of softplus's log); others go to
    ``solve`` under a time budget, which with exact rational parameters can otherwise factor
    polynomials of huge degree for minutes (exp(17/10*eps) becomes a degree-17 polynomial)."""
    if expr.is_positive or expr.is_negative:
        return set()
    if expr.is_polynomial(eps):
        poly = sp.Poly(expr, eps)
        if poly.degree() < 1:
            return set()
        roots = sp.Poly([sp.Float(c, _PROBE_DIGITS) for c in poly.all_coeffs()],
                        eps).nroots(n=_PROBE_DIGITS, maxsteps=200)
        return {_mpf(sp.re(r)) for r in roots if abs(sp.im(r)) <= 1e-30 * (1 + abs(sp.re(r)))}
    try:
        with time_budget(_SOLVE_SECONDS):
            roots = sp.solve(expr, eps)
    except (OutOfTime, NotImplementedError, ValueError, TypeError):
        return set()
    return {_mpf(r) for r in roots if r.is_real}


def _mpf(x):
    with mpmath.workdps(_PROBE_DIGITS):
        return mpmath.mpf(str(sp.N(x, _PROBE_DIGITS)))


def _inside(p, lo, hi):
    return (lo == -sp.oo or p > float(lo)) and (hi == sp.oo or p < float(hi))


def _breakpoints(base, inner, cuts=None):
    cuts = cuts or {}
    lo, hi = base.support
    grid = [p for p in base.quad_points if p not in (sp.oo, -sp.oo)]
    pts = sorted(set(float(p) for p in grid) | set(inner))
    pts = [p for p in pts if _inside(p, lo, hi)]
    start = mpmath.ninf if lo == -sp.oo else mpmath.mpf(float(lo))
    if base.quad_points and base.quad_points[0] not in (-sp.oo,) and lo == -sp.oo:
        start = mpmath.mpf(float(base.quad_points[0]))  # a doubly exponential tail: cut it
    end = mpmath.inf if hi == sp.oo else mpmath.mpf(float(hi))
    if lo in cuts:
        start = max(start, mpmath.mpf(cuts[lo]))
    if hi in cuts:
        end = min(end, mpmath.mpf(cuts[hi]))
    pts = [p for p in pts if start < p < end]
    return [start] + [mpmath.mpf(p) for p in pts] + [end]
