"""Numerical expectations at given parameter values, when no closed form can be had.

E[h(eps)] = integral of p(eps) h(eps) over the base's support, by mpmath's tanh-sinh quadrature
at 30 digits with breakpoints at the base's grid, at discontinuities and at singular points of
h. Before integrating, integrability is probed: |d * p h| must fall as the distance d to each
infinite end grows, and as the distance d to each finite end or singular point shrinks. An
integrand that fails the probe raises :class:`MomentError` rather than giving the finite number
quadrature would return for a divergent integral (Cauchy with z**2, 1/z under Exp).
"""

import contextlib
import threading
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
_QUAD_SECONDS = 60.0
_PROBE_SECONDS = 2.0
_OSC_REACH = 10
_OSC_PIECES = 400
_NEGLIGIBLE = mpmath.mpf(10) ** -(2 * DIGITS)


def quad_expectation(h: sp.Expr, base: Base, values: Mapping, *, what: str = "") -> mpmath.mpf:
    """E[h(eps)] for eps ~ base at the given values, by quadrature; MomentError if it diverges."""
    h, fn, inner, cuts, label = _probed(h, base, values, what)
    eps = base.symbol
    lo, hi = base.support
    near = [p for p in (lo, hi) if p not in (sp.oo, -sp.oo)] + inner
    integrand = _real(fn, label, near)
    omega = _oscillation(h, eps) if base.heavy_tails else None
    with mpmath.workdps(DIGITS):
        try:
            with _deadline(_QUAD_SECONDS):
                if omega:
                    value, error = _oscillating(integrand, omega, inner)
                else:
                    value, error = mpmath.quad(integrand, _breakpoints(base, inner, cuts),
                                               error=True, maxdegree=8)
        except OutOfTime:
            raise DeriveError(f"quadrature did not finish in {_QUAD_SECONDS:g} s",
                              context=label) from None
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


def probe_integrability(h: sp.Expr, base: Base, values: Mapping, *, what: str = "") -> None:
    """Raise MomentError unless E|h(eps)| looks finite at the values: the integrability probes
    of :func:`quad_expectation` (decay at every end and singular point) without the integral,
    e.g. to decide whether a fourth moment exists before trusting a variance's standard error.
    A heuristic like the probes themselves: it samples the integrand, it does not prove."""
    _probed(h, base, values, what)


def _probed(h, base, values, what):
    """(h at the values, p*h as an mpmath function, inner special points, tail cut-offs,
    label) after the probes; MomentError where they show divergence."""
    eps = base.symbol
    h = sp.sympify(h).xreplace(exact_values(values))
    label = what or f"E[{sp.sstr(h)}]"
    missing = h.free_symbols - {eps}
    if missing:
        raise DeriveError(f"no value for {', '.join(sorted(map(str, missing)))}", context=label)
    fn = sp.lambdify(eps, base.density * h, modules="mpmath")
    lo, hi = base.support
    inner = sorted(p for p in _special_points(h, eps, base.support) if _inside(p, lo, hi))
    with mpmath.workdps(_PROBE_DIGITS):
        cuts = _probe_ends(fn, lo, hi, base, label)
        for p in inner:
            _probe_point(fn, p, label)
    return h, fn, inner, cuts, label


def _deadline(seconds):
    """A time budget in the main thread; none elsewhere (SIGALRM works only there)."""
    if threading.current_thread() is threading.main_thread():
        return time_budget(seconds)
    return contextlib.nullcontext()


def _oscillation(h, eps):
    """The smallest angular frequency w of the sin/cos(w*eps + c) in h, or None (none, or a
    phase that is not linear in eps)."""
    frequencies = set()
    for atom in h.atoms(sp.sin, sp.cos):
        phase = atom.args[0]
        if not phase.has(eps):
            continue
        if not (phase.is_polynomial(eps) and sp.degree(phase, eps) == 1):
            return None
        frequencies.add(abs(float(phase.coeff(eps, 1))))
    return min(frequencies) if frequencies else None


