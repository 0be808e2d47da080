r"""Mean-field products of one scalar family: independent components with their own parameters.

.. math::

    \nabla_\phi \, \mathbb E_{q_\phi(z)}[f(z)], \qquad
    q_\phi(z) = \prod_{i=0}^{d-1} q_{\mathrm{fam}}(z_i; \theta_i),

every component from the same scalar family ``fam`` of the catalog (``derive.CATALOG``, and the
implicitly reparameterized gamma, beta, studentt), each with its own parameters. The scalar
parameters are named ``alpha[0] .. alpha[d-1], beta[0] .. beta[d-1]`` (parameter-major: all
components of the family's first parameter, then of the second, ...), which is the column order
(``WRT``) of every estimator's output.

Estimators (per-sample rows, shape (n, k), k = d * number of the family's parameters):

* score function, column (p, i): :math:`f(z)\,\partial_{\theta_{p,i}} \log q(z_i; \theta_i)`,
  plus, where the support moves with the parameter (uniform's a, b), the Leibniz boundary term
  :math:`\sum_{\mathrm{ends}\ e} \pm f(z_{-i}, z_i = e)\, q(e; \theta_i)\, \partial e/\partial
  \theta_{p,i}` evaluated at the sample's other components (unbiased; never the naive form).
  Requires E[f^2 s^2] finite; f need not be differentiable.
* pathwise, column (p, i): :math:`\partial f/\partial z_i(z)\; \partial z_i/\partial\theta_{p,i}`
  with :math:`z_i = g(\varepsilon_i; \theta_i)` the scalar family's sampler (explicit families)
  or :math:`\partial z_i/\partial\theta = -(\partial F/\partial\theta)/q` from the CDF F
  (implicit reparameterization: gamma, beta, studentt; numerical for shape parameters, with the
  ``scipy.special`` helpers of ``derive/_implicit.py``). Requires f continuous and a.e.
  differentiable in z (refused for sign, Heaviside, floor, ceiling, Piecewise, comparisons).

Exact values (:func:`meanfield_exact`): f is expanded into terms, each a product of factors of
single components (trig and exp of sums of components are split first); independence makes the
expectation of a term the product of scalar expectations, each computed once per distinct factor
by the scalar engine in the family's symbolic parameters (``derive.expectation``) and evaluated,
with its derivatives, at the component's exact rational parameter values. Terms of one component
go to the scalar engine as one sum, so cancellations the scalar engine handles are kept. The
per-sample variances E[h^2] - (E h)^2 of every column are computed the same way. What has no
closed form, does not exist or misses the shared budget is None with the reason.

References: Mohamed, Rosca, Figurnov, Mnih, "Monte Carlo Gradient Estimation in Machine
Learning", JMLR 21 (2020), sections 4 and 5; Figurnov, Mohamed, Mnih, "Implicit
Reparameterization Gradients", NeurIPS (2018); Williams (1992).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import mpmath
import sympy as sp

from . import _implicit
from ._budget import OutOfTime, time_budget
from ._codegen import _Printer, stable
from ._errors import DeriveError
from ._estimators import expectation, to_base
from ._expectation import MomentError, is_closed
from ._quadrature import quad_expectation
from ._families import CATALOG as EXPLICIT
from ._families import family as scalar_family
from ._numbers import evaluate, exact_number, holds
from ._symbols import Z
from ._vector import VectorExact, VectorProblem, parse_components

__all__ = ["EXACT_SECONDS", "MAX_DIM", "MEANFIELD_FAMILIES", "MeanFieldFamily",
           "MeanFieldProblem", "meanfield_estimator", "meanfield_exact", "meanfield_family",
           "meanfield_module", "meanfield_problem", "parse_meanfield_name", "refusal"]

MEANFIELD_FAMILIES = tuple(EXPLICIT) + tuple(_implicit.CATALOG)
MAX_DIM = 64
EXACT_SECONDS = 10.0
"""Wall-clock budget shared by the exact gradient and every per-sample variance of a problem."""

_DISCONTINUOUS = (sp.Piecewise, sp.Heaviside, sp.sign, sp.floor, sp.ceiling, sp.frac)
_TRIG = (sp.sin, sp.cos, sp.tan, sp.sinh, sp.cosh, sp.tanh)
_RESERVED = frozenset({"rng", "n", "z", "eps", "out", "numpy", "scipy", "f", "g", "D", "DTYPE",
                       "WRT", "PARAMETERS", "K"})
_SCALAR_NAME = re.compile(r"^([A-Za-z]+)\[(\d+)\]$")
_DRAWS_WITH_DTYPE = ("standard_normal", "random", "standard_exponential")


# --------------------------------------------------------------------------- families

@dataclass(frozen=True)
class MeanFieldFamily:
    """q(z) = prod_i q_fam(z_i; theta_i), i = 0 .. d-1: independent components of one scalar
    family, each with its own parameters."""

    name: str
    d: int

    def scalar(self):
        """The scalar family (a fresh ``derive.Family``; an ``ImplicitFamily`` for gamma, beta,
        studentt)."""
        return scalar_family(self.name)

    @property
    def parameter_arrays(self) -> tuple:
        """The scalar family's parameter names, e.g. ("alpha", "beta"): one array of d each."""
        return self.scalar().param_names

    @property
    def wrt(self) -> tuple:
        """The scalar parameters' names in column order: parameter-major, alpha[0] .. beta[d-1]."""
        return tuple(f"{p}[{i}]" for p in self.parameter_arrays for i in range(self.d))

    @property
    def k(self) -> int:
        return len(self.wrt)

    @property
    def implicit(self) -> bool:
        return self.name in _implicit.CATALOG

    @property
    def sampler_text(self) -> str:
        return (f"z[i] ~ {self.name}(theta_i) independently, i = 0 .. {self.d - 1}: "
                f"{self.scalar().sampler_text} (elementwise)")

    def symbols(self, i: int) -> dict:
        """{scalar parameter symbol: the symbol of component i's parameter} (same assumptions)."""
        return {p: sp.Symbol(f"{p.name}[{i}]", **p.assumptions0) for p in self.scalar().params}

    def __str__(self):
        return f"{self.name}^{self.d} (mean-field)"


