r"""Verify a user's derivation: is a claimed gradient right, is a claimed estimator unbiased?

A claimed gradient :math:`c(\phi)` of :math:`\partial_w \mathbb E_{q(z;\phi)}[f(z)]` is decided in
three tiers, the first that applies giving the verdict:

1. **symbolic**: the exact gradient has a closed form and ``simplify(c - exact)`` is 0
   (confirmed). When the difference does not simplify to 0 it may still be 0, so
2. **exact arithmetic at points**: both are evaluated at 30 significant digits at exact rational
   points that satisfy the family's constraints and the closed form's validity conditions, small
   ones first (mu=1, sigma=1, then 2, 1/2, ...) and then random ones. The first point where they
   differ (beyond 1e-20 relative) refutes the claim and is reported as the counterexample; agreement
   at every point confirms it *numerically*, and the result says so.
3. **quadrature**: without a closed form the exact gradient comes from quadrature
   (:func:`derive.gradient_at`: a Richardson-extrapolated central difference of the 30-digit
   quadrature of :math:`\mathbb E_q[f]`) at the user's values or at a few valid points; claim and
   quadrature must agree within ``QUADRATURE_TOLERANCE`` (relative), which the result states.

A claimed per-sample estimator :math:`h(z)` (written in z, or in the base noise ``eps`` with
z = g(eps; phi)) is unbiased when :math:`\mathbb E_q[h] = \partial_w \mathbb E_q[f]`;
:math:`\mathbb E_q[h]` comes from the expectation engine (closed form) or quadrature, and is then
compared with the exact gradient exactly as a claim is.

References: Mohamed, Rosca, Figurnov, Mnih (2020), "Monte Carlo Gradient Estimation in Machine
Learning", JMLR 21(132).
"""

import itertools
import random
from dataclasses import dataclass, field, replace

import mpmath
import sympy as sp

from ._budget import OutOfTime, time_budget
from ._errors import DeriveError
from . import _discrete, _implicit
from ._estimators import Exact, Problem, exact_gradient, expectation, to_base
from ._expectation import Closed, MomentError, closed_form, is_closed
from ._numbers import evaluate, exact_number, holds
from ._quadrature import quad_expectation
from ._symbols import Z
from ._user import parse
from ._values import gradient_at

EXACT_TOLERANCE = 1e-20
"""Relative difference above which two 30-digit evaluations of closed forms differ."""

QUADRATURE_TOLERANCE = 1e-8
"""Relative tolerance (plus ``QUADRATURE_FLOOR`` absolute) when a side comes from quadrature."""

QUADRATURE_FLOOR = 1e-12

SIMPLE_POINTS = 12
"""Small valid points (mu=1, sigma=1 first) tried when simplification is inconclusive."""

RANDOM_POINTS = 24
"""Random points tried after the small ones when simplification is inconclusive."""

QUADRATURE_POINTS = 3
"""Points compared by quadrature when the user gives no values (each costs ~0.5-2 s)."""

SIMPLIFY_SECONDS = 3.0

_SIMPLE = tuple(sp.Rational(v) for v in
                ("1", "2", "1/2", "3", "0", "-1", "3/2", "1/3", "-2", "2/3", "5/2", "4", "-1/2",
                 "5/4", "-3", "1/4", "7/2", "-3/2", "5", "3/4"))
_SIMPLE_TRIES = 400
_NOISE_NAMES = ("eps", "epsilon")

_NEEDS_WRT = ("{what} is one derivative, but the problem differentiates with respect to {names}; "
              "name one parameter (wrt='mu' in Python, --wrt mu on the command line)")
_HAS_Z = ("the claimed gradient {claim} depends on the sample z; a gradient is a function of the "
          "parameters only. To check a per-sample estimator h(z), use verify_estimator "
          "(--estimator on the command line)")
_UNKNOWN = ("{what} uses {names}, which {verb} not a symbol of the problem; its symbols are "
            "{known}{hint}")


