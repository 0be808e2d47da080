"""Discrete families q(z; phi) on the integers, and exact expectations by summation.

A discrete z has no differentiable reparameterization z = g(eps; phi): every sampler is a step
function of its noise, so the pathwise estimator is refused and the score-function estimator
h(z) = f(z) d/dphi log q(z; phi) + d/dphi f(z) is the one that applies.

Families (``family(name)``):

========== ============================ ============ ==========================================
name       parameters                   support      NumPy draw
========== ============================ ============ ==========================================
bernoulli  p, 0 < p < 1                 {0, 1}       ``rng.random(n) < p``
categoricalK  logits l1..lK (softmax)   {1, ..., K}  inverse CDF: ``searchsorted`` of one uniform
poisson    lam > 0                      {0, 1, ...}  ``rng.poisson(lam, n)``
binomial   n (fixed integer), 0 < p < 1 {0, ..., n}  ``rng.binomial(n, p, n_samples)``
geometric  p, 0 < p < 1 (trials)        {1, 2, ...}  ``rng.geometric(p, n)``
========== ============================ ============ ==========================================

The categorical family's K is part of its name: ``categorical3`` has logits l1, l2, l3 and
z = k with probability exp(lk)/(exp(l1) + exp(l2) + exp(l3)). ``mcgrad check categorical
--param l1=.. --param l2=..`` takes K from the logits given (:func:`family_name`). The binomial's
n is a number of trials, a fixed positive integer: it is given a value like any parameter but is
never differentiated (``wrt`` naming it is refused).

Exact expectations E_q[h] = sum_k q(k) h(k):

- finite support with numeric ends (bernoulli, categoricalK): enumerated exactly, symbolically
  (method ``enumeration``);
- otherwise ``sympy.summation`` under the time budget (method ``summation``); an unevaluated
  ``Sum`` is failure, a sum SymPy finds infinite raises :class:`MomentError`;
- at given values (:func:`sum_at`), where no closed form was found: a finite support (the
  binomial with its n known) is enumerated term by term with 60-digit arithmetic
  (``enumeration``); an infinite one is summed directly (``series``) after probing its terms
  far out (k up to 2**40): terms that do not fall to 0, fall no faster than 1/k, or pass 1e100000
  with a term ratio that stays above 1, raise MomentError (the series diverges); the sum stops
  when 64 consecutive terms and every far probe beyond are below 1e-32 of the partial sum. The
  tail and divergence checks are probes, not proofs: a term bump hidden between two probes
  (k and 1.19 k) would be missed. The terms here are unimodal or eventually geometric for the
  f one meets (polynomials, exponentials, powers, trigonometric and indicator functions).

The exact gradient at values without a closed form is the sum of d/dw [q(k) f(k)] over the
support, differentiating under the sum. For a discrete family this is not an estimator's formula
taken on trust: each term is the derivative of one summand of E_q[f], exact calculus (for an
infinite support, valid where the differentiated series converges uniformly near the point,
which the same probes check). It equals E_q[f d/dw log q + d/dw f], so it cannot by itself catch
an error in the score-function formula; the tests compare it with finite differences of
independently computed sums.
"""

import random
import re
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import sympy as sp

from ._budget import OutOfTime, time_budget
from ._errors import DeriveError
from ._expectation import Closed, MomentError, is_closed
from ._families import Constraint, Family
from ._numbers import DIGITS, evaluate, exact_number
from ._symbols import Z

PATHWISE_REFUSED = (
    "z is discrete: no differentiable reparameterization z = g(eps; phi) exists (any sampler is "
    "a step function of its noise, so d z/d phi is 0 almost everywhere and the pathwise "
    "estimator would be biased). Use the score-function estimator, or a continuous relaxation "
    "such as Gumbel-softmax (biased)")