def meanfield_family(name: str, d) -> MeanFieldFamily:
    """The mean-field product of ``d`` components (1 <= d <= 64) of the scalar family ``name``."""
    if name not in MEANFIELD_FAMILIES:
        from ._discrete import CATALOG as DISCRETE
        if name in DISCRETE or str(name).startswith("categorical"):
            raise DeriveError(f"{name!r} is discrete: its pathwise estimator does not exist and "
                              f"mean-field products of discrete families are not supported; use "
                              f"one of {', '.join(MEANFIELD_FAMILIES)}")
        raise DeriveError(f"{name!r} is not a scalar family that mean-field products support; "
                          f"choose one of {', '.join(MEANFIELD_FAMILIES)} (e.g. "
                          f"meanfield_family('gamma', 3))")
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM:
        raise DeriveError(f"the number of components must be a whole number from 1 to {MAX_DIM}, "
                          f"got {d!r}; e.g. meanfield_family({name!r}, 8)")
    return MeanFieldFamily(name, d)


def parse_meanfield_name(name: str, fam: MeanFieldFamily):
    """(parameter, index) for a scalar parameter name such as ``alpha[2]``; DeriveError naming
    the valid forms otherwise."""
    m = _SCALAR_NAME.match(str(name).strip())
    if m and m.group(1) in fam.parameter_arrays and int(m.group(2)) < fam.d:
        return m.group(1), int(m.group(2))
    forms = ", ".join(f"{p}[0] .. {p}[{fam.d - 1}]" for p in fam.parameter_arrays)
    raise DeriveError(f"{name!r} is not a parameter of {fam}: the parameters are {forms} "
                      f"(0-based component index in brackets)")


# --------------------------------------------------------------------------- problems

MeanFieldProblem = VectorProblem
"""A mean-field family and an integrand f (``kind == "expression"``): the vector problem."""


def meanfield_problem(fam: MeanFieldFamily, f_text: str) -> MeanFieldProblem:
    """Parse the integrand, an expression of ``z[0] .. z[d-1]`` and scalar data symbols, with
    the whitelist parser (never evaluated)."""
    if not isinstance(f_text, str):
        raise DeriveError(f"f must be text such as 'z[0]*z[1]', not {type(f_text).__name__}")
    text = f_text.strip()
    f, z, data = parse_components(fam, text, _RESERVED)
    if not f.has(*z):
        raise DeriveError(f"f = {text} does not depend on the sample, so its expectation is f "
                          f"and the gradient is 0; write f in terms of z[0] .. z[{fam.d - 1}]")
    return MeanFieldProblem(fam, "expression", text, f, z, data)