@dataclass(frozen=True)
class Verification:
    """The verdict on a claimed gradient or a claimed per-sample estimator.

    Attributes:
        verdict: ``"confirmed"``, ``"refuted"`` or ``"undecided"`` (nothing could be compared).
        problem, wrt: the problem and the parameter differentiated.
        subject: ``"claim"`` (a claimed gradient) or ``"estimator"`` (a claimed h).
        claim: the claimed gradient, or the claimed estimator h, as parsed.
        claimed: what is compared with the exact gradient: the claim, or E_q[h] in closed form
            (None when E_q[h] came from quadrature).
        exact: the exact gradient in closed form (None when it has none).
        difference: the simplest form found of ``claimed - exact`` (0 when confirmed
            symbolically; None when a side has no closed form).
        point: ``{symbol: Rational}``, the counterexample when refuted, else a point compared.
        claimed_value, exact_value: the two sides at ``point`` (SymPy numbers; exact rationals
            where the values are rational).
        method: ``"symbolic"``, ``"exact arithmetic"`` (at points, 30 digits), ``"quadrature"``
            or ``"none"`` (the gradient does not exist).
        tolerance: the relative tolerance of the numerical comparison (None for symbolic).
        points: how many points were compared.
        conditions: where the exact closed form is valid (points were taken there).
        reason: one sentence on how the verdict was reached.
    """

    verdict: str
    problem: Problem = field(repr=False)
    wrt: sp.Symbol
    subject: str
    claim: sp.Expr
    claimed: sp.Expr | None
    exact: sp.Expr | None
    difference: sp.Expr | None
    point: dict = field(default_factory=dict)
    claimed_value: sp.Expr | None = None
    exact_value: sp.Expr | None = None
    method: str = "symbolic"
    tolerance: float | None = None
    points: int = 0
    conditions: tuple = ()
    reason: str = ""

    @property
    def confirmed(self) -> bool:
        return self.verdict == "confirmed"

    @property
    def refuted(self) -> bool:
        return self.verdict == "refuted"

    def text(self) -> str:
        """The verdict in one line, e.g. ``REFUTED: d/dmu E[z**4] is 4*mu**3 + 12*mu*sigma**2;
        the claim differs by -mu**3 (claim minus exact; at mu=1, sigma=1: claim 15, exact 16)``."""
        head = {"confirmed": "CONFIRMED", "refuted": "REFUTED", "undecided": "UNDECIDED"}
        method = "" if self.method in ("symbolic", "none") else f" ({self.method})"
        return f"{head[self.verdict]}{method}: {self.reason}"


def verify_claim(problem: Problem, wrt, claim, *, values=None, seed: int = 0,
                 budget: float | None = None) -> Verification:
    r"""Decide whether ``claim`` equals :math:`\partial_w \mathbb E_q[f]`.

    Args:
        problem: from :func:`derive.problem`.
        wrt: the parameter differentiated (symbol or name); None when ``problem.wrt`` has one.
        claim: the claimed gradient, as text (parsed safely with :func:`derive.parse`) or a SymPy
            expression of the problem's symbols (matched by name).
        values: optional ``{symbol or name: number}`` for every symbol of the problem: the point
            compared first (and the only one when quadrature is needed).
        seed: seed of the random points used when simplification is inconclusive.
        budget: seconds for SymPy's integrate (see :func:`derive.closed_form`).

    Returns:
        A :class:`Verification`; ``.text()`` is the one-line report.

    Example:
        >>> import derive
        >>> fam = derive.family("normal")
        >>> p = derive.problem(fam, derive.parse("z**4", fam), wrt=["mu"])
        >>> print(derive.verify_claim(p, "mu", "3*mu**3 + 12*mu*sigma**2").text())
        ... # doctest: +NORMALIZE_WHITESPACE
        REFUTED: d/dmu E[z**4] is 4*mu**3 + 12*mu*sigma**2; the claim differs by -mu**3
        (claim minus exact; at mu=1, sigma=1: claim 15, exact 16)
    """
    w = _wrt(problem, wrt, "a claimed gradient")
    try:
        expr = _expression(problem, claim, what="claim")
        if expr.has(Z):
            raise DeriveError(_HAS_Z.format(claim=_text(expr)))
        point = _user_point(problem, values)
        exact = exact_gradient(problem, budget=budget)[w]
    except DeriveError as err:
        raise err.within(f"while verifying a claimed d/d{w} of {problem}") from None
    return _Comparison(problem, w, "claim", expr, expr, None, exact, point, seed).run()