MAX_ENUMERATION = 200_000
"""Largest finite support enumerated term by term at given values."""
MAX_TERMS = 400_000
"""Largest number of terms summed directly for an infinite support."""
_TOL = mpmath.mpf(10) ** -32
_RUN = 64
_HUGE = mpmath.mpf(10) ** 100000
_PROBES = tuple(sorted({int(2 ** (j / 4)) for j in range(4, 161)}))  # 2 .. 2**40, ratio 1.19


@dataclass(frozen=True)
class DiscreteFamily(Family):
    """q(z; theta) on the integers: ``pmf`` in Z, ``draw`` a NumPy source template, ``fixed``
    parameters (integers such as the binomial's n, never differentiated).

    ``base`` and ``transform`` are None: there is no continuous noise to reparameterize.
    ``draw`` is source text with ``{rng}``, ``{size}`` and ``{<param>}`` placeholders whose
    last line assigns the draws to ``z``.
    """

    discrete: bool = True
    pmf: sp.Expr = sp.Integer(0)
    draw: str = ""
    fixed: tuple = ()

    @property
    def q_pmf(self) -> sp.Expr:
        """q(z; phi) in the user's parameters."""
        return self._sub(self.pmf)

    @property
    def q_transform(self):
        raise DeriveError(f"{self.name} is discrete: it has no reparameterization z = g(eps)")

    def reparametrize(self, **exprs) -> "DiscreteFamily":
        for name in exprs:
            if self.param(name) in self.fixed:
                raise DeriveError(f"{name} of {self.name} is a fixed integer ({_FIXED_TEXT}); "
                                  f"it cannot be defined as an expression")
        return super().reparametrize(**exprs)

    def check_values(self, values) -> None:
        super().check_values(values)
        for s in self.fixed:
            if s in values and not (exact_number(values[s]).is_integer
                                    and exact_number(values[s]) >= 1):
                raise DeriveError(f"{self.name} needs {s} to be a positive whole number (the "
                                  f"number of trials), not {values[s]}")


_FIXED_TEXT = "the number of trials, given a value but never differentiated"


def _p():
    return sp.Symbol("p", positive=True)


def _unit(p):
    return (Constraint(p, "0 < p < 1"), Constraint(1 - p, "0 < p < 1"))


def bernoulli() -> DiscreteFamily:
    """Bernoulli(p): z = 1 with probability p, else 0."""
    p = _p()
    return DiscreteFamily(
        "bernoulli", (p,), Z * sp.log(p) + (1 - Z) * sp.log(1 - p),
        (sp.Integer(0), sp.Integer(1)), _unit(p), None, None,
        "z = (u < p), u ~ U(0, 1)", pmf=p**Z * (1 - p)**(1 - Z),
        draw="z = ({rng}.random({size}) < {p}).astype(numpy.float64)")


def _indicator(k):
    return sp.Piecewise((1, sp.Eq(Z, k)), (0, True))


def categorical(K: int) -> DiscreteFamily:
    """Categorical with logits l1..lK: z = k in {1, ..., K} with probability softmax(l)_k."""
    if not (isinstance(K, int) and 2 <= K <= 64):
        raise DeriveError(f"categorical needs 2 to 64 categories, not {K!r}; e.g. categorical3")
    logits = tuple(sp.Symbol(f"l{k}", real=True) for k in range(1, K + 1))
    total = sum(sp.exp(l) for l in logits)
    log_density = sum(l * _indicator(k) for k, l in enumerate(logits, 1)) - sp.log(total)
    pmf = sum(sp.exp(l) * _indicator(k) for k, l in enumerate(logits, 1)) / total
    names = ", ".join(f"{{{l.name}}}" for l in logits)
    draw = ("_l = numpy.array([" + names + "], dtype=numpy.float64)\n"
            "_c = numpy.cumsum(numpy.exp(_l - _l.max()))\n"
            "_k = numpy.searchsorted(_c, {rng}.random({size}) * _c[-1], side='right')\n"
            f"z = numpy.minimum(_k, {K - 1}).astype(numpy.float64) + 1.0")
    return DiscreteFamily(
        f"categorical{K}", logits, log_density, (sp.Integer(1), sp.Integer(K)), (), None, None,
        f"z = 1 + #{{k : cumsum(softmax(l))_k <= u}}, u ~ U(0, 1) (inverse CDF), K = {K}",
        pmf=pmf, draw=draw)