def _moving_ends(scalar, p):
    """[(sign, end)] of the support's ends that move with the parameter p."""
    lo, hi = scalar.support
    return [(s, e) for s, e in ((1, hi), (-1, lo))
            if e not in (sp.oo, -sp.oo) and sp.sympify(e).has(p)]


def refusal(problem: MeanFieldProblem, kind: str):
    """Why the estimator ``kind`` ("score" | "pathwise") does not apply, or None."""
    if kind not in ("score", "pathwise"):
        raise DeriveError(f"kind must be 'score' or 'pathwise', not {kind!r}")
    f = problem.f
    if kind == "pathwise":
        jumps = [a for a in f.atoms(*_DISCONTINUOUS) if a.has(*problem.z)]
        if jumps:
            return (f"f is discontinuous in z (it contains {sp.sstr(jumps[0])}): the pathwise "
                    f"estimator misses the jump's contribution and would be biased; use the "
                    f"score function, or smooth f")
        return None
    scalar = problem.family.scalar()
    for p in scalar.params:
        for _, end in _moving_ends(scalar, p):
            for i, zi in enumerate(problem.z):
                value = f.xreplace({zi: end.xreplace(problem.family.symbols(i))})
                if value.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
                    return (f"f is not finite at the moving end z[{i}] = {end} of the support, "
                            f"so the score-function boundary term does not exist")
    return None


# --------------------------------------------------------------------------- per-column pieces

def _score_pieces(problem, p, i):
    """Column (p, i) of the score function as [(A, w)]: h = sum A * w, A an expression of the
    components (f, or f with z_i at a moving end), w of component i only (in Z and the scalar
    parameters)."""
    scalar = problem.family.scalar()
    logq = scalar.log_density
    pieces = [(problem.f, sp.diff(logq, p))]
    for sign, end in _moving_ends(scalar, p):
        coefficient = sp.simplify(sign * sp.exp(logq).xreplace({Z: end}) * sp.diff(end, p))
        at_end = problem.f.xreplace({problem.z[i]: end.xreplace(problem.family.symbols(i))})
        pieces.append((at_end, coefficient))
    return pieces


def _dz(scalar, p):
    """dz/dp: of the noise for an explicit family (dg/dp), of z for an implicit one."""
    if getattr(scalar, "implicit", False):
        return _implicit.dz_dw(scalar, p)
    return sp.diff(scalar.transform, p)


# --------------------------------------------------------------------------- exact values

class _NoExact(Exception):
    """No exact value; args[0] says why, ``infinite`` when it does not exist."""

    def __init__(self, message, infinite=False):
        super().__init__(message)
        self.infinite = infinite