def verify_estimator(problem: Problem, wrt, estimator, *, values=None, seed: int = 0,
                     budget: float | None = None) -> Verification:
    r"""Decide whether the per-sample estimator h is unbiased: :math:`\mathbb E_q[h] =
    \partial_w \mathbb E_q[f]`.

    ``estimator`` is text or a SymPy expression in z (z ~ q) or in the base noise ``eps``
    (z = g(eps; phi)), the parameters and the problem's other symbols, e.g. the score-function
    estimator of d/dmu E[z**2] under Normal(mu, sigma): ``"z**2*(z - mu)/sigma**2"``. The other
    arguments are those of :func:`verify_claim`.
    """
    w = _wrt(problem, wrt, "a claimed estimator")
    fam = problem.family
    try:
        h = _expression(problem, estimator, what="estimator", noise=True)
        in_base = to_base(h, fam)
        point = _user_point(problem, values)
        exact = exact_gradient(problem, budget=budget)[w]
    except DeriveError as err:
        raise err.within(f"while verifying a claimed estimator of d/d{w} of {problem}") from None
    try:
        mean = _closed_mean(problem, h, in_base, budget)
    except MomentError as err:
        return _no_mean(problem, w, h, exact, err)
    if mean is not None and not is_closed(mean.value):
        mean = None
    comparison = _Comparison(problem, w, "estimator", h, None if mean is None else mean.value,
                             in_base, exact, point, seed)
    if mean is not None:
        comparison.extra_conditions = tuple(mean.conditions)
    return comparison.run()


def _closed_mean(problem, h, in_base, budget):
    """E_q[h] in closed form (Closed, or None); MomentError where it does not exist. Families
    without base noise (discrete: summation; implicit: their own density) take h in z."""
    fam = problem.family
    if fam.base is not None:
        return closed_form(in_base, fam.base, budget=budget)
    ex = expectation(problem, h, budget=budget)
    if ex.infinite:
        raise MomentError(ex.missing)
    return None if ex.expr is None else Closed(ex.expr, ex.method, ex.conditions)


def _mean_at(problem, h, in_base, point, what):
    """E_q[h] at the point, numerically (30 digits where quadrature is used)."""
    fam = problem.family
    if fam.discrete:
        return _discrete.sum_at(fam, fam.q_pmf * h, point, what=what)[0]
    if fam.implicit:
        return _implicit.quad_at(fam, h, point, what=what)
    return quad_expectation(in_base, fam.base, point, what=what)


def _no_mean(problem, w, h, exact, err):
    reason = (f"E_q[h] does not exist for h = {_text(h)} ({err.message}); an estimator without "
              f"a mean cannot be unbiased for d/d{w} E[{_text(problem.f)}]")
    return Verification("refuted", problem, w, "estimator", h, None, exact.expr, None,
                        method="symbolic", reason=reason)


def _wrt(problem: Problem, wrt, what):
    if wrt is None:
        if len(problem.wrt) == 1:
            return problem.wrt[0]
        raise DeriveError(_NEEDS_WRT.format(what=what, names=", ".join(map(str, problem.wrt))))
    for s in problem.wrt:
        if s == wrt or s.name == str(wrt):
            return s
    raise DeriveError(f"the problem does not differentiate with respect to {wrt}; it "
                      f"differentiates with respect to {', '.join(map(str, problem.wrt))}")


def _symbols(problem: Problem) -> dict:
    """The problem's symbols by name: the family's and f's other symbols (not z)."""
    out = {s.name: s for s in problem.family.symbols}
    out.update({s.name: s for s in problem.f.free_symbols if s != Z})
    return out