def poisson() -> DiscreteFamily:
    """Poisson(lam), lam the rate: q(z) = exp(-lam) lam**z / z!, z = 0, 1, ..."""
    lam = sp.Symbol("lam", positive=True)
    return DiscreteFamily(
        "poisson", (lam,), -lam + Z * sp.log(lam) - sp.log(sp.factorial(Z)),
        (sp.Integer(0), sp.oo), (Constraint(lam, "lam > 0"),), None, None,
        "z = rng.poisson(lam)", pmf=sp.exp(-lam) * lam**Z / sp.factorial(Z),
        draw="z = {rng}.poisson({lam}, {size}).astype(numpy.float64)")


def binomial() -> DiscreteFamily:
    """Binomial(n, p): the number of successes in n trials; n a fixed positive integer."""
    n, p = sp.Symbol("n", positive=True, integer=True), _p()
    return DiscreteFamily(
        "binomial", (n, p),
        sp.log(sp.binomial(n, Z)) + Z * sp.log(p) + (n - Z) * sp.log(1 - p),
        (sp.Integer(0), n), (Constraint(n, "n >= 1"),) + _unit(p), None, None,
        "z = rng.binomial(n, p)", pmf=sp.binomial(n, Z) * p**Z * (1 - p)**(n - Z),
        draw="z = {rng}.binomial(_whole({n}), {p}, {size}).astype(numpy.float64)", fixed=(n,))


def geometric() -> DiscreteFamily:
    """Geometric(p): the number of trials up to the first success, z = 1, 2, ..."""
    p = _p()
    return DiscreteFamily(
        "geometric", (p,), sp.log(p) + (Z - 1) * sp.log(1 - p), (sp.Integer(1), sp.oo),
        _unit(p), None, None, "z = rng.geometric(p) (number of trials)", pmf=p * (1 - p)**(Z - 1),
        draw="z = {rng}.geometric({p}, {size}).astype(numpy.float64)")


CATALOG = {"bernoulli": bernoulli, "categorical": None, "poisson": poisson,
           "binomial": binomial, "geometric": geometric}
"""The discrete families by name; ``categorical`` stands for categoricalK (K in the name)."""

_CATEGORICAL = re.compile(r"categorical(\d+)\Z")
_LOGIT = re.compile(r"l(\d+)\Z")


def family(name: str) -> DiscreteFamily | None:
    """The discrete family called ``name``, or None if there is none of that name."""
    name = str(name)
    m = _CATEGORICAL.match(name)
    if m:
        return categorical(int(m.group(1)))
    if name == "categorical":
        raise DeriveError("categorical needs its number of categories K in the name: "
                          "categorical3 has logits l1, l2, l3 (z in {1, 2, 3}); mcgrad check "
                          "categorical --param l1=.. --param l2=.. takes K from the logits given")
    make = CATALOG.get(name)
    return make() if make else None


def family_name(name: str, param_names) -> str:
    """``categorical`` with logits l1..lK among ``param_names`` as ``categoricalK``; any other
    name unchanged."""
    if name != "categorical":
        return name
    ks = sorted(int(m.group(1)) for m in map(_LOGIT.match, param_names or ()) if m)
    if ks and ks == list(range(1, len(ks) + 1)):
        return f"categorical{len(ks)}"
    if ks:
        raise DeriveError(f"categorical logits must be l1, ..., lK without gaps; got "
                          f"{', '.join(f'l{k}' for k in ks)}")
    return name