class _Engine:
    """Expectations of expressions of the components under the product at exact values."""

    def __init__(self, problem, values):
        fam = problem.family
        self.problem, self.scalar = problem, fam.scalar()
        self.params = self.scalar.params
        self.z = problem.z
        self.noise = tuple(sp.Symbol(f"e{i}", real=True) for i in range(fam.d))
        self.comp = {}   # symbol -> component index (z_i, e_i, theta_i)
        self.to_scalar = []
        self.at = {s: exact_number(values[s.name]) for s in problem.data}
        self.at_scalar = []
        for i in range(fam.d):
            syms = fam.symbols(i)
            self.to_scalar.append({**{v: k for k, v in syms.items()}, self.z[i]: Z,
                                   self.noise[i]: self._eps()})
            vals = {p: exact_number(_component(values, p.name, i, fam.d)) for p in self.params}
            self.at.update({syms[p]: v for p, v in vals.items()})
            self.at_scalar.append({**vals, **{s: self.at[s] for s in problem.data}})
            self.comp.update({self.z[i]: i, self.noise[i]: i})
        for i in range(fam.d):
            try:
                self.scalar.check_values(self.at_scalar[i])
            except DeriveError as err:
                raise DeriveError(f"component {i}: {err.message}") from None
        self.symbolic, self.numbers, self.splits = {}, {}, {}
        self.implicit, self.quadrature = fam.implicit, False

    def _eps(self):
        base = getattr(self.scalar, "base", None)
        return base.symbol if base is not None else Z

    # one component
    def factor_expectation(self, h):
        """E_q[h] in closed form in the scalar parameters (h in Z and the base noise)."""
        if h not in self.symbolic:
            ex = expectation(self.scalar, h)
            if ex.infinite:
                out = _NoExact(f"E[{sp.sstr(h)}] does not exist under {self.scalar.name}: "
                               f"{ex.missing}", infinite=True)
            elif ex.expr is None:
                out = _NoExact(f"no closed form for E[{sp.sstr(h)}] under {self.scalar.name} "
                               f"({ex.missing})")
            elif ex.method != "closed-form":
                # only the engine's own rules are trusted: SymPy's integrate gave
                # re(hyper(...)) = 1.40 for E[z] under Kumaraswamy(3/2, 2), which is 0.45
                out = _NoExact(f"E[{sp.sstr(h)}] came from SymPy's integrate ({ex.method}), "
                               f"which is not trusted here")
            else:
                out = ex
            self.symbolic[h] = out
        out = self.symbolic[h]
        if isinstance(out, _NoExact):
            raise out
        return out

    def number(self, h, i, p=None):
        """E over component i of the scalar factor h at component i's values, or its derivative
        in the scalar parameter p (an mpmath number): the closed form where there is one,
        30-digit quadrature (and a Richardson-extrapolated central difference of it) else."""
        key = (h, i, p)
        if key not in self.numbers:
            at = {**self.at, **self.at_scalar[i]}
            try:
                self.numbers[key] = self._closed_number(h, at, i, p)
            except _NoExact as err:
                if err.infinite or h.has(*_implicit.NUMERICAL):
                    raise
                self.numbers[key] = self._quad_number(h, at, p, str(err))
        return self.numbers[key]

    def _closed_number(self, h, at, i, p):
        ex = self.factor_expectation(h)
        for c in ex.conditions:
            verdict = holds(c, at)
            if verdict is False and ex.method == "closed-form":
                raise _NoExact(f"E[{sp.sstr(h)}] is infinite at component {i}'s values "
                               f"({c} fails)", infinite=True)
            if verdict is not True:
                raise _NoExact(f"cannot decide the condition {c} of E[{sp.sstr(h)}]")
        expr = ex.expr if p is None else sp.diff(ex.expr, p)
        if not is_closed(expr):
            expr = expr.doit()
        if not is_closed(expr):
            raise _NoExact(f"no closed form: d/d{p} of E[{sp.sstr(h)}] = "
                           f"{_short(ex.expr)} could not be differentiated")
        try:
            return evaluate(expr, at)
        except (DeriveError, ValueError, TypeError) as err:
            raise _NoExact(f"E[{sp.sstr(h)}] at component {i}: {err}") from None

    def _quad(self, h, at):
        what = f"E[{sp.sstr(h)}]"
        try:
            if self.implicit:
                return _implicit.quad_at(self.scalar, h, at, what=what)
            return quad_expectation(to_base(h, self.scalar), self.scalar.base, at, what=what)
        except MomentError as err:
            raise _NoExact(f"{what} does not exist under {self.scalar.name}: {err.message}",
                           infinite=True) from None

    def _quad_number(self, h, at, p, why):
        """By quadrature (the reason for not using a closed form is ``why``)."""
        self.quadrature = True
        try:
            with mpmath.workdps(30):
                if p is None:
                    return self._quad(h, at)
                x0 = at[p]
                step = sp.Rational(1, 10**5) * (abs(x0) if x0 != 0 else 1)

                def central(s):
                    return ((self._quad(h, {**at, p: x0 + s}) - self._quad(h, {**at, p: x0 - s}))
                            / (2 * mpmath.mpf(s.p) / s.q))
                self._quad(h, at)  # the expectation itself must exist
                return (4 * central(step / 2) - central(step)) / 3
        except DeriveError as err:
            raise _NoExact(f"{why}; quadrature failed too: {err}") from None

    # products over components
    def split(self, expr):
        """[(coefficient, {i: factor})]: expr expanded into terms of factors of single
        components; terms of one component (or none) are merged into one sum per component."""
        if expr in self.splits:
            return self.splits[expr]
        e = expr
        coupled = {a: sp.expand_trig(a) for a in e.atoms(*_TRIG)
                   if len({self.comp[s] for s in a.free_symbols if s in self.comp}) > 1}
        e = sp.expand(e.xreplace(coupled)) if coupled else sp.expand(e)
        singles, multi = {}, []
        for term in sp.Add.make_args(e):
            coeff, parts = sp.Integer(1), {}
            for factor in sp.Mul.make_args(term):
                used = {self.comp[s] for s in factor.free_symbols if s in self.comp}
                if not used:
                    coeff *= factor
                elif len(used) == 1:
                    i = used.pop()
                    parts[i] = parts.get(i, sp.Integer(1)) * factor
                else:
                    raise _NoExact(f"no closed form: the factor {_short(factor)} couples "
                                   f"components (only products of single-component factors, "
                                   f"trig and exp of sums included, are split)")
            if len(parts) <= 1:
                i = next(iter(parts), None)
                singles[i] = singles.get(i, sp.Integer(0)) + coeff * parts.get(i, 1)
            else:
                multi.append((coeff, parts))
        out = [(h, {}) if i is None else (sp.Integer(1), {i: h}) for i, h in singles.items()]
        out += multi
        self.splits[expr] = out
        return out

    def expect(self, expr, extra=None, i=None, p=None):
        """E[expr * extra] (extra a factor of component i only, scalar form) or, with p, its
        derivative in component i's scalar parameter p; an mpmath number."""
        total, infinite = [], []
        for coeff, parts in self.split(expr):
            try:
                value = evaluate(coeff, self.at) if coeff.free_symbols else mpmath.mpf(
                    sp.N(coeff, 40))
                comps = set(parts) | ({i} if i is not None else set())
                if p is not None and i not in parts and extra is None:
                    continue  # the term does not depend on component i's parameters
                for j in sorted(comps):
                    h = sp.Integer(1) if j not in parts else parts[j]
                    h = h.xreplace(self.to_scalar[j])
                    if j == i and extra is not None:
                        h = h * extra
                    value *= self.number(h, j, p if j == i else None)
            except _NoExact as err:
                if not err.infinite:
                    raise
                infinite.append(err)
                continue
            total.append(value)
        if len(infinite) == 1:
            raise infinite[0]
        if infinite:
            raise _NoExact(f"no exact value: several terms have infinite expectations and may "
                           f"cancel ({infinite[0]})")
        return mpmath.fsum(total)