def _expression(problem: Problem, text_or_expr, *, what, noise=False):
    """The user's claim or estimator as SymPy, with symbols matched to the problem's by name."""
    known = _symbols(problem)
    allowed = dict(known, z=Z)
    if noise and problem.family.base is not None:  # discrete/implicit: h in z only
        for name in _NOISE_NAMES:
            allowed.setdefault(name, problem.family.base.symbol)
    if isinstance(text_or_expr, str):
        expr = parse(text_or_expr, problem.family, what=what)
    elif isinstance(text_or_expr, (sp.Basic, int)) and not isinstance(text_or_expr, bool):
        expr = sp.sympify(text_or_expr)
    else:
        raise DeriveError(f"{what} must be text such as '4*mu**3 + 12*mu*sigma**2' or a SymPy "
                          f"expression, not {type(text_or_expr).__name__}")
    unknown = sorted(s.name for s in expr.free_symbols if s.name not in allowed)
    if unknown:
        hint = ("; a claimed gradient may use z only through --estimator" if "z" in unknown
                else "; write the estimator in z or in the base noise eps" if noise else "")
        raise DeriveError(_UNKNOWN.format(what=what, names=", ".join(unknown),
                                          verb="is" if len(unknown) == 1 else "are",
                                          known=", ".join(sorted(known)) or "none", hint=hint))
    return expr.xreplace({s: allowed[s.name] for s in expr.free_symbols})


def _user_point(problem: Problem, values):
    if not values:
        return None
    known = _symbols(problem)
    point = {}
    for key, v in values.items():
        name = key.name if isinstance(key, sp.Symbol) else str(key)
        if name not in known:
            raise DeriveError(f"{name} is not a symbol of this problem; its symbols are "
                              f"{', '.join(sorted(known))}")
        point[known[name]] = exact_number(v)
    missing = sorted(set(known) - {s.name for s in point})
    if missing:
        raise DeriveError(f"no value for {', '.join(missing)}; give a value for every symbol "
                          f"(--param {missing[0]}=VALUE) or none")
    problem.family.check_values(point)
    return point


