"""Baselines and control variates for the score-function estimator, derived symbolically.

The score-function estimator h_w = f s_w + d_w f, s_w = d_w log q(z; phi), is unbiased but its
variance grows as the square of f's offset: with log p(x|z) ~ -1e6 (the lecture's scenario) it is
about 1e12. Subtracting a multiple of a zero-mean control variate keeps it unbiased and can
remove almost all of that variance:

- a constant baseline b: h_w = (f - b) s_w + d_w f, unbiased because E_q[s_w] = 0;
- the optimal constant baseline b*_w = Cov(h_w, s_w)/Var(s_w) = E[h_w s_w]/E[s_w**2]
  (= E[f s_w**2]/E[s_w**2] when f does not depend on phi), the b that minimises Var h_w;
- the delta-method control variate: f~, the second-order Taylor expansion of f about the mean
  of q, whose expectation is known exactly from the first two moments of q.

Each is an :class:`Estimator` (kind "score_baseline" or "score_delta"), so
:func:`derive.numpy_estimator` and :func:`derive.variances` work on it unchanged.

Reference: Mohamed, Rosca, Figurnov, Mnih (2020), "Monte Carlo Gradient Estimation in Machine
Learning", JMLR 21(132), section 7.4 (control variates: baselines and the delta method);
Williams (1992) for baselines in REINFORCE.
"""

from typing import Mapping

import mpmath
import sympy as sp

from ._errors import DeriveError
from ._estimators import (Estimator, Exact, Problem, _boundary_term, _tidy, expectation,
                          score_function, to_base)
from ._expectation import MomentError, is_closed
from ._numbers import exact_number, exact_values
from ._quadrature import quad_expectation
from ._symbols import Z
from ._values import Number, _closed_at

BASELINE_KIND = "score_baseline"
DELTA_KIND = "score_delta"

_NOT_SMOOTH = (sp.sign, sp.Heaviside, sp.DiracDelta, sp.Piecewise, sp.Max, sp.Min, sp.Abs,
               sp.floor, sp.ceiling, sp.frac)


def score_baseline(p: Problem, baseline=0, *, budget=None) -> Estimator:
    r"""Score-function estimator with a constant baseline.

    Approximates grad_phi E_q[f] with

    .. math:: h_w(z) = (f(z) - b_w)\, s_w(z) + \partial_w f(z), \quad s_w = \partial_w \log q(z; \phi),

    z ~ q. Unbiased for any b_w free of z (it may depend on phi) because E_q[s_w] = 0. Where the
    support moves with w, E_q[s_w] != 0 and the baseline multiplies the centred score
    s_w - E_q[s_w] instead (plus the Leibniz boundary term of the plain estimator); where that is
    identically 0 (Uniform(a, b): the score is constant on the support) no baseline can change
    the variance and the estimator is refused with the reason.

    Args:
        p: the problem.
        baseline: b, a number or SymPy expression free of z used for every parameter, or a
            mapping {w: b_w} (symbols or their names) for each parameter of ``p.wrt``.

    Requires: what the score-function estimator requires (q differentiable in phi,
    E_q[f s_w] finite); f need not be differentiable.
    Reference: Williams (1992); Mohamed et al. (2020), section 7.4.
    """
    b = _per_parameter(p, baseline)
    plain = score_function(p)
    if not plain.applies:
        return _refused(BASELINE_KIND, p, plain.refused)
    comps = []
    for w, h in zip(p.wrt, plain.components):
        c, reason = _control(p, w, budget)
        if reason:
            return _refused(BASELINE_KIND, p, reason)
        comps.append(h - b[w] * c)
    shown = ", ".join(f"b_{w} = {sp.sstr(b[w])}" for w in p.wrt)
    return Estimator(
        BASELINE_KIND, p, Z, tuple(comps), tuple(to_base(c, p.family) for c in comps),
        "h(z) = (f(z) - b) * grad log q(z; phi) + grad f(z) [+ boundary terms], z ~ q",
        "q differentiable in phi; E_q[f grad log q] finite; b free of z",
        notes=(shown,) + plain.notes)


