"""The expectation engine: E[h(eps)] under a standard base distribution, exactly where possible.

Order of methods, cheapest and most reliable first (the result says which was used):

1. ``closed-form``: rules. h is expanded into terms c * eps**n * log(eps)**m * exp(P(eps)) with
   trigonometric and hyperbolic functions rewritten through exp. Each term has a closed form:
   the Gaussian integral for P of degree <= 2 under N(0, 1); derivatives of the
   moment-generating function M(t) = E[exp(t eps)] (E[eps**n exp(a eps)] = M^(n)(a)) for the
   other bases; Gamma-function integrals for powers and logs of Exp(1) and U(0, 1) noise; the
   characteristic function exp(-|w|) for Cauchy noise, whose polynomial moments do not exist.
   Substituting z = g(eps) and expanding first is what makes this fast: E_N[cos kz] takes 35 s
   through sympy.stats and milliseconds here.
2. ``integrate``: SymPy's integrate under a time budget, with convergence conditions kept and
   unevaluated Integrals treated as failure (they look like success otherwise).
3. ``quadrature`` (at given parameter values, in :mod:`derive._quadrature`).

A term whose expectation is infinite raises :class:`MomentError` with the reason, never a value,
when it is the only such term and every other term is finite (nothing can cancel it); several
infinite terms, or one beside a term without a rule, go on to the next method, since their sum
may be integrable.
"""

import contextlib
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from ._bases import Base, CAUCHY, EXPONENTIAL, LAPLACE, NORMAL, UNIFORM
from ._budget import OutOfTime, time_budget
from ._errors import DeriveError

INTEGRATE_SECONDS = 1.0
"""Default budget for SymPy's integrate; set to 0 to go straight to quadrature. Measured over the
10 families x 9 integrands (z, z**2, z**3, exp(z/3), cos(2z), softplus, sigmoid, 1/(1+z**2),
log(1+z**2)): of 250 integrals the rules could not do, integrate finished 15, 11 within 0.75 s and
all within 1.8 s, and timed out on the other 235 (417 s of the 430 spent): a budget of 2 s
bought 4 closed forms for about 235 s; the quadrature that replaces them is exact enough."""

_TRIG = (sp.sin, sp.cos, sp.sinh, sp.cosh)
_TIDY_SECONDS = 2.0
_CANCEL_OPS = 200


class MomentError(DeriveError):
    """The expectation does not exist (it is infinite or undefined)."""


class _NoRule(Exception):
    """No exact rule matches a term."""


@dataclass(frozen=True)
class Closed:
    """A closed-form expectation, valid where every condition holds."""

    value: sp.Expr
    method: str
    conditions: tuple = field(default=())


@dataclass(frozen=True)
class _Term:
    coeff: sp.Expr
    power: sp.Expr      # n + p: the exponent of eps
    logs: int           # m: the power of log(eps)
    linear: sp.Expr     # a: coefficient of eps in the exponent
    quadratic: sp.Expr  # b: coefficient of eps**2 in the exponent


def closed_form(h: sp.Expr, base: Base, *, budget: float | None = None) -> Closed | None:
    """E[h(eps)] for eps ~ base in closed form, or None when no exact method finishes.

    Raises MomentError when the expectation does not exist.
    """
    budget = INTEGRATE_SECONDS if budget is None else budget
    return _closed_form(sp.sympify(h), base, budget)


@lru_cache(maxsize=4096)
def _closed_form(h, base, budget):
    eps = base.symbol
    if not h.has(eps):
        return Closed(h, "closed-form")
    try:
        with _rules_budget():
            return by_rules(h, base)
    except (_NoRule, OutOfTime):
        pass
    if base is LAPLACE and h.has(*_KINKS):
        try:
            return _laplace_halves(h)
        except _NoRule:
            pass
    return _by_integrate(h, base, budget)


_KINKS = (sp.sign, sp.Abs, sp.Heaviside, sp.Max, sp.Min)

RULES_SECONDS = 20.0
"""Budget for the exact rules on one integrand. They are fast on what they are meant for, but
the Cauchy residues factor the denominator (sp.roots), which with symbolic parameters in a
fourth moment ran for over 5 minutes, and MGF derivatives of high order expand long series."""