def _component(values, name, i, d):
    if name not in values:
        raise DeriveError(f"no value for {name}; give a list of {d} numbers (or one number for "
                          f"every component)")
    v = values[name]
    if isinstance(v, (list, tuple)) or hasattr(v, "__len__"):
        if len(v) != d:
            raise DeriveError(f"{name} has {len(v)} values; it needs {d}, one per component")
        return v[i]
    return v


def _short(expr, most=80):
    text = sp.sstr(expr)
    return text if len(text) <= most else text[:most - 3] + "..."


def meanfield_exact(problem: MeanFieldProblem, values: dict) -> VectorExact:
    """The exact gradient (WRT order) and per-sample variances of both estimators at ``values``
    (each parameter array name -> d numbers or one number for all; each data name -> a number).

    Gradient: E[f] = sum_t c_t prod_i E_i[h_ti(z_i)], so dE/dtheta_{p,i} = sum_t c_t
    d/dp E_i[h_ti] prod_{j != i} E_j[h_tj], each E_i by the scalar engine in closed form in the
    family's symbols, differentiated and evaluated at exact rationals (30 digits). Variances
    E[h^2] - (E h)^2 of each column the same way. Everything shares EXACT_SECONDS; what is not
    finished, has no closed form or does not exist is None with the reason, never a guess.
    """
    fam = problem.family
    deadline = time.monotonic() + EXACT_SECONDS
    engine = _Engine(problem, values)
    scalar = engine.scalar
    columns = [(p, i) for p in scalar.params for i in range(fam.d)]
    try:
        with time_budget(deadline - time.monotonic()):
            grad = [engine.expect(problem.f, None, i, p) for p, i in columns]
    except OutOfTime:
        why = f"no exact value: E[f] did not finish within {EXACT_SECONDS:g} s at d = {fam.d}"
        return VectorExact(None, "none", why, variance_missing=_both(why))
    except _NoExact as err:
        why = str(err)
        if err.infinite:
            why = f"E[f] does not exist: {why}"
        return VectorExact(None, "none", why,
                           variance_missing=_both("no exact gradient, so no exact variance"))
    method = ("scalar engine per independent factor (" + ("quadrature where no closed form)"
              if engine.quadrature else "closed form)"))
    missing, variances = {}, {}
    for kind in ("pathwise", "score"):
        reason = refusal(problem, kind)
        if reason:
            missing[kind] = reason
            continue
        try:
            with time_budget(deadline - time.monotonic()):
                second = [_second_moment(engine, kind, p, i) for p, i in columns]
            variances[kind] = tuple(max(0.0, float(m2 - g * g)) for m2, g in zip(second, grad))
        except OutOfTime:
            missing[kind] = (f"no exact value: E[h^2] did not finish within the "
                             f"{EXACT_SECONDS:g} s budget at d = {fam.d}")
        except _NoExact as err:
            missing[kind] = (f"the variance is infinite: {err}" if err.infinite else str(err))
    return VectorExact(tuple(float(g) for g in grad), method, None, variances.get("pathwise"),
                       variances.get("score"), missing)