def _oscillating(f, omega, inner):
    """The integral over the real line of an oscillating f that falls only like 1/eps**2 (an
    oscillating integrand under Cauchy noise): tanh-sinh between breakpoints every half period
    on [-R, R], and mpmath's quadosc (sums over periods, extrapolated) on each tail. Plain
    tanh-sinh on [100, oo) does not converge for cos(2 eps)/(pi (1 + eps**2))."""
    half = mpmath.pi / omega
    reach = min(_OSC_REACH, _OSC_PIECES * half / 2)
    count = int(2 * reach / half) + 1
    grid = {-reach + k * (2 * reach / count) for k in range(count + 1)}
    grid |= {mpmath.mpf(p) for p in inner if -reach < p < reach}
    middle, error = mpmath.quad(f, sorted(grid), error=True, maxdegree=8)
    right = mpmath.quadosc(f, [reach, mpmath.inf], omega=omega)
    left = mpmath.quadosc(lambda x: f(-x), [reach, mpmath.inf], omega=omega)
    return middle + right + left, error


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
        working = mpmath.mp.dps  # quadosc's extrapolation raises it: keep what it asks for
        for times in (1, 2, 4):  # cancellation of order 1, 2 (an expanded square), 4
            with mpmath.workdps(working + min(_MAX_EXTRA_DIGITS, times * zeros)):
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
            for i, (_, x) in enumerate(samples[:len(sizes)]):
                if all(size < _NEGLIGIBLE for size in sizes[i:]):
                    cuts[end] = x
                    break
            else:
                if len(sizes) < len(samples):
                    raise DeriveError(
                        f"the integrand cannot be evaluated as eps -> {end} (it took more than "
                        f"{_PROBE_SECONDS:g} s at eps = {mpmath.nstr(samples[len(sizes)][1], 6)})"
                        f" and is not negligible before", context=label)
    return cuts


def _probe_point(fn, p, label):
    for side in (-1, 1):
        _check_decay(fn, [(d, p + side * mpmath.mpf(d)) for d in _NEAR], label,
                     f"eps -> {mpmath.nstr(p, 15)}")


def _check_decay(fn, samples, label, where):
    """|d * p h| at the samples (distance d, point x), each within _PROBE_SECONDS: a probe that
    takes longer (exp(exp(z)) far out is a number of 10**8 digits) ends the probing, and the
    verdict rests on the nearer ones. Raises MomentError unless they fall."""
    if not samples:
        return []
    sizes = []
    for d, x in samples:
        size = mpmath.mpf(0)
        try:
            with _deadline(_PROBE_SECONDS):
                for w in _WIGGLE:
                    xw = x + (w - 1) * d * (1 if x >= 0 else -1) if abs(x) > d else x * w
                    try:
                        y = fn(mpmath.mpf(xw))
                    except (ZeroDivisionError, ValueError):
                        y = mpmath.inf
                    size = max(size, abs(d) * abs(y))
        except OutOfTime:
            break
        sizes.append(size)
    if len(sizes) < 2:
        raise DeriveError(f"the integrand cannot be evaluated as {where}: it took more than "
                          f"{_PROBE_SECONDS:g} s at eps = {mpmath.nstr(samples[len(sizes)][1], 6)}",
                          context=label)
    if not all(mpmath.isfinite(s) for s in sizes) or (
            sizes[-1] > mpmath.mpf(10) ** -40 and sizes[-1] > sizes[0] / 2):
        raise MomentError(
            f"{label} does not exist: the integrand does not fall fast enough as {where} "
            f"(|distance * integrand| = {', '.join(mpmath.nstr(s, 3) for s in sizes)})")
    return sizes


def _special_points(h, eps, support=(-sp.oo, sp.oo)):
    """Real points where h may jump, bend or blow up: zeros of denominators, of log arguments,
    of the arguments of sign/Heaviside/Abs, of differences of Max/Min arguments and of Piecewise
    conditions."""
    candidates = set()
    for atom in h.atoms(sp.Pow):
        if atom.exp.is_negative and atom.base.has(eps):
            candidates.add(atom.base)
    for kind in (sp.log, sp.sign, sp.Heaviside, sp.Abs):
        candidates |= {a.args[0] for a in h.atoms(kind) if a.args[0].has(eps)}
    for m in h.atoms(sp.Max, sp.Min):  # kinks where two arguments cross (relu)
        args = [a for a in m.args]
        candidates |= {a - b for i, a in enumerate(args) for b in args[i + 1:]
                       if (a - b).has(eps)}
    for pw in h.atoms(sp.Piecewise):
        for _, cond in pw.args:
            for rel in cond.atoms(sp.Rel):
                candidates.add(rel.lhs - rel.rhs)
    points = set()
    for expr in candidates:
        points |= _real_roots(expr, eps, support)
    return points