class _Comparison:
    """Compare ``claimed`` (closed form, or None: E_q[h] by quadrature of ``in_base``) with the
    exact gradient, symbolically, then at points."""

    def __init__(self, problem, w, subject, claim, claimed, in_base, exact: Exact, point, seed):
        self.problem, self.w, self.subject, self.claim = problem, w, subject, claim
        self.claimed, self.in_base, self.exact, self.user_point = claimed, in_base, exact, point
        self.rng = random.Random(seed)
        self.extra_conditions = ()

    # -- the verdict ---------------------------------------------------------------------------

    def run(self) -> Verification:
        if self.exact.infinite:
            return self._result("refuted", method="none", reason=(
                f"d/d{self.w} E[{_text(self.problem.f)}] does not exist ({self.exact.missing}), "
                f"so no {self._noun()} can be right"))
        if self.exact.expr is not None and self.claimed is not None:
            return self._closed()
        return self._quadrature()

    def _closed(self):
        difference = simplest(self.claimed - self.exact.expr)
        if difference == 0:
            pair = self.user_point and _closed_values(self.claimed, self.exact.expr,
                                                      self.user_point)
            if not pair:
                return self._result("confirmed", difference=0, reason=self._agree_text())
            value = _values_at(self.claimed, self.exact.expr, self.user_point, pair)[1]
            return self._result("confirmed", difference=0, point=self.user_point, values=pair,
                                points=1, reason=f"{self._agree_text()}; at "
                                                 f"{_show_point(self.user_point)} both are {value}")
        compared, first = 0, None
        for point in self._points(SIMPLE_POINTS, RANDOM_POINTS):
            pair = _closed_values(self.claimed, self.exact.expr, point)
            if pair is None:
                continue
            compared += 1
            first = first or (point, pair)
            if _differ(*pair):
                return self._refuted(point, pair, difference, "exact arithmetic", compared)
        if first is None:
            return self._result("undecided", difference=difference, method="exact arithmetic",
                                reason=f"the {self._noun()} and the exact gradient could not be "
                                       f"evaluated at any valid point")
        point, pair = first
        return self._result(
            "confirmed", difference=difference, method="exact arithmetic", point=point,
            values=pair, tolerance=EXACT_TOLERANCE, points=compared, reason=(
                f"{self._target()} is {_show(self.exact.expr)}; SymPy could not simplify "
                f"{self._minus()} to 0, but the two agree to 20 significant digits at {compared} "
                f"valid points, small and random (e.g. {_show_point(point)}: "
                f"{_show_number(pair[0])})"))

    def _quadrature(self):
        compared, last, failed = 0, None, 0
        limit = 1 if self.user_point else QUADRATURE_POINTS
        self.why = "no value could be had"
        for point in self._points(1, 8 * QUADRATURE_POINTS, quadrature=True):
            pair = self._numeric_values(point)
            if pair is None:
                failed += 1
                if failed > limit:
                    break
                continue
            if isinstance(pair, Verification):
                return pair
            compared += 1
            last = (point, pair)
            if not _close(*pair):
                return self._refuted(point, pair, None, "quadrature", compared)
            if compared >= limit:
                break
        if last is None:
            return self._result("undecided", method="quadrature", reason=(
                f"no valid point could be compared by quadrature for {self._target()} "
                f"({self.why})"))
        point, pair = last
        where = (f"at {_show_point(point)}" if compared == 1 else
                 f"at {compared} valid points (e.g. {_show_point(point)})")
        return self._result("confirmed", method="quadrature", point=point, values=pair,
                            tolerance=QUADRATURE_TOLERANCE, points=compared, reason=(
            f"{self._no_closed_form()}; {where} the {self._side()} is "
            f"{_show_number(pair[0])} and the exact gradient {_show_number(pair[1])} (by "
            f"quadrature), within the tolerance {QUADRATURE_TOLERANCE:g} relative"))

    def _numeric_values(self, point):
        """(claimed, exact) at the point as SymPy Floats; None when a side cannot be had there."""
        try:
            if self.claimed is not None:
                claimed = evaluate(self.claimed, point)
            else:
                with mpmath.workdps(30):
                    claimed = _mean_at(self.problem, self.claim, self.in_base, point,
                                       f"E_q[{_text(self.claim)}]")
        except MomentError as err:
            if self.claimed is None:
                return _no_mean(self.problem, self.w, self.claim, self.exact, err)
            self.why = err.message
            return None
        except DeriveError as err:
            self.why = str(err)
            return None
        if self.exact.expr is not None:
            try:
                exact = evaluate(self.exact.expr, point)
            except DeriveError as err:
                self.why = str(err)
                return None
        else:
            one = replace(self.problem, wrt=(self.w,))
            number = gradient_at(one, {self.w: self.exact}, point)[self.w]
            if number.infinite:
                return self._result("refuted", method="quadrature", point=point, reason=(
                    f"d/d{self.w} E[{_text(self.problem.f)}] does not exist at "
                    f"{_show_point(point)} ({number.missing}), so no {self._noun()} can be right"))
            if number.value is None:
                self.why = number.missing
                return None
            exact = number.value
        return _float(claimed), _float(exact)

    def _refuted(self, point, pair, difference, method, compared):
        shown = _values_at(self.claimed, self.exact.expr, point, pair)
        side = "E_q[h]" if self.subject == "estimator" else "claim"
        at = f"at {_show_point(point)}: {side} {shown[0]}, exact {shown[1]}"
        if difference is not None:
            if self.subject == "estimator":
                reason = f"{self._lead()}; the bias E_q[h] - exact is {_show(difference)} ({at})"
            else:
                reason = (f"{self._lead()}; the claim differs by {_show(difference)} (claim minus "
                          f"exact; {at})")
            return self._result("refuted", difference=difference, point=point, values=pair,
                                points=compared, reason=reason)
        gap = _show_number(abs(pair[0] - pair[1]), 3)
        lead = self._no_closed_form() if self.exact.expr is None else self._lead()
        reason = (f"{lead}; {at} (by quadrature; |difference| {gap} exceeds the tolerance "
                  f"{QUADRATURE_TOLERANCE:g} relative)")
        return self._result("refuted", method=method, point=point, values=pair,
                            tolerance=QUADRATURE_TOLERANCE, points=compared, reason=reason)

    # -- points --------------------------------------------------------------------------------

    def _points(self, simple_count, random_count, quadrature=False):
        """The user's point, then ``simple_count`` small valid points, then ``random_count``
        random ones (exact rationals); with ``quadrature``, only the user's point if given."""
        conditions = tuple(self.exact.conditions) + tuple(self.extra_conditions)
        if self.user_point:
            yield self.user_point
            if quadrature:
                return
        symbols = _ordered_symbols(self.problem)
        valid = (p for p in itertools.islice(_simple_points(symbols), _SIMPLE_TRIES)
                 if self._valid(p, conditions))
        yield from itertools.islice(valid, simple_count)
        for _ in range(random_count):
            point = self._random_point(symbols, conditions, quadrature)
            if point is not None:
                yield point

    def _random_point(self, symbols, conditions, quadrature):
        denominators = (1, 2, 3, 4) if quadrature else (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16)
        for _ in range(50):
            point = {}
            for s in symbols:
                q = self.rng.choice(denominators)
                p = self.rng.randint(1, 4 * q) if s.is_positive else self.rng.randint(-4 * q, 4 * q)
                point[s] = sp.Rational(p, q)
            if self._valid(point, conditions):
                return point
        return None

    def _valid(self, point, conditions):
        try:
            self.problem.family.check_values(point)
        except DeriveError:
            return False
        return all(holds(c, point) is True for c in conditions)

    # -- words ---------------------------------------------------------------------------------

    def _noun(self):
        return "claimed estimator" if self.subject == "estimator" else "claimed value"

    def _side(self):
        return "mean E_q[h]" if self.subject == "estimator" else "claim"

    def _minus(self):
        return "E_q[h] - exact" if self.subject == "estimator" else "claim - exact"

    def _target(self):
        return f"d/d{self.w} E[{_text(self.problem.f)}]"

    def _lead(self):
        if self.subject == "estimator":
            mean = _show(self.claimed) if self.claimed is not None else "(by quadrature)"
            return (f"h = {_text(self.claim)} is biased for {self._target()}: E_q[h] = {mean}, "
                    f"but the exact gradient is {_show(self.exact.expr)}")
        return f"{self._target()} is {_show(self.exact.expr)}"

    def _agree_text(self):
        where = (f" (valid where {', '.join(map(sp.sstr, self.exact.conditions))})"
                 if self.exact.conditions else "")
        if self.subject == "estimator":
            return (f"h = {_text(self.claim)} is unbiased for {self._target()}: E_q[h] = "
                    f"{_show(self.exact.expr)}, the exact gradient{where}")
        return (f"{self._target()} is {_show(self.exact.expr)}{where}, and the claim equals it "
                f"(claim - exact simplifies to 0)")

    def _no_closed_form(self):
        if self.exact.expr is None:
            return f"{self._target()} has no closed form here ({self.exact.missing})"
        return f"{self._target()} is {_show(self.exact.expr)}; E_q[h] has no closed form here"

    def _result(self, verdict, *, difference=None, method="symbolic", point=None, values=None,
                tolerance=None, points=0, reason=""):
        claimed_value = exact_value = None
        if point is not None and values is not None:
            claimed_value, exact_value = _exact_or_float(self.claimed, point, values[0]), \
                _exact_or_float(self.exact.expr, point, values[1])
        return Verification(
            verdict, self.problem, self.w, self.subject, self.claim, self.claimed,
            self.exact.expr, difference, dict(point or {}), claimed_value, exact_value, method,
            tolerance, points, tuple(self.exact.conditions) + tuple(self.extra_conditions),
            reason)