def _both(why):
    return {"score": why, "pathwise": why}


def _second_moment(engine, kind, p, i):
    """E[h^2] of column (p, i) of the estimator ``kind``."""
    problem, scalar = engine.problem, engine.scalar
    if kind == "score":
        pieces = _score_pieces(problem, p, i)
        total = []
        for a, (A, w) in enumerate(pieces):
            for b in range(a, len(pieces)):
                B, v = pieces[b]
                m = engine.expect(sp.expand(A * B), w * v, i)
                total.append(m if a == b else 2 * m)
        return mpmath.fsum(total)
    g = sp.diff(problem.f, problem.z[i])
    dz = _dz(scalar, p)
    if dz.has(*_implicit.NUMERICAL):
        raise _NoExact(f"no closed form: dz/d{p} = {sp.sstr(dz)} is numerical (implicit "
                       f"reparameterization of a shape parameter)")
    # g is a function of z; dz/dp of the noise (explicit families) or of z (implicit ones)
    return engine.expect(sp.expand(g * g), dz * dz, i)


# --------------------------------------------------------------------------- code generation

_HEAD = '''"""Gradient estimators of E_q[f] for q = {title}.

{sampler}
f = {ftext}
Parameters are arrays of shape (D,) (a scalar is used for every component), data are scalars.
WRT names the {k} columns of every per-sample estimate: {wrt_text}
(parameter-major). Generated by mcgrad{version}{command}; needs NumPy{scipy}.
"""

import numpy
{imports}
DTYPE = numpy.{dtype}
D = {d}
WRT = tuple(f"{{p}}[{{i}}]" for p in {arrays!r} for i in range(D))
PARAMETERS = {parameters!r}
'''

_PARAMS = '''

def _params({fam_args}):
    """The parameter arrays as (D,) arrays of DTYPE, checked."""
{lines}
    return {fam_args},
'''

_DRAW = '''

def _draw(rng, n, {fam_args}):
    """{doc}"""
{lines}


def sample(rng, n, *, {fam_args}):
    """n draws of z, shape (n, D): {sampler}."""
    return _draw(rng, n, *_params({fam_args}))[0]
'''

_F = '''

def _f_and_grad(z, {data_args}):
    """f per sample (n,) and its gradient in z (n, D), componentwise."""
    n = z.shape[0]
{body}


def _f(z, {data_args}):
    return _f_and_grad(z{data_call})[0]
'''

_AT_END = '''

def _f_with(z, values, {data_args}):
    """(n, D): column i is f with z[:, i] replaced by values[i] (the support's moving end)."""
    out = numpy.empty_like(z)
    for i in range(D):  # a loop over components, not samples
        zi = z.copy()
        zi[:, i] = values[i]
        out[:, i] = _f(zi{data_call})
    return out
'''


def _code_symbols(scalar):
    """Symbols named as the arrays of the generated code: z (n, D), eps (n, D), parameters."""
    out = {Z: sp.Symbol("z", real=True)}
    base = getattr(scalar, "base", None)
    if base is not None:
        out[base.symbol] = sp.Symbol("eps", real=True)
    return out


def _printer(fam):
    printer = _Printer()
    return _implicit.teach(printer) if fam.implicit else printer


def _expr_code(printer, expr, names):
    return printer.doprint(stable(sp.sympify(expr)).xreplace(names))


def _expression_body(problem, printer):
    """Lines computing f and g = df/dz (as a (n, D) array) with CSE: derive/_vector.py's (no
    gradient where f is discontinuous: the pathwise estimator is refused there)."""
    from ._vector import _expression_body as vector_expression_body
    return vector_expression_body(problem, printer)