def optimal_baseline(p: Problem, *, budget=None) -> dict:
    r"""{w: Exact}: the constant baseline that minimises the per-sample variance of h_w.

    Var((h_w - b c_w)) = Var h_w - 2 b E[h_w c_w] + b^2 E[c_w^2] for the centred score
    c_w = s_w - E_q[s_w] (= s_w for a fixed support) is smallest at

    .. math:: b^*_w = \frac{E_q[h_w c_w]}{E_q[c_w^2]}
              = \frac{E_q[f s_w^2] + E_q[s_w \partial_w f]}{E_q[s_w^2]},

    which is E[f s_w**2]/E[s_w**2] when f does not depend on w; the variance falls by
    E[h_w c_w]**2/E[c_w**2]. Both expectations come from the expectation engine (closed form
    where one exists); ``missing`` says why there is none, ``infinite`` when one diverges.
    A parameter q does not depend on (a symbol of f only) has c_w = 0 and b*_w = 0.
    Reference: Mohamed et al. (2020), section 7.4; Weaver and Tao (2001).
    """
    plain = score_function(p)
    if not plain.applies:
        return {w: Exact(None, "none", missing=plain.refused) for w in p.wrt}
    out = {}
    for w, h in zip(p.wrt, plain.components):
        out[w] = _optimal_one(p, w, h, budget)
    return out


def _optimal_one(p, w, h, budget):
    c, reason = _control(p, w, budget)
    if reason:
        return Exact(None, "none", missing=reason)
    if c == 0:
        return Exact(sp.Integer(0), "closed-form")
    num = expectation(p, sp.expand(h * c), budget=budget)
    den = expectation(p, sp.expand(c**2), budget=budget)
    for part, what in ((num, f"E[h_{w} s_{w}]"), (den, f"E[s_{w}**2]")):
        if part.infinite:
            return Exact(None, "none", missing=f"{what} does not exist: {part.missing}",
                         infinite=True)
        if part.expr is None:
            return Exact(None, "quadrature", missing=f"{what}: {part.missing}")
    method = "closed-form" if {num.method, den.method} == {"closed-form"} else "integrate"
    return Exact(_tidy(num.expr / den.expr), method,
                 tuple(dict.fromkeys(num.conditions + den.conditions)))


def optimal_baseline_at(p: Problem, values: Mapping, exact: Mapping | None = None, *,
                        budget=None) -> dict:
    """{w: Number}: b*_w at the values; the closed form evaluated exactly where there is one,
    else E[h_w c_w] / E[c_w**2] by 30-digit quadrature in the base noise."""
    exact = optimal_baseline(p, budget=budget) if exact is None else exact
    vals = exact_values(values)
    plain = score_function(p)
    out = {}
    for j, w in enumerate(p.wrt):
        ex = exact[w]
        if ex.expr is None and (ex.infinite or not plain.applies or ex.method == "none"):
            out[w] = Number(None, "none", ex.missing, ex.infinite)
            continue
        number = _closed_at(ex, vals) if ex.expr is not None else None
        out[w] = number if number is not None else \
            _optimal_by_quadrature(p, w, plain.components[j], vals, budget)
    return out


def _optimal_by_quadrature(p, w, h, values, budget):
    c, _ = _control(p, w, budget)
    fam = p.family
    try:
        with mpmath.workdps(30):
            num = quad_expectation(to_base(h * c, fam), fam.base, values, what=f"E[h_{w} s_{w}]")
            den = quad_expectation(to_base(c**2, fam), fam.base, values, what=f"E[s_{w}**2]")
            return Number(float(num / den), "quadrature")
    except MomentError as err:
        return Number(None, "none", err.message, True)
    except DeriveError as err:
        return Number(None, "none", err.message)