def simplest(expr, seconds: float = SIMPLIFY_SECONDS) -> sp.Expr:
    """The shortest of expr, its expansion and its simplification (under a time budget); 0 when
    any of them is 0."""
    expr = sp.sympify(expr)
    candidates = [expr]
    if sp.count_ops(expr) < 400:
        for step in (sp.expand, sp.simplify):
            try:
                with time_budget(seconds):
                    candidates.append(step(expr))
            except OutOfTime:
                pass
    if any(c == 0 for c in candidates):
        return sp.Integer(0)
    return min(candidates, key=lambda e: (len(sp.sstr(e)), sp.count_ops(e)))


def _show(expr) -> str:
    """The shorter of expr and its expansion, as text."""
    forms = [_text(expr)]
    if sp.count_ops(expr) < 200:
        forms.append(_text(sp.expand(expr)))
    return min(forms, key=len)


def _text(expr) -> str:
    """sstr, with the 0/1 indicators the parser makes of comparisons written back as (z > 0)."""
    expr = sp.sympify(expr)
    indicators = {pw: sp.Symbol(f"({sp.sstr(pw.args[0].cond)})") for pw in expr.atoms(sp.Piecewise)
                  if len(pw.args) == 2 and pw.args[0].expr == 1 and pw.args[1].expr == 0
                  and pw.args[1].cond == sp.true}
    return sp.sstr(expr.xreplace(indicators)) if indicators else sp.sstr(expr)