def _rules_budget():
    """time_budget(RULES_SECONDS) in the main thread; no budget elsewhere (SIGALRM)."""
    if threading.current_thread() is threading.main_thread():
        return time_budget(RULES_SECONDS)
    return contextlib.nullcontext()


def _laplace_halves(h) -> Closed:
    """E[h(eps)], eps ~ Laplace(0, 1), as the mixture it is: eps = +e or -e with probability 1/2
    each, e ~ Exp(1). With e positive, sign(b*e), Abs(e) and the like evaluate, so the score of
    a Laplace family (sign(mu - z)/b) needs no integrate: the Exponential rules apply."""
    e = EXPONENTIAL.symbol
    value, conditions = sp.Integer(0), []
    for half in (h.xreplace({LAPLACE.symbol: e}), h.xreplace({LAPLACE.symbol: -e})):
        if half.has(*_KINKS) and any(a.has(e) for a in half.atoms(*_KINKS)):
            raise _NoRule(half)
        c = by_rules(half, EXPONENTIAL)
        value += c.value / 2
        conditions += list(c.conditions)
    return Closed(_real_form(value), "closed-form", tuple(dict.fromkeys(conditions)))


def by_rules(h: sp.Expr, base: Base) -> Closed:
    """E[h] by the term rules; raises _NoRule when a term has none."""
    if base is CAUCHY:
        try:
            return Closed(_real_form(_cauchy_by_residues(h, base)), "closed-form")
        except _NoRule:
            pass  # e.g. a frequency of unknown sign: the term rules use exp(-|w|)
    value, conditions, divergent = sp.Integer(0), [], []
    for term in _terms(h, base.symbol):
        try:
            v, conds = _term_expectation(_split(term, base.symbol), base)
        except MomentError as err:
            divergent.append(err)
            continue
        # a term without a rule (_NoRule) ends the rules at once: terms can be expensive (MGF
        # derivatives of high order), and the whole goes to the next method anyway
        value += v
        conditions += [c for c in conds if c is not sp.true]
    if len(divergent) == 1:  # finite + infinite: no cancellation possible
        raise divergent[0]
    if divergent:
        # Two infinite terms may cancel; so may one beside a term without a rule (handled by
        # _NoRule above): under Cauchy noise (1 - tanh(eps)**2)**2 eps**2 expands into
        # eps**2 - 2 tanh**2 eps**2 + ..., whose first term diverges while the whole is
        # integrable. Integrate or quadrature (with its integrability probes) decide.
        raise _NoRule(h)
    value = _real_form(value)
    return Closed(value, "closed-form", tuple(dict.fromkeys(conditions)))


def _terms(h, eps):
    e = h
    if eps.is_positive:  # not force=True: that would take every symbol positive (to_base)
        e = sp.expand_log(sp.powdenest(e))
    if e.has(*_TRIG):
        e = e.rewrite(sp.exp)
    e = sp.expand(e, deep=True, power_base=True, power_exp=True, mul=True, log=eps.is_positive,
                  multinomial=True)
    return tuple(_factor_denominator(t, eps) for t in sp.Add.make_args(e))


def _factor_denominator(term, eps):
    """The term with the common factors of its denominator pulled out: expand distributes
    1/(eps**2*(b - a)**2) into 1/(a**2*eps**2 - 2*a*b*eps**2 + b**2*eps**2), which no rule
    matches, and factor_terms gives back eps**-2 times a constant."""
    num, den = term.as_numer_denom()
    if not (den.is_Add or any(f.is_Add and f.has(eps) for f in sp.Mul.make_args(den))) \
            or not den.has(eps):
        return term
    return num / sp.factor_terms(den)