def check_wrt(fam, wrt) -> None:
    """Refuse differentiating a fixed integer parameter (the binomial's n)."""
    for w in wrt:
        if w in getattr(fam, "fixed", ()):
            rest = ", ".join(p.name for p in fam.params if p not in fam.fixed)
            raise DeriveError(f"cannot differentiate with respect to {w}: in {fam.name} it is "
                              f"{_FIXED_TEXT}; q is not differentiable in a whole number. Drop "
                              f"it from --wrt (differentiate {rest})")


def default_wrt(fam, wrt) -> list:
    """The default ``wrt`` without fixed parameters."""
    return [w for w in wrt if w not in getattr(fam, "fixed", ())]


# ------------------------------------------------------------------ symbolic sums

_K = sp.Dummy("k", integer=True, nonnegative=True)


def closed_form(fam: DiscreteFamily, h, *, budget=None) -> Closed | None:
    """E_q[h(z)] = sum_k q(k) h(k) in closed form, or None; MomentError when it is infinite."""
    from ._expectation import INTEGRATE_SECONDS
    budget = INTEGRATE_SECONDS if budget is None else budget
    lo, hi = fam.q_support
    return _closed_form(sp.sympify(h), fam.q_pmf, lo, hi, budget)


@lru_cache(maxsize=1024)
def _closed_form(h, pmf, lo, hi, budget):
    if not h.has(Z):
        return Closed(h, "enumeration" if hi.is_Integer else "summation")
    if lo.is_Integer and hi.is_Integer:
        return Closed(_enumerate(h, pmf, int(lo), int(hi)), "enumeration")
    return _summation(h, pmf, lo, hi, budget)


def _enumerate(h, pmf, lo, hi):
    total = sp.Integer(0)
    for k in map(sp.Integer, range(lo, hi + 1)):
        value = h.xreplace({Z: k})
        if value.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
            raise MomentError(f"{sp.sstr(h)} is not finite at z = {k}, which has positive "
                              f"probability")
        total += pmf.xreplace({Z: k}) * value
    return _tidy(total)


def _tidy(expr):
    if sp.count_ops(expr) > 300:
        return expr
    try:
        with time_budget(2.0):
            return sp.simplify(expr)
    except OutOfTime:
        return expr


def _summation(h, pmf, lo, hi, budget):
    term = (pmf * h).xreplace({Z: _K})
    try:
        with time_budget(budget):
            value = sp.summation(term, (_K, lo, hi))
    except OutOfTime:
        return None
    except (ValueError, TypeError, NotImplementedError, ZeroDivisionError, RecursionError,
            AttributeError, sp.PolynomialError):
        return None
    conditions = ()
    if isinstance(value, sp.Piecewise):
        (first, cond), rest = value.args[0], value.args[1:]
        if not (rest and rest[-1].cond is sp.true and rest[-1].expr.has(sp.Sum)
                and len(rest) == 1):
            return None
        value, conditions = first, (cond,)
        whole = {s for s in value.free_symbols if s.is_integer}  # the binomial's n
        value = _tidy(value)
        if hi is not sp.oo and value.is_rational_function(*(value.free_symbols - whole)):
            # A finite support {lo, ..., n}: SymPy's condition is the convergence condition of
            # the hypergeometric series it summed (binomial: p/(1 - p) < 1, i.e. p < 1/2), not
            # a condition of the finite sum. For each whole n both sides are analytic in the
            # other parameters and agree on an open set, so a closed form rational in them
            # holds wherever it is finite.
            conditions = ()
    if not is_closed(value):
        return None
    if value.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
        raise MomentError(f"E_q[{sp.sstr(h)}] is infinite: the series diverges (SymPy's "
                          f"summation)")
    return Closed(_tidy(value), "summation", conditions)


# ------------------------------------------------------------------ sums at values