def _real_roots(expr, eps, support=(-sp.oo, sp.oo)) -> set:
    """The real zeros of expr in eps, as mpmath numbers to _PROBE_DIGITS (a float root is off by
    1e-17, more than the probes' nearest distance, so a pole would look integrable).

    A polynomial's come from its numerical roots. An expression of known sign has none (1 +
    exp(...), the argument of softplus's log); others are located where they change sign on a
    grid over the support (_bracketed_roots). Undecided cases go to ``solve`` under a time
    budget, which with exact
    rational parameters can otherwise factor polynomials of huge degree for minutes
    (exp(17/10*eps) becomes a degree-17 polynomial)."""
    if expr.is_positive or expr.is_negative:
        return set()
    if expr.is_polynomial(eps):
        poly = sp.Poly(expr, eps)
        if poly.degree() < 1:
            return set()
        roots = sp.Poly([sp.N(c, _PROBE_DIGITS) for c in poly.all_coeffs()],
                        eps).nroots(n=_PROBE_DIGITS, maxsteps=200)
        return {_mpf(sp.re(r)) for r in roots if abs(sp.im(r)) <= 1e-30 * (1 + abs(sp.re(r)))}
    bracketed = _bracketed_roots(expr, eps, support)
    if bracketed is not None:
        return bracketed
    try:
        with time_budget(_SOLVE_SECONDS):
            roots = sp.solve(expr, eps)
    except (OutOfTime, NotImplementedError, ValueError, TypeError):
        return set()
    return {_mpf(r) for r in roots if r.is_real}


def _grid(support):
    """Points over the support: 129 evenly spread (|eps| <= 64 on an infinite side), 40
    log-spaced from 1e-14 to 1 away from each finite end, and 24 log-spaced out to 1e8 on each
    infinite side, so that a zero near an end (eps = 0.04 for 1.785 eps**0.4 - 1/2) is seen."""
    lo, hi = (mpmath.mpf(-64) if e == -sp.oo else mpmath.mpf(64) if e == sp.oo
              else mpmath.mpf(sp.N(e, 30)) for e in support)
    points = {lo + (hi - lo) * (k + mpmath.mpf(1) / 2) / 129 for k in range(129)}
    for end, sign, finite in ((lo, 1, support[0] != -sp.oo), (hi, -1, support[1] != sp.oo)):
        if finite:
            points |= {end + sign * mpmath.mpf(10) ** (-14 + 14 * j / 39) * min(1, (hi - lo) / 2)
                       for j in range(40)}
        else:
            points |= {-sign * mpmath.mpf(10) ** (2 + 6 * j / 23) for j in range(24)}
    return sorted(points)


def _bracketed_roots(expr, eps, support):
    """The zeros of expr where it changes sign between neighbouring points of _grid, each
    refined by bracketing (mpmath's Illinois method) to _PROBE_DIGITS; the empty set where it
    keeps one sign and |expr| > 1e-6 on the whole grid; None (undecided: ask ``solve``) where it
    cannot be evaluated there, is complex, or comes close to 0 without changing sign."""
    try:
        fn = sp.lambdify(eps, expr, modules="mpmath")
        with mpmath.workdps(30):
            xs = _grid(support)
            values = [complex(fn(x)) for x in xs]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    if any(abs(v.imag) > 1e-12 * (1 + abs(v.real)) for v in values):
        return None
    reals = [v.real for v in values]
    roots = set()
    with mpmath.workdps(_PROBE_DIGITS):
        for (a, fa), (b, fb) in zip(zip(xs, reals), zip(xs[1:], reals[1:])):
            if fa == 0:
                roots.add(mpmath.mpf(a))
            elif fa * fb < 0:
                try:
                    roots.add(mpmath.findroot(fn, (mpmath.mpf(a), mpmath.mpf(b)),
                                              solver="illinois"))
                except (ValueError, ZeroDivisionError):
                    return None
    if not roots and min(abs(v) for v in reals) <= 1e-6:
        return None
    return roots


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