def optimal_score_baseline(p: Problem, *, budget=None) -> Estimator:
    """The score-function estimator with the optimal constant baseline b*_w of
    :func:`optimal_baseline` written in as a closed form of the parameters (refused where b*
    has no closed form; :func:`optimal_baseline_at` and :func:`score_baseline` with the number
    serve then)."""
    opt = optimal_baseline(p, budget=budget)
    for w, ex in opt.items():
        if ex.expr is None:
            return _refused(BASELINE_KIND, p, f"no closed form of the optimal baseline for "
                                              f"d/d{w}: {ex.missing}")
    return score_baseline(p, {w: ex.expr for w, ex in opt.items()}, budget=budget)


def delta_method(p: Problem, *, budget=None) -> Estimator:
    r"""Score-function estimator with the delta-method control variate.

    Approximates grad_phi E_q[f] with

    .. math::

        h_w(z) = (f(z) - \tilde f(z))\, s_w(z) + \partial_w f(z)
                 + f'(m)\, \partial_w m + \tfrac12 f''(m)\, \partial_w v,
        \qquad \tilde f(z) = f(m) + f'(m)(z - m) + \tfrac12 f''(m)(z - m)^2,

    z ~ q, where m = E_q[z] and v = Var_q[z] are closed forms of the parameters. The expansion
    point and the coefficients of f~ are held fixed (not differentiated), so
    E_q[f~ s_w] = f'(m) d_w m + f''(m) d_w v / 2 exactly, and h_w is unbiased; a support that
    moves with w adds f~'s Leibniz boundary term. When f is quadratic in z, f~ = f and h_w is
    a constant: zero variance.

    Requires: E_q[z] and E_q[z**2] finite with closed forms (refused for Cauchy, which has no
    mean), f twice differentiable in z (refused for abs, sign, max, comparisons, ...), and what
    the score-function estimator requires.
    Reference: Mohamed et al. (2020), section 7.4 (the delta method as a control variate);
    Paisley, Blei, Jordan (2012).
    """
    plain = score_function(p)
    if not plain.applies:
        return _refused(DELTA_KIND, p, plain.refused)
    try:
        ftilde, slope, curve, m, v = _taylor(p, budget)
    except DeriveError as err:
        return _refused(DELTA_KIND, p, err.message)
    fam = p.family
    logq = fam.q_log_density
    rest = p.f - ftilde
    if p.f.is_polynomial(Z):
        rest = sp.expand(rest)
    comps, notes = [], [f"f~ = {sp.sstr(ftilde)} (the expansion about m = {sp.sstr(m)})"]
    for w, h in zip(p.wrt, plain.components):
        s = sp.diff(logq, w)
        boundary = _boundary_term(Problem(fam, ftilde, p.wrt), w)
        known = slope * sp.diff(m, w) + curve * sp.diff(v, w) / 2
        comps.append(rest * s + (h - p.f * s) - boundary + known)
    return Estimator(
        DELTA_KIND, p, Z, tuple(comps), tuple(to_base(c, fam) for c in comps),
        "h(z) = (f(z) - f~(z)) * grad log q(z; phi) + grad f(z) + f'(m) grad m + f''(m) "
        "grad v / 2, f~ the second-order Taylor expansion of f about m = E_q[z], v = Var_q[z]",
        "f twice differentiable in z; E_q[z**2] finite; q differentiable in phi",
        notes=tuple(notes) + plain.notes)