def sum_at(fam: DiscreteFamily, summand, values, *, what="the sum"):
    """(mpmath number, method): sum over the support of ``summand`` (an expression in Z, the
    pmf already included) at exact values. MomentError when the sum does not exist."""
    exact = {s: exact_number(v) for s, v in values.items()}
    lo, hi = (sp.sympify(e).xreplace(exact) for e in fam.q_support)
    filled = sp.sympify(summand).xreplace(exact)
    if hi.is_Integer:
        if hi - lo > MAX_ENUMERATION:
            raise DeriveError(f"{what}: the support {{{lo}, ..., {hi}}} is too large to "
                              f"enumerate (more than {MAX_ENUMERATION} terms)")
        return _finite_sum(filled, int(lo), int(hi), what), "enumeration"
    return _series(_term_function(filled), int(lo), what), "series"


def _finite_sum(filled, lo, hi, what):
    fn = _term_function(filled)
    with mpmath.workdps(2 * DIGITS):
        total = mpmath.mpf(0)
        for k in range(lo, hi + 1):
            t = fn(k)
            if not mpmath.isfinite(t):
                raise MomentError(f"{what}: the term at z = {k} is not finite, and z = {k} has "
                                  f"positive probability")
            total += t
        return total


def _term_function(filled):
    """k -> the summand at z = k as an mpmath number (mpmath lambdify, else evalf)."""
    try:
        fn = sp.lambdify(Z, filled, modules="mpmath")
    except Exception:  # noqa: BLE001 - a printer gap: fall back to evalf
        fn = None

    def term(k):
        if fn is not None:
            try:
                with mpmath.workdps(2 * DIGITS):
                    v = mpmath.mpmathify(fn(mpmath.mpf(k)))
                if isinstance(v, mpmath.mpc):
                    v = v.real if abs(v.imag) <= _TOL * abs(v) else mpmath.nan
                return v
            except (TypeError, ValueError, ZeroDivisionError, NameError, AttributeError):
                pass
            except OverflowError:
                return mpmath.inf
        try:
            v = evaluate(filled.xreplace({Z: k}), {})
        except DeriveError:
            return mpmath.nan
        return v
    return term


def _series(term, lo, what):
    with mpmath.workdps(2 * DIGITS):
        far = _probe(term, lo, what)
        _check_decay(far, what)
        total, k, run, scale = mpmath.mpf(0), lo, 0, mpmath.mpf(0)
        while True:
            t = term(k)
            if not mpmath.isfinite(t):
                raise MomentError(f"{what}: the term at z = {k} is not finite, and z = {k} has "
                                  f"positive probability")
            total += t
            scale = max(scale, abs(total), abs(t))
            run = run + 1 if abs(t) <= _TOL * scale else 0
            if run >= _RUN and all(v <= _TOL * scale for j, v in far if j > k):
                return total
            k += 1
            if k - lo > MAX_TERMS:
                raise DeriveError(f"{what}: the series converges too slowly to sum directly "
                                  f"(more than {MAX_TERMS} terms)")


def _probe(term, lo, what):
    """[(k, |term(k)|)] at k = lo + 2, ..., lo + 2**40, in order; stops at a term beyond
    1e100000 (an exp(exp(z)) would otherwise take mpmath forever): MomentError when the term
    ratio t(k+1)/t(k) there exceeds 1 and has not fallen halfway to 1 by z = 4k (a ratio test
    on two points, not a proof), DeriveError (too large to sum, maybe finite) otherwise."""
    far = []
    for j in _PROBES:
        k = lo + j
        t = abs(term(k))
        if not mpmath.isfinite(t):
            raise MomentError(f"{what}: the series diverges (its term at z = {k} is not "
                              f"finite)")
        far.append((k, t))
        if t > _HUGE:
            ratio = abs(term(k + 1)) / t
            later = abs(term(4 * k + 1)) / abs(term(4 * k)) if ratio > 1 else 0
            if ratio > 1 + mpmath.mpf(10) ** -3 and later >= ratio - (ratio - 1) / 2:
                raise MomentError(f"{what}: the series diverges (its terms keep growing: "
                                  f"{mpmath.nstr(t, 3)} at z = {k}, term ratio "
                                  f"{mpmath.nstr(ratio, 4)} there and {mpmath.nstr(later, 4)} "
                                  f"at z = {4 * k})")
            raise DeriveError(f"{what}: the terms are too large to sum directly "
                              f"({mpmath.nstr(t, 3)} at z = {k})")
    return far