def _draw_lines(fam, scalar, printer, names):
    arrays = ", ".join(fam.parameter_arrays)
    if fam.implicit:
        theta = {p: p for p in fam.parameter_arrays}
        draw = scalar.draw.format(rng="rng", size="(n, D)", **theta)
        return [f"    {draw}", "    return z, None"], "(z, None): z drawn directly (n, D)"
    base = scalar.base
    call = base.numpy_draw.format(n="(n, D)")
    method = call.split("(")[0]
    if method in _DRAWS_WITH_DTYPE:
        call = call[:-1] + ", dtype=DTYPE)"
        lines = [f"    eps = rng.{call}"]
    else:
        lines = [f"    eps = rng.{call}.astype(DTYPE, copy=False)"]
    lines.append(f"    z = {_expr_code(printer, scalar.transform, names)}")
    lines.append("    return z, eps")
    return lines, f"(z, eps): the noise eps ({base.text}) (n, D) and z = g(eps) (n, D) [{arrays}]"


def meanfield_module(problem: MeanFieldProblem, *, dtype: str = "float64",
                     command: str | None = None, version: str | None = None) -> str:
    """A standalone NumPy module (``scipy.special`` where needed): DTYPE, D, WRT, PARAMETERS,
    ``sample(rng, n, **arrays)`` -> (n, D), ``score_function(rng, n, **params)`` and
    ``pathwise(rng, n, **params)`` -> (n, k) per-sample rows in WRT order (pathwise raises
    ValueError with the reason where it is refused). Vectorized over samples and components;
    the only loop is over components for a support that moves with the parameters."""
    fam = problem.family
    if dtype not in ("float64", "float32"):
        raise DeriveError(f"dtype must be float64 or float32, not {dtype!r}")
    if fam.implicit and dtype != "float64":
        raise DeriveError(f"{fam.name} is reparameterized implicitly (scipy.special in float64); "
                          f"generate it with dtype='float64'")
    scalar = fam.scalar()
    printer = _printer(fam)
    names = _code_symbols(scalar)
    fam_args = ", ".join(fam.parameter_arrays)
    data_args = ", ".join(problem.data_names)
    args = ", ".join(problem.parameters)
    param_lines = [f"    {a} = numpy.broadcast_to(numpy.asarray({a}, dtype=DTYPE), (D,))"
                   for a in fam.parameter_arrays]
    for c in scalar.constraints:
        param_lines.append(f"    if not numpy.all({_expr_code(printer, c.expr, names)} > 0):")
        param_lines.append(f"        raise ValueError({(fam.name + ' needs ' + c.text + ' in every component')!r})")
    draw_lines, draw_doc = _draw_lines(fam, scalar, printer, names)
    body = _PARAMS.format(fam_args=fam_args, lines="\n".join(param_lines))
    body += _DRAW.format(fam_args=fam_args, doc=draw_doc, lines="\n".join(draw_lines),
                         sampler=scalar.sampler_text)
    call = ", " + data_args if data_args else ""
    body += _F.format(data_args=data_args or "*_", data_call=call,
                      body=_expression_body(problem, printer))
    moving = [(p, _moving_ends(scalar, p)) for p in scalar.params]
    if any(ends for _, ends in moving):
        body += _AT_END.format(data_args=data_args or "*_", data_call=call)
    body += _score_source(problem, scalar, printer, names, moving, args, fam_args, data_args)
    body += _pathwise_source(problem, scalar, printer, names, args, fam_args, data_args)
    scipy = "scipy" in body or fam.implicit
    imports = [line for line in printer.imports() if line not in ("import numpy",)]
    if scipy and "import scipy.special" not in imports:
        imports.append("import scipy.special")
    helpers = "\n" + _implicit.HELPERS.strip("\n") + "\n" if fam.implicit else ""
    head = _HEAD.format(
        title=str(fam), sampler=fam.sampler_text, ftext=problem.text, k=fam.k,
        wrt_text=f"{fam.wrt[0]} .. {fam.wrt[-1]}", version=f" {version}" if version else "",
        command=f" by: {command}" if command else "",
        scipy=" and scipy.special" if scipy else "", imports="\n".join(sorted(imports)) + "\n"
        if imports else "", dtype=dtype, d=fam.d, arrays=fam.parameter_arrays,
        parameters=problem.parameters)
    return head + helpers + body