def _split(term, eps) -> _Term:
    coeff, power, logs, exponent = sp.Integer(1), sp.Integer(0), 0, sp.Integer(0)
    for factor in sp.Mul.make_args(term):
        if not factor.has(eps):
            coeff *= factor
        elif factor == eps:
            power += 1
        elif factor.is_Pow and factor.base == eps and not factor.exp.has(eps):
            power += factor.exp
        elif isinstance(factor, sp.exp):
            exponent += factor.args[0]
        elif factor.is_Pow and isinstance(factor.base, sp.exp) and not factor.exp.has(eps):
            exponent += factor.base.args[0] * factor.exp
        elif factor == sp.log(eps):
            logs += 1
        elif factor.is_Pow and factor.base == sp.log(eps) and factor.exp.is_Integer \
                and factor.exp > 0:
            logs += int(factor.exp)
        else:
            raise _NoRule(factor)
    exponent = sp.expand(exponent)
    if not exponent.is_polynomial(eps):
        raise _NoRule(exponent)
    poly = sp.Poly(exponent, eps)
    if poly.degree() > 2:
        raise _NoRule(exponent)
    c = list(reversed(poly.all_coeffs())) + [sp.Integer(0)] * 3
    return _Term(coeff * sp.exp(c[0]), power, logs, c[1], c[2])


def _term_expectation(t: _Term, base: Base):
    if t.quadratic != 0 and base is not NORMAL:
        raise _NoRule(t)
    if base is NORMAL:
        return _gaussian(t)
    if base is CAUCHY:
        return _cauchy(t)
    if base is EXPONENTIAL:
        return _gamma_integral(t)
    if base is UNIFORM and (t.logs or not t.power.is_Integer or t.linear == 0):
        return _power_integral(t)
    if t.logs or not (t.power.is_Integer and t.power >= 0):
        raise _NoRule(t)
    return t.coeff * _mgf_derivative(base, int(t.power), t.linear), [_domain(base, t)]


def _mgf_derivative(base, n, a):
    """M^(n)(a) = E[eps**n exp(a eps)]; at a = 0 from the Taylor coefficient, because a closed
    form of M such as pi*t/sin(pi*t) may be 0/0 there."""
    s = sp.Dummy("t")
    m = base.mgf(s)
    if a == 0:
        return sp.factorial(n) * sp.series(m, s, 0, n + 1).removeO().coeff(s, n)
    return sp.diff(m, s, n).subs(s, a)


def _domain(base, t):
    condition = base.mgf_domain(t.linear)
    if condition is sp.false:
        raise MomentError(
            f"E[{_show(t)}] is infinite under {base.text}: exp({sp.sstr(t.linear)}*eps) grows as "
            f"fast as the density falls")
    return condition