def _ordered_symbols(problem: Problem) -> list:
    fam = problem.family
    order = [s for t in fam.theta for s in sorted(sp.sympify(t).free_symbols, key=str)]
    order += sorted((s for s in problem.f.free_symbols if s != Z), key=str)
    return list(dict.fromkeys(order))


def _simple_points(symbols):
    """Points over small rationals, by total rank in ``_SIMPLE`` (1 first, then 2, 1/2, ...)."""
    d = len(symbols)
    for total in range(d * (len(_SIMPLE) - 1) + 1):
        for ranks in _compositions(total, d, len(_SIMPLE) - 1):
            yield {s: _SIMPLE[r] for s, r in zip(symbols, ranks)}


def _compositions(total, parts, largest):
    if parts == 0:
        if total == 0:
            yield ()
        return
    for first in range(min(total, largest) + 1):
        for rest in _compositions(total - first, parts - 1, largest):
            yield (first,) + rest


def _closed_values(claimed, exact, point):
    try:
        return evaluate(claimed, point), evaluate(exact, point)
    except DeriveError:
        return None


def _differ(a, b) -> bool:
    scale = max(abs(a), abs(b))
    return scale > 1e-25 and abs(a - b) > EXACT_TOLERANCE * scale


def _close(a, b) -> bool:
    return abs(a - b) <= QUADRATURE_TOLERANCE * max(abs(a), abs(b)) + QUADRATURE_FLOOR


def _float(value) -> sp.Float:
    """A 30-digit SymPy Float from an mpmath number or a Python float."""
    if isinstance(value, float):
        return sp.Float(repr(value), 30)
    return sp.Float(str(value), 30)


def _exact_or_float(expr, point, value):
    """The value as an exact rational when expr is rational at the point, else a Float."""
    if expr is not None:
        filled = sp.sympify(expr).xreplace(point)
        if filled.is_Rational:
            return filled
    return sp.Float(value, 15) if not isinstance(value, sp.Float) else value


def _values_at(claimed, exact, point, pair):
    return tuple(_show_number(_exact_or_float(e, point, v)) for e, v in zip((claimed, exact), pair))


def _show_number(value, digits=12) -> str:
    value = sp.sympify(value)
    if value.is_Rational:
        return sp.sstr(value)
    return mpmath.nstr(mpmath.mpf(str(sp.Float(value, 30))), digits)


def _show_point(point) -> str:
    return ", ".join(f"{s}={sp.sstr(v)}" for s, v in point.items())