def _taylor(p: Problem, budget):
    """(f~, f'(m), f''(m), m, v): the expansion of f about the mean of q; DeriveError with the
    reason where it does not exist."""
    fam, f = p.family, p.f
    d1 = sp.diff(f, Z)
    d2 = sp.diff(d1, Z)
    for g in (f, d1, d2):
        rough = [a for a in g.atoms(*_NOT_SMOOTH) if a.has(Z)]
        if rough:
            raise DeriveError(f"f is not twice differentiable in z (it contains "
                              f"{sp.sstr(rough[0])}); the delta method expands f to second "
                              f"order about the mean of q. Use a constant or the optimal "
                              f"baseline")
    moments = []
    for k in (1, 2):
        ex = expectation(fam, Z**k, budget=budget)
        if ex.infinite:
            what = "mean" if k == 1 else "second moment"
            raise DeriveError(f"{fam} has no finite {what} (E_q[z**{k}]: {ex.missing}), so "
                              f"there is no expansion point and no exact E_q[f~]; use a "
                              f"constant or the optimal baseline")
        if ex.expr is None:
            raise DeriveError(f"no closed form of E_q[z**{k}] for {fam} ({ex.missing}), so "
                              f"E_q[f~] cannot be differentiated exactly")
        moments.append(ex.expr)
    m, second = moments
    v = _tidy(second - m**2)
    for w in p.wrt:
        if not (is_closed(sp.diff(m, w)) and is_closed(sp.diff(v, w))):
            raise DeriveError(f"the mean or variance of {fam} could not be differentiated in "
                              f"closed form with respect to {w}, so d/d{w} E_q[f~] is not exact")
    c0, c1, c2 = (g.xreplace({Z: m}) for g in (f, d1, d2))
    if any(c.has(sp.zoo, sp.oo, -sp.oo, sp.nan) for c in (c0, c1, c2)):
        raise DeriveError(f"f or its first two derivatives are not finite at the mean "
                          f"m = {sp.sstr(m)} of q, so f has no Taylor expansion there")
    ftilde = c0 + c1 * (Z - m) + c2 * (Z - m)**2 / 2
    return ftilde, c1, c2, m, v


def mean_of(p: Problem, *, budget=None) -> Exact:
    """E_q[z], the delta method's expansion point."""
    return expectation(p.family, Z, budget=budget)


def _control(p: Problem, w, budget):
    """(c_w, reason): the centred score s_w - E_q[s_w] (s_w itself for a fixed support), or
    the reason no baseline can be used for w."""
    fam = p.family
    s = sp.diff(fam.q_log_density, w)
    if s == 0:
        return sp.Integer(0), None
    if not any(end.has(w) for end in fam.q_support if end not in (sp.oo, -sp.oo)):
        return s, None
    mean = expectation(fam, s, budget=budget)
    if mean.expr is None:
        return None, (f"the support of {fam} moves with {w}, so E_q[s_{w}] != 0 and needs a "
                      f"closed form for an unbiased baseline; none was found ({mean.missing})")
    c = _tidy(s - mean.expr)
    if c == 0:
        return None, (f"the support of {fam} moves with {w} and its score d/d{w} log q = "
                      f"{sp.sstr(s)} is constant on the support: E_q[s_{w}] = "
                      f"{sp.sstr(mean.expr)} != 0, so a baseline c in (f - c)*s_{w} would bias it "
                      f"by -c*E_q[s_{w}], and once that is corrected the baseline cancels "
                      f"exactly; no constant baseline can change the variance. Use the "
                      f"delta method or the pathwise estimator")
    return c, None


def _per_parameter(p: Problem, baseline) -> dict:
    if isinstance(baseline, Mapping):
        by_name = {str(k): v for k, v in baseline.items()}
        missing = [w.name for w in p.wrt if w.name not in by_name]
        extra = sorted(set(by_name) - {w.name for w in p.wrt})
        if missing or extra:
            raise DeriveError(f"give a baseline for each of {', '.join(w.name for w in p.wrt)}"
                              f" (missing: {', '.join(missing) or 'none'}; unknown: "
                              f"{', '.join(extra) or 'none'})")
        out = {w: _as_expr(by_name[w.name]) for w in p.wrt}
    else:
        out = {w: _as_expr(baseline) for w in p.wrt}
    for w, b in out.items():
        if not isinstance(b, sp.Expr) or b.has(Z):
            raise DeriveError(f"the baseline for {w} must be a number or an expression of the "
                              f"parameters, not a function of the sample z ({b}): a baseline "
                              f"that depends on z biases the estimator")
    return out


def _as_expr(b):
    if isinstance(b, sp.Basic):
        return b
    if isinstance(b, str):
        raise DeriveError(f"the baseline {b!r} is text; parse it first with "
                          f"derive.parse_expression, or give a number")
    return exact_number(b)


def _refused(kind, p, reason):
    return Estimator(kind, p, None, (), (), "", "", refused=reason)