def _gaussian(t: _Term):
    """E[eps**n exp(a eps + b eps**2)], eps ~ N(0, 1), = N(a/d, 1/d) moments * exp(a^2/2d)/sqrt(d)."""
    if t.logs or not (t.power.is_Integer and t.power >= 0):
        raise _NoRule(t)
    d = 1 - 2 * t.quadratic
    condition = sp.re(d) > 0
    if condition is sp.false:
        raise MomentError(
            f"E[{_show(t)}] is infinite under N(0, 1): exp({sp.sstr(t.quadratic)}*eps**2) grows "
            f"at least as fast as the Gaussian density falls")
    n, mean, var = int(t.power), t.linear / d, 1 / d
    moment = sum(sp.binomial(n, 2 * j) * mean ** (n - 2 * j) * var**j * sp.factorial2(2 * j - 1)
                 for j in range(n // 2 + 1))
    return t.coeff * moment * sp.exp(t.linear**2 / (2 * d)) / sp.sqrt(d), [condition]


def _cauchy(t: _Term):
    """Cauchy noise has no moments of order >= 1; E[exp(i w eps)] = exp(-|w|)."""
    if t.power != 0 or t.logs:
        raise MomentError(
            f"E[{_show(t)}] does not exist under Cauchy noise: its tails fall like 1/eps**2, so "
            f"no moment of order 1 or more is finite")
    if t.linear == 0:
        return t.coeff, []
    if sp.re(t.linear) != 0:
        raise MomentError(f"E[{_show(t)}] is infinite under Cauchy noise")
    return t.coeff * sp.exp(-sp.Abs(sp.im(t.linear))), []


def _cauchy_by_residues(h, base):
    """E[h(eps)], eps ~ Cauchy(0, 1), for h = sum_k R_k(eps) exp(i w_k eps), R_k rational, by the
    residue theorem: the integral of F(eps) exp(i w eps) with F = R p rational is 2 pi i times the
    residues in the upper half-plane (w >= 0; the lower one, negated, for w < 0).

    The score function of a Cauchy family is rational in eps (2 eps/(gamma (1 + eps**2))), so
    its products with trigonometric f have this form; quadrature of them converges badly (the
    integrand oscillates and falls only like 1/eps**2). Terms are grouped by frequency before
    their integrability is judged, so that divergent pieces which cancel (eps - eps**3/(1 +
    eps**2)) do not raise. Raises MomentError when R_k p does not fall like 1/eps**2 or has a pole
    on the real line (then E|h| is infinite), _NoRule when h is not of this form or a sign
    cannot be decided.
    """
    eps = base.symbol
    e = h.rewrite(sp.exp) if h.has(*_TRIG) else h
    e = sp.expand(e, deep=True, power_base=True, power_exp=True, mul=True, multinomial=True)
    groups = {}
    for term in sp.Add.make_args(e):
        rest, exponent = sp.Integer(1), sp.Integer(0)
        num, den = (sp.factor_terms(part) for part in term.as_numer_denom())
        for factor, sign in [(f, 1) for f in sp.Mul.make_args(num)] + \
                [(f, -1) for f in sp.Mul.make_args(den)]:
            if isinstance(factor, sp.exp) and factor.has(eps):
                exponent += sign * factor.args[0]
            elif factor.is_Pow and isinstance(factor.base, sp.exp) and factor.base.has(eps) \
                    and not factor.exp.has(eps):
                exponent += sign * factor.base.args[0] * factor.exp
            else:
                rest *= factor ** sign
        exponent = sp.expand(exponent)
        if not exponent.is_polynomial(eps) or sp.degree(exponent, eps) > 1:
            raise _NoRule(term)
        a = exponent.coeff(eps, 1)
        groups[a] = groups.get(a, sp.Integer(0)) + rest * sp.exp(exponent.coeff(eps, 0))
    return sum((_fourier_by_residues(r, a, base) for a, r in groups.items()), sp.Integer(0))


def _fourier_by_residues(r, a, base):
    """The integral of r(eps) p(eps) exp(a eps) over the real line, a = i w, r p rational."""
    eps = base.symbol
    shown = sp.sstr(r * sp.exp(a * eps)).replace("epsilon", "eps")
    if not (r * base.density).is_rational_function(eps):
        raise _NoRule(r)
    w = sp.expand(a / sp.I)
    if w.is_real is not True:
        if sp.re(a).is_nonzero:
            raise MomentError(f"E[{shown}] is infinite under Cauchy noise: it grows exponentially")
        raise _NoRule(a)
    num, den = sp.fraction(sp.together(r * base.density))  # cancel: tens of seconds here
    num, den = sp.Poly(num, eps), sp.Poly(den, eps)
    if num.is_zero:
        return sp.Integer(0)
    if den.degree() - num.degree() < 2:  # common factors do not change the difference
        raise MomentError(
            f"E[{shown}] does not exist under Cauchy noise: the integrand falls only like "
            f"1/eps**{den.degree() - num.degree()}, so E|h| is infinite")
    if w == 0 or w.is_positive:
        side = 1
    elif w.is_negative:
        side = -1
    else:
        raise _NoRule(w)
    poles = _poles(num, den, eps)
    if any(sp.im(pole).is_zero for pole in poles):  # perhaps a factor num shares: cancel
        num, den = (sp.Poly(e, eps) for e in sp.fraction(sp.cancel(num.as_expr() / den.as_expr())))
        poles = _poles(num, den, eps)
    heights = {pole: sp.im(pole) for pole in poles}
    for pole, height in heights.items():
        if height.is_zero:
            raise MomentError(f"E[{shown}] does not exist under Cauchy noise: a pole at "
                              f"eps = {sp.sstr(pole)} on the real line")
        if height.is_positive is None:
            raise _NoRule(pole)
    total = sp.Integer(0)
    for pole, order in poles.items():
        if (side > 0) != bool(heights[pole].is_positive):
            continue
        rest = den.LC() * sp.Mul(*[(eps - q) ** m for q, m in poles.items() if q != pole])
        g = num.as_expr() * sp.exp(a * eps) / rest
        residue = sp.diff(g, eps, order - 1).subs(eps, pole) / sp.factorial(order - 1)
        total += sp.cancel(residue) if sp.count_ops(residue) < _CANCEL_OPS else residue
    return side * 2 * sp.pi * sp.I * total


def _poles(num, den, eps):
    """{pole: order} of num/den; _NoRule unless every root of den is found."""
    poles = sp.roots(den, eps)
    if sum(poles.values()) != den.degree():
        raise _NoRule(den)
    return poles


def _gamma_integral(t: _Term):
    """E[eps**s log(eps)**m exp(a eps)], eps ~ Exp(1): d^m/ds^m Gamma(s+1)/(1-a)**(s+1)."""
    s = sp.Dummy("s")
    value = sp.diff(sp.gamma(s + 1) / (1 - t.linear) ** (s + 1), s, t.logs).subs(s, t.power)
    conditions = [sp.re(t.power) > -1, sp.re(t.linear) < 1]
    for c in conditions:
        if c is sp.false:
            raise MomentError(f"E[{_show(t)}] is infinite under Exp(1) noise")
    return t.coeff * value, conditions


def _power_integral(t: _Term):
    """E[u**s log(u)**m], u ~ U(0, 1): d^m/ds^m 1/(s+1)."""
    if t.linear != 0:
        raise _NoRule(t)
    s = sp.Dummy("s")
    value = sp.diff(1 / (s + 1), s, t.logs).subs(s, t.power)
    condition = sp.re(t.power) > -1
    if condition is sp.false:
        raise MomentError(f"E[{_show(t)}] is infinite under U(0, 1) noise")
    return t.coeff * value, [condition]


_BRANCHES = (sp.hyper, sp.meijerg, sp.exp_polar, sp.re, sp.im, sp.arg, sp.polar_lift)
"""integrate's results with these are not trusted: a hypergeometric function evaluated at a
complex point off its principal branch gave E[z] = re(hyper((b, -1/a), (b + 1,), exp(2 I pi/b)))
under Kumaraswamy(a, b), 1.40 at a = 3/2, b = 2 where b B(1 + 1/a, b) = 0.45. Quadrature
takes over."""


def is_closed(expr) -> bool:
    """Whether expr is a finished closed form: no unevaluated Integral, Sum, Derivative, Subs,
    Limit or Piecewise (these come back from SymPy looking like success)."""
    return not expr.has(sp.Integral, sp.Sum, sp.Derivative, sp.Subs, sp.Limit, sp.Piecewise)


def _show(t: _Term) -> str:
    eps = sp.Symbol("eps")
    return sp.sstr(eps**t.power * sp.log(eps)**t.logs * sp.exp(t.linear * eps + t.quadratic * eps**2))


def _real_form(value):
    """value with the imaginary unit expanded away and simplified, each within a time budget
    (expand_complex alone takes seconds on the residue sums of a Cauchy variance); a value that
    keeps I is still right, its imaginary part cancels when evaluated."""
    if not value.has(sp.I):
        return value
    try:
        with time_budget(_TIDY_SECONDS):
            value = sp.expand_complex(value)
            if all(s.is_real for s in value.free_symbols):
                # the expectation of a real integrand is real: drop the imaginary part that
                # cancels only after simplification (the two halves of a Laplace variance)
                value = value.as_real_imag()[0]
    except OutOfTime:
        return value
    if sp.count_ops(value) < 150:
        try:
            with time_budget(_TIDY_SECONDS):
                value = sp.simplify(value)
        except OutOfTime:
            pass
    return value


def _by_integrate(h, base, budget):
    eps = base.symbol
    lo, hi = base.support
    try:
        with time_budget(budget):
            result = sp.integrate(h * base.density, (eps, lo, hi), conds="separate")
    except OutOfTime:
        return None
    except (ValueError, TypeError, NotImplementedError, ZeroDivisionError, RecursionError,
            AttributeError, sp.PolynomialError):
        return None
    value, condition = result if isinstance(result, tuple) else (result, sp.true)
    if not is_closed(value) or value.has(*_BRANCHES):
        return None
    if value.has(sp.oo, -sp.oo, sp.zoo, sp.nan):  # also oo*sign(...) for E[1/u**2], u ~ U(0, 1)
        raise MomentError(f"E[{sp.sstr(h)}] is infinite under {base.text} (SymPy's integrate)")
    if condition is sp.false:
        return None
    return Closed(_real_form(value), "integrate", () if condition is sp.true else (condition,))