def _score_source(problem, scalar, printer, names, moving, args, fam_args, data_args):
    call = ", " + data_args if data_args else ""
    lines = [f"    {fam_args}, = _params({fam_args})",
             f"    z, eps = _draw(rng, n, {fam_args})",
             f"    f = _f(z{call})",
             f"    out = numpy.empty(({problem.family.k}, n), dtype=DTYPE)",
             "    with numpy.errstate(divide='ignore', invalid='ignore', over='ignore'):"]
    doc = []
    for j, (p, ends) in enumerate(moving):
        s = sp.diff(scalar.log_density, p)
        row = f"f[:, None] * ({_expr_code(printer, s, names)})"
        doc.append(f"d/d{p}[i]: f * ({sp.sstr(s)})")
        for sign, end in ends:
            coefficient = sp.simplify(sign * sp.exp(scalar.log_density).xreplace({Z: end})
                                      * sp.diff(end, p))
            end_code = _expr_code(printer, end, names)
            row += (f" + _f_with(z, {end_code}{call}) * "
                    f"({_expr_code(printer, coefficient, names)})")
            doc.append(f"  + f(z with z[i] = {end}) * ({sp.sstr(coefficient)}) (boundary term)")
        lines.append(f"        out[{j} * D:{j + 1} * D] = numpy.broadcast_to({row}, (n, D)).T")
    lines.append("    return out.T")
    docs = "\n    ".join(doc)
    return (f"\n\ndef score_function(rng, n, *, {args}):\n"
            f'    """Score-function (log-derivative, REINFORCE) estimator of grad E_q[f]: (n, '
            f'{problem.family.k}) rows,\n    column (p, i) = f(z) * d/dp[i] log q(z[i]; theta[i])'
            f' [+ boundary term where the\n    support moves]; requires E[f^2 s^2] finite, f '
            f'need not be differentiable.\n    {docs}\n    """\n' + "\n".join(lines) + "\n")


def _pathwise_source(problem, scalar, printer, names, args, fam_args, data_args):
    fam = problem.family
    head = f"\n\ndef pathwise(rng, n, *, {args}):\n"
    reason = refusal(problem, "pathwise")
    if reason:
        return (head + f'    """Refused: {reason}."""\n'
                f"    raise ValueError({reason!r})\n")
    lines = [f"    {fam_args}, = _params({fam_args})",
             f"    z, eps = _draw(rng, n, {fam_args})",
             f"    g = _f_and_grad(z{', ' + data_args if data_args else ''})[1]"]
    if fam.implicit:  # the helpers index parameters with masks of the samples' shape
        lines += [f"    {a} = numpy.broadcast_to({a}, z.shape)" for a in fam.parameter_arrays]
    lines += [f"    out = numpy.empty(({fam.k}, n), dtype=DTYPE)",
              "    with numpy.errstate(divide='ignore', invalid='ignore', over='ignore'):"]
    doc = []
    for j, p in enumerate(scalar.params):
        dz = _dz(scalar, p)
        lines.append(f"        out[{j} * D:{j + 1} * D] = numpy.broadcast_to(g * "
                     f"({_expr_code(printer, dz, names)}), (n, D)).T")
        doc.append(f"dz[i]/d{p}[i] = {sp.sstr(dz)}")
    lines.append("    return out.T")
    what = ("implicit reparameterization, dz/dtheta = -(dF/dtheta)/q (Figurnov et al. 2018)"
            if fam.implicit else "z = g(eps; theta), eps the parameter-free noise")
    docs = "\n    ".join(doc)
    return (head + f'    """Pathwise (reparameterization) estimator of grad E_q[f]: (n, {fam.k}) '
            f'rows,\n    column (p, i) = df/dz[i](z) * dz[i]/dp[i]; {what}.\n    Requires f '
            f'continuous and a.e. differentiable in z.\n    {docs}\n    """\n'
            + "\n".join(lines) + "\n")


def meanfield_estimator(problem: MeanFieldProblem, kind: str, *, dtype: str = "float64"):
    """``fn(rng, n, **params)`` returning (n, k) per-sample rows of the estimator ``kind``
    ("score" | "pathwise"); ``fn.parameters`` names the keyword arguments, ``fn.wrt`` the
    columns and ``fn.source`` the generated module (:func:`meanfield_module`). The same
    mechanism as every vector family's (:func:`derive._vector.vector_estimator`)."""
    from ._vector import vector_estimator
    return vector_estimator(problem, kind, dtype=dtype)