def _check_decay(far, what):
    """MomentError when the probed terms do not fall to 0, or fall like k**-a with a <= 1."""
    (k1, t1), (k2, t2) = far[-9], far[-1]
    if t2 == 0:
        return
    if t1 == 0 or t2 >= t1:
        raise MomentError(f"{what}: the series diverges (its terms do not fall to 0: "
                          f"{mpmath.nstr(t1, 3)} at z = {k1}, {mpmath.nstr(t2, 3)} at z = {k2})")
    a = mpmath.log(t1 / t2) / mpmath.log(mpmath.mpf(k2) / k1)
    if a <= 1.05:
        raise MomentError(f"{what}: the series diverges (its terms fall like z**-{float(a):.3g}"
                          f", no faster than 1/z, between z = {k1} and z = {k2})")


# ------------------------------------------------------------------ values of the analysis

def gradient_at(p, w, values):
    """(value, method): d/dw E_q[f] at the values, as the sum of d/dw [q(k) f(k)] (see the
    module docstring)."""
    fam = p.family
    sum_at(fam, fam.q_pmf * p.f, values, what=f"E_q[{sp.sstr(p.f)}]")  # must exist itself
    summand = sp.diff(fam.q_pmf * p.f, w)
    return sum_at(fam, summand, values, what=f"d/d{w} E_q[{sp.sstr(p.f)}]")


def second_moment_at(fam, h, values):
    """(value, method): E_q[h**2] at the values."""
    return sum_at(fam, fam.q_pmf * h**2, values, what="E[h**2]")


# ------------------------------------------------------------------ NumPy estimators

_HELPERS = '''
def _whole(x):
    k = int(x)
    if k != x or k < 1:
        raise ValueError(f"the number of trials must be a positive whole number, not {x}")
    return k
'''


def estimator_source(est, *, dtype="float64") -> tuple:
    """(source, function name, parameter names) of ``fn(rng, n, **params) -> (n, k)`` for an
    estimator of a discrete family: one draw call per invocation (chunk-size invariant)."""
    from ._codegen import _Printer
    if dtype != "float64":
        raise DeriveError(FLOAT64_ONLY)
    if not est.applies:
        raise DeriveError(f"the {est.kind} estimator does not apply: {est.refused}")
    p = est.problem
    printer = _Printer()
    params = parameters(p)
    names = tuple(s.name for s in params)
    name = "score_function" if est.kind == "score" else est.kind
    body = body_lines(p.family, params, printer, "_rng", "_size", est.components)
    head = [f"def {name}(_rng, _size, *, {', '.join(names)}):",
            f'    """{est.kind} estimator of {p}: per-sample rows, shape (n, {len(p.wrt)})."""']
    imports = printer.imports()
    if "import numpy" not in imports:
        imports.insert(0, "import numpy")
    source = "\n".join([*imports, "", _HELPERS, "", *head, *body]) + "\n"
    return source, name, names


FLOAT64_ONLY = ("discrete families are generated in float64 only: z is drawn by NumPy's integer "
                "samplers (no float32 draw), and the per-sample arithmetic is cheap beside them; "
                "drop --dtype float32")


def parameters(p) -> tuple:
    """The keyword arguments of the generated functions: the family's symbols (in the order of
    its parameters), then the other symbols of f by name."""
    from ._codegen import keyword_parameters
    return keyword_parameters(p)


def body_lines(fam, params, printer, rng, size, components=None) -> list:
    """Indented source lines: the parameters as floats, the family's constraints checked, ``z``
    drawn in one call (``size`` draws from the Generator ``rng``); with ``components`` (in Z),
    their (k, size) rows, returned as (size, k)."""
    from ._codegen import _wrap_statement, scalar_preamble, stable
    body, theta = scalar_preamble(fam, params, printer)
    draw = fam.draw.format(rng=rng, size=size, **theta)
    body += ["    " + line for line in draw.splitlines()]
    if components is None:
        return body
    shifted = _shifted_logits(fam, components)
    if shifted is not None:
        body.append(f"    _lmax = max({', '.join(l.name for l in fam.params)})")
        components = shifted
    replacements, reduced = sp.cse([stable(c) for c in components],
                                   symbols=sp.numbered_symbols("_x"), order="canonical")
    lines = [f"{s.name} = {printer.doprint(e)}" for s, e in replacements]
    lines.append(f"_out = numpy.empty(({len(components)}, {size}))")
    lines += [f"_out[{j}] = {printer.doprint(c)}" for j, c in enumerate(reduced)]
    for line in lines:  # a long right-hand side wrapped inside parentheses
        body += _wrap_statement(line, "    ", 100) if len(line) > 96 else ["    " + line]
    body.append("    return _out.T")
    return body


_LMAX = sp.Symbol("_lmax", real=True)


def _shifted_logits(fam, components):
    """For a categorical family, the components with every exp(l_k) written exp(l_k - max l)
    when they are invariant under that common shift (the softmax is), else None. Printed as it
    comes, exp(l1)/(exp(l1) + exp(l2)) overflows to nan at logits around 710; shifted, it never
    does. Invariance is checked at random points (30 digits), not assumed: an f that itself
    contains exp(l1) keeps the plain form."""
    if not fam.name.startswith("categorical") or any(
            t != p for p, t in zip(fam.params, fam.theta)):
        return None
    swap = {sp.exp(l): sp.exp(l - _LMAX) for l in fam.params}
    shifted = [c.xreplace(swap) for c in components]
    if all(c == s for c, s in zip(components, shifted)):
        return None
    rng = random.Random(20201124)
    for _ in range(3):
        at = {l: sp.Rational(rng.randint(-300, 300), 100) for l in fam.params}
        at[_LMAX] = sp.Rational(rng.randint(-500, 500), 100)
        at[Z] = rng.randint(1, len(fam.params))
        for c, s in zip(components, shifted):
            a, b = sp.N(c.subs(at), 30), sp.N(s.subs(at), 30)
            if not (a.is_number and b.is_number) or abs(a - b) > sp.Float(1e-20, 30) * (1 + abs(a)):
                return None
    return shifted


# ------------------------------------------------------------------ generated modules

MODULE_NOTE = ("sample and the estimators take scalar parameters only (z is drawn by NumPy's "
               "integer samplers); exact_gradient and variance broadcast parameter arrays.")


def sample_lines(ctx) -> list:
    """def sample(rng, n, *, params): n draws of z, for :func:`derive.generate_module`."""
    from ._codegen import _docstring, _signature, _wrap
    fam = ctx.analysis.problem.family
    doc = (_wrap(f"n draws of z ~ {fam}: {fam.sampler_text}.", "", 92) + "\n\nReturns shape "
           "(n,), integer values as float64; scalar parameters only.")
    others = [s.name for s in ctx.params if s not in ctx.family_params]
    if others:
        doc += (f"\n{', '.join(others)}: not used by q; accepted so that one dict of parameters "
                f"serves every function.")
    body = body_lines(fam, ctx.family_params, ctx.printer, ctx.rng, ctx.n)
    return ([f"def sample({_signature(ctx, sampler=True)}):", *_docstring(doc)]
            + body + ["    return z"])


def estimator_lines(ctx, kind, est) -> list:
    """def score_function(rng, n, *, params) (or a baseline variant) for a discrete family, the
    body :func:`estimator_source` gives :func:`derive.numpy_estimator`; a comment with the
    reason where the estimator does not apply (the pathwise one: z is discrete)."""
    import textwrap
    from ._codegen import FUNCTION_NAMES, _TITLES, _docstring, _signature, _wrap
    name = FUNCTION_NAMES[kind]
    if not est.applies:
        return [f"# {name} is not generated: the {kind} estimator does not apply.",
                *("# " + line for line in textwrap.wrap(est.refused, 96))]
    lines = [_TITLES[kind], "", _wrap(est.formula, "    "), ""]
    lines += [_wrap(f"d/d{w}: h = {sp.sstr(c)}", "    ") for w, c in zip(ctx.wrt, est.components)]
    lines += ["", _wrap(f"Requires: {est.requires}.", "")]
    lines += [_wrap(f"Note: {n}.", "") for n in est.notes]
    lines += ["", f"Returns an (n, {len(ctx.wrt)}) array, one estimate a row (column j for "
                  f"WRT[j]); z is drawn", "in one call. Scalar parameters only."]
    body = body_lines(ctx.analysis.problem.family, ctx.params, ctx.printer, ctx.rng, ctx.n,
                      est.components)
    return [f"def {name}({_signature(ctx)}):", *_docstring("\n".join(lines)), *body]


MODULE_HELPERS = _HELPERS
"""Helpers the generated functions use (``_whole``: the binomial's number of trials)."""

__all__ = ["DiscreteFamily", "FLOAT64_ONLY", "MODULE_HELPERS", "MODULE_NOTE", "PATHWISE_REFUSED",
           "bernoulli", "binomial", "body_lines", "categorical", "check_wrt", "closed_form",
           "default_wrt", "estimator_lines", "estimator_source", "family", "family_name",
           "geometric", "gradient_at", "parameters", "poisson", "sample_lines",
           "second_moment_at", "sum_at"]


# ------------------------------------------------------------------ derivations

def derivations(p, w, gradient) -> tuple:
    """(the log-derivative trick with sums, the reparameterization refused) for d/dw E_q[f]."""
    from ._estimators import expectation, score_function
    from ._steps import Derivation, Step, _E, _is_zero, _same
    fam, f = p.family, p.f
    q = sp.Function("q")(Z)
    lo, hi = fam.q_support
    start = sp.Derivative(sp.Sum(q * f, (Z, lo, hi)), w)
    extra = sp.Sum(q * sp.diff(f, w), (Z, lo, hi)) if f.has(w) else sp.Integer(0)
    s1 = Step(start, sp.Sum(sp.Derivative(q, w) * f, (Z, lo, hi)) + extra,
              "differentiate the sum term by term", True,
              f"the support {{{lo}, ..., {hi}}} does not depend on {w}"
              + ("" if hi.is_Integer else "; the differentiated series converges uniformly "
                 "where E_q[f s] is finite"))
    pmf, logq = fam.q_pmf, fam.q_log_density
    ident = [sp.diff(pmf, w) - pmf * sp.diff(logq, w)]
    points = range(int(lo), int(hi) + 1) if hi.is_Integer else range(int(lo), int(lo) + 6)
    ok = all(_is_zero(ident[0].xreplace({Z: k})) for k in points)
    s2 = Step(s1.rhs, sp.Sum(q * sp.Derivative(sp.log(q), w) * f, (Z, lo, hi)) + extra,
              "grad q = q grad log q", ok,
              f"d/d{w} q - q d/d{w} log q is 0 at z = {points[0]}, ..., {points[-1]} for {fam}")
    sf = score_function(p)
    value = expectation(p, sf.components[p.wrt.index(w)])
    s3 = Step(s2.rhs, _E(f * sp.diff(logq, w) + sp.diff(f, w)), "the definition of E_q",
              *_same(value, gradient, p))
    trick = Derivation(f"log-derivative trick for d/d{w} E_q[{sp.sstr(f)}], q = {fam}",
                       start, (s1, s2, s3))
    refused = Step(sp.Derivative(_E(f), w), sp.Derivative(_E(f), w), "reparameterization",
                   False, PATHWISE_REFUSED)
    return trick, Derivation(f"reparameterization for d/d{w} E_q[{sp.sstr(f)}]",
                             sp.Derivative(_E(f), w), (refused,))
