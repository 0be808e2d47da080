"""Measure-valued derivatives (MVD) of the Normal family, with and without coupling.

Approximates grad_theta E_{N(mu, sigma^2)}[f(z)] by writing the derivative of the density as a
weighted difference of two densities, d/dtheta q(z) = c_theta (q+(z) - q-(z)), so that

    d/dtheta E_q[f] = c_theta (E_{q+}[f] - E_{q-}[f]),

estimated per sample by h = c_theta (f(z+) - f(z-)), z+ ~ q+, z- ~ q-:

- mean mu: c = 1/(sigma sqrt(2 pi)), z+- = mu +- sigma W, W ~ Weibull(scale sqrt 2, shape 2)
  (the Rayleigh law, density w exp(-w**2/2) on w > 0);
- scale sigma: c = 1/sigma, z+ = mu + sigma M, M double-sided Maxwell (density
  m**2 exp(-m**2/2)/sqrt(2 pi) on the real line), z- = mu + sigma eps, eps ~ N(0, 1).

Requires of f only that E_q|f| is finite: f need not be differentiable or continuous
(Heaviside(z - a) is fine; the pathwise estimator is refused there). Requires of q a density
differentiable in theta; only the Normal family (and its reparametrizations, by the chain rule)
is implemented.

Coupling changes the joint law of (z+, z-), never the marginals, so it cannot bias h:

- mean: the same W on both sides (W- = W+), h = c (f(mu + sigma W) - f(mu - sigma W));
- scale: eps = U M with U ~ U(0, 1) independent of M (U M ~ N(0, 1), checked in
  :func:`identities`; the coupling of Mohamed et al. and of optax). It is drawn from three
  standard normals g1, g2, g3: M = sign(g1) |g|, eps = g1. Given |g|, |g1|/|g| is uniform on
  (0, 1) (Archimedes: a coordinate of a uniform point on the sphere is uniform) and independent
  of |g| and of sign(g1), so (M, eps) has exactly the law of (M, U M).

Without coupling every side gets its own noise. All noise is drawn as standard normals in one
call (Rayleigh W = |(g1, g2)|), so :func:`numeric.estimate` gives the same result for any chunk
size.

Reference: Mohamed, Rosca, Figurnov, Mnih (2020), "Monte Carlo Gradient Estimation in Machine
Learning", JMLR 21(132), section 6; Pflug (1989); Heidergott and Vazquez-Abad (2000).
"""

from dataclasses import dataclass, field

import mpmath
import sympy as sp

from ._bases import EXPONENTIAL, NORMAL
from ._codegen import _Printer, stable
from ._budget import OutOfTime, time_budget
from ._errors import DeriveError
from ._estimators import _DISCONTINUOUS, Estimator, Exact, Problem
from ._expectation import MomentError, closed_form, is_closed
from ._numbers import evaluate, exact_values, holds
from ._quadrature import quad_expectation
from ._symbols import Z

W_PLUS = sp.Symbol("w", positive=True)
"""Rayleigh (Weibull(sqrt 2, 2)) noise of the positive part for the mean."""
W_MINUS = sp.Symbol("w_", positive=True)
"""Rayleigh noise of the negative part for the mean when uncoupled."""
M = sp.Symbol("m", real=True)
"""Double-sided Maxwell noise for the scale."""
U = sp.Symbol("u", positive=True)
"""U(0, 1) noise of the coupled scale: eps = u*m."""
E = sp.Symbol("e", real=True)
"""N(0, 1) noise of the negative part for the scale when uncoupled."""

LAWS = {W_PLUS: "w ~ Weibull(sqrt(2), 2) (Rayleigh)", W_MINUS: "w_ ~ Weibull(sqrt(2), 2)",
        M: "m ~ double-sided Maxwell", U: "u ~ U(0, 1)", E: "e ~ N(0, 1)"}

REFUSED_FAMILY = ("measure-valued derivatives are implemented for the normal family only (the "
                  "Weibull pair for the mean, the double-sided Maxwell for the scale); for "
                  "{name} use the score-function or pathwise estimator")
REFUSED_F_HAS_PARAM = ("f depends on {w}, which the measure-valued derivative does not "
                       "differentiate (it differentiates the measure only); write f without "
                       "{w}, or use the score-function or pathwise estimator")


@dataclass(frozen=True)
class MeasureValued(Estimator):
    """An MVD estimator: ``components`` are expressions of the noise in ``noise`` (with laws in
    ``LAWS``); ``parts`` maps each Normal parameter ("mu", "sigma") to (c, z+, z-) in the noise,
    ``chain`` gives, per component, {parameter name: d theta/d w}."""

    coupled: bool = True
    noise: tuple = field(default=())
    parts: dict = field(default_factory=dict)
    chain: tuple = field(default=())


def measure_valued(p: Problem, coupled: bool = True) -> MeasureValued:
    """The measure-valued derivative estimator of grad_phi E_{N(mu, sigma^2)}[f].

    Approximates d/dtheta E_q[f] with h = c_theta (f(z+) - f(z-)) (module docstring).
    Requires: q Normal (reparametrized or not); E_q|f| finite; f free of the parameters
    differentiated. f need not be differentiable. Refused otherwise, with the reason.
    Reference: Mohamed et al. (2020), section 6.
    """
    fam = p.family
    if fam.name != "normal" or fam.discrete or fam.implicit:
        return _refused(p, coupled, REFUSED_FAMILY.format(name=fam.name))
    for w in p.wrt:
        if p.f.has(w):
            return _refused(p, coupled, REFUSED_F_HAS_PARAM.format(w=w))
    mu, sigma = fam.theta
    c_mu = 1 / (sigma * sp.sqrt(2 * sp.pi))
    w_minus = W_PLUS if coupled else W_MINUS
    eps = U * M if coupled else E
    parts = {"mu": (c_mu, mu + sigma * W_PLUS, mu - sigma * w_minus),
             "sigma": (1 / sigma, mu + sigma * M, mu + sigma * eps)}
    per = {k: c * (p.f.xreplace({Z: zp}) - p.f.xreplace({Z: zm}))
           for k, (c, zp, zm) in parts.items()}
    chain = tuple({k: sp.diff(t, w) for k, t in zip(("mu", "sigma"), fam.theta)}
                  for w in p.wrt)
    comps = tuple(sum((d * per[k] for k, d in ch.items() if d != 0), sp.Integer(0))
                  for ch in chain)
    noise = (W_PLUS, M, U) if coupled else (W_PLUS, W_MINUS, M, E)
    how = ("coupled: the same w on both sides of the mean; e = u*m for the scale"
           if coupled else "uncoupled: independent noise on every side")
    return MeasureValued(
        "measure_valued", p, None, comps, comps,
        "h = c (f(z+) - f(z-)): mu: c = 1/(sigma sqrt(2 pi)), z+- = mu +- sigma w, w ~ "
        "Weibull(sqrt 2, 2); sigma: c = 1/sigma, z+ = mu + sigma m (m double-sided Maxwell), "
        "z- ~ N(mu, sigma^2)",
        "q Normal; E_q|f| finite; f need not be differentiable or continuous",
        notes=(how,), coupled=coupled, noise=noise, parts=parts, chain=chain)


def _refused(p, coupled, reason):
    return MeasureValued("measure_valued", p, None, (), (), "", "", refused=reason,
                         coupled=coupled)


# ------------------------------------------------------------------ identities


def identities() -> tuple:
    """((claim, difference), ...): each difference simplifies to 0 when the claim holds.

    The densities are written out: the Weibull(lam, k) density of derive's weibull family at
    lam = sqrt 2, k = 2, and m**2 exp(-m**2/2)/sqrt(2 pi) for the double-sided Maxwell.
    """
    from ._families import normal, weibull
    mu, sigma = sp.Symbol("mu", real=True), sp.Symbol("sigma", positive=True)
    t = sp.Symbol("t", positive=True)
    wb = weibull()
    lam, k = wb.params
    rayleigh = sp.exp(wb.log_density).subs({lam: sp.sqrt(2), k: 2})   # in Z, Z > 0
    nrm = normal()
    q = sp.exp(nrm.log_density).subs(dict(zip(nrm.params, (mu, sigma))))
    maxwell = M**2 * sp.exp(-M**2 / 2) / sp.sqrt(2 * sp.pi)
    phi = sp.exp(-M**2 / 2) / sp.sqrt(2 * sp.pi)

    def q_side(z, sign):  # density of mu + sign*sigma*W at z, for z on that side
        return rayleigh.xreplace({Z: sign * (z - mu) / sigma}) / sigma

    c_mu = 1 / (sigma * sp.sqrt(2 * sp.pi))
    dmu = sp.diff(q, mu)
    out = [
        ("the Weibull(sqrt 2, 2) density integrates to 1",
         sp.integrate(rayleigh.xreplace({Z: t}), (t, 0, sp.oo)) - 1),
        ("the double-sided Maxwell density integrates to 1",
         sp.integrate(maxwell, (M, -sp.oo, sp.oo)) - 1),
        ("d/dmu N(z; mu, sigma) = c (q+ - q-) for z > mu (there q- = 0)",
         (dmu - c_mu * q_side(Z, 1)).xreplace({Z: mu + sigma * t})),
        ("d/dmu N(z; mu, sigma) = c (q+ - q-) for z < mu (there q+ = 0)",
         (dmu + c_mu * q_side(Z, -1)).xreplace({Z: mu - sigma * t})),
        ("d/dsigma N(z; mu, sigma) = (1/sigma) (Maxwell(mu, sigma) - N(mu, sigma))",
         sp.diff(q, sigma) - (maxwell.xreplace({M: (Z - mu) / sigma}) / sigma - q) / sigma),
        ("coupling: u*m ~ N(0, 1) for u ~ U(0, 1), m double-sided Maxwell (density at x > 0: "
         "the integral over m > x of p_M(m)/m)",
         sp.integrate((maxwell / M).xreplace({M: sp.Symbol("s", positive=True) + t}),
                      (sp.Symbol("s", positive=True), 0, sp.oo)) - phi.xreplace({M: t})),
        ("a Rayleigh expectation of an odd g is (sqrt(2 pi)/2) E_N[eps g(eps)]: w exp(-w**2/2) "
         "g(w) is even, e.g. g = w**3 - w",
         sp.integrate(rayleigh.xreplace({Z: t}) * (t**3 - t), (t, 0, sp.oo))
         - sp.sqrt(2 * sp.pi) / 2 * closed_form(NORMAL.symbol * (NORMAL.symbol**3
                                                                 - NORMAL.symbol),
                                                NORMAL).value),
    ]
    return tuple((claim, sp.simplify(d)) for claim, d in out)


# ------------------------------------------------------------------ exact moments


class _Pieces:
    """A quantity as an expression of placeholders, each an expectation E_base[integrand]."""

    def __init__(self):
        self.table = {}

    def normal(self, h_of_eps):
        """E[h(eps)], eps ~ N(0, 1)."""
        return self._add(h_of_eps, NORMAL)

    def rayleigh(self, h_of_w):
        """E[h(W)], W Rayleigh, as E[h(sqrt(2 e))], e ~ Exp(1) (W**2/2 ~ Exp(1))."""
        return self._add(h_of_w.xreplace({W_PLUS: sp.sqrt(2 * EXPONENTIAL.symbol)}),
                         EXPONENTIAL)

    def _add(self, h, base):
        key = (sp.sympify(h), base.name)
        for d, (h0, b0) in self.table.items():
            if (h0, b0.name) == key:
                return d
        d = sp.Dummy(f"E{len(self.table)}")
        self.table[d] = (key[0], base)
        return d


def _theta_moments(est: MeasureValued, pieces: _Pieces, k: str):
    """(mean, variance) of the part for the Normal parameter ``k`` ("mu" or "sigma") as
    placeholder expressions."""
    f = est.problem.f
    mu, sigma = est.problem.family.theta
    ep = NORMAL.symbol

    def fz(x):
        return f.xreplace({Z: x})

    if k == "mu":
        c = 1 / (sigma * sp.sqrt(2 * sp.pi))
        odd = fz(mu + sigma * W_PLUS) - fz(mu - sigma * W_PLUS)
        # E_W[g(W)] = (sqrt(2 pi)/2) E_N[eps g(eps)] for odd g; both sides have Rayleigh
        # marginals with or without coupling, so E h = c E_W[odd(W)]
        mean = c * sp.sqrt(2 * sp.pi) / 2 * pieces.normal(ep * odd.xreplace({W_PLUS: ep}))
        if est.coupled:
            return mean, c**2 * pieces.rayleigh(odd**2) - mean**2
        return mean, c**2 * sum(pieces.rayleigh(g**2) - pieces.rayleigh(g)**2
                                for g in (fz(mu + sigma * W_PLUS), fz(mu - sigma * W_PLUS)))
    fe = fz(mu + sigma * ep)
    e_plus, e_minus = pieces.normal(ep**2 * fe), pieces.normal(fe)   # Maxwell: weight eps**2
    mean = (e_plus - e_minus) / sigma
    if not est.coupled:
        return mean, (pieces.normal(ep**2 * fe**2) - e_plus**2
                      + pieces.normal(fe**2) - e_minus**2) / sigma**2
    anti = antiderivative(f)
    if anti is None:
        return mean, _NoAntiderivative(f)
    # E[f(mu + sigma M) f(mu + sigma U M)] = E_M[f(mu + sigma M) (F(mu + sigma M) - F(mu))
    # / (sigma M)] with F' = f, and E_M[k(M)] = E_N[eps**2 k(eps)]
    cross = pieces.normal(ep * fe * (anti.xreplace({Z: mu + sigma * ep})
                                     - anti.xreplace({Z: mu}))) / sigma
    second = pieces.normal(ep**2 * fe**2) + pieces.normal(fe**2) - 2 * cross
    return mean, second / sigma**2 - mean**2


class _NoAntiderivative(DeriveError):
    def __init__(self, f):
        super().__init__(f"the coupled scale variance needs an antiderivative of "
                         f"f = {sp.sstr(f)} in closed form, and SymPy found none")


def antiderivative(f):
    """F with F' = f in z, jumps written as Heaviside (integrate gives Piecewise for them);
    None when SymPy finds none."""
    try:
        with time_budget(5.0):
            anti = sp.integrate(f.rewrite(sp.Piecewise) if f.has(*_DISCONTINUOUS) else f, Z)
    except OutOfTime:
        return None
    anti = _heavisides(anti)
    return anti if anti is not None and is_closed(anti) else None


def _heavisides(e):
    """Piecewise((e1, z < a), ..., (en, True)) as en + sum of steps; None for other conditions."""
    if not e.has(sp.Piecewise):
        return e
    if not isinstance(e, sp.Piecewise):
        args = [_heavisides(a) for a in e.args]
        return None if any(a is None for a in args) else e.func(*args)
    (first, cond), rest = e.args[0], e.args[1:]
    if cond is sp.true:
        return _heavisides(first)
    tail = _heavisides(sp.Piecewise(*rest)) if rest else None
    first = _heavisides(first)
    if tail is None or first is None or not isinstance(cond, sp.core.relational.Relational):
        return None
    lhs, rhs = cond.lhs - cond.rhs, None
    if not (lhs.is_polynomial(Z) and sp.degree(lhs, Z) == 1 and lhs.coeff(Z, 1) == 1):
        return None
    step = sp.Heaviside(lhs)  # 1 where z > a (the value at z = a does not matter)
    inside = step if isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan)) else 1 - step
    return tail + (first - tail) * inside


def _per_component(est, pieces):
    per = {}
    out = []
    for ch in est.chain:
        for k, d in ch.items():
            if d != 0 and k not in per:
                per[k] = _theta_moments(est, pieces, k)
        mean = sum((d * per[k][0] for k, d in ch.items() if d != 0), sp.Integer(0))
        # the parts draw independent noise, so their variances add
        bad = [per[k][1] for k, d in ch.items() if d != 0 and isinstance(per[k][1], DeriveError)]
        var = bad[0] if bad else sum((d**2 * per[k][1] for k, d in ch.items() if d != 0),
                                     sp.Integer(0))
        out.append((mean, var))
    return out


def moments(est: MeasureValued, *, budget=None) -> tuple:
    """((E h_j, Var h_j) as Exact, ...) per component, in closed form where every expectation
    has one (the expectation engine), else Exact(None, "quadrature", missing=reason).

    E h is computed from the estimator's own parts (Rayleigh and Maxwell expectations turned
    into Normal ones), not from the gradient, so comparing it with the exact gradient checks c,
    the signs and the parts.
    """
    if not est.applies:
        return ()
    pieces = _Pieces()
    comps = _per_component(est, pieces)
    closed, failed = {}, {}
    for d, (h, base) in pieces.table.items():
        try:
            c = closed_form(h, base, budget=budget)
        except MomentError as err:
            failed[d] = Exact(None, "none", missing=err.message, infinite=True)
            continue
        if c is None:
            failed[d] = Exact(None, "quadrature", missing=f"no closed form for "
                              f"E[{sp.sstr(h)}] under {base.text}")
        else:
            closed[d] = c.value
    out = []
    for mean, var in comps:
        row = []
        for q in (mean, var):
            if isinstance(q, DeriveError):
                row.append(Exact(None, "none", missing=q.message))
                continue
            bad = [failed[d] for d in sorted(q.free_symbols & set(failed), key=str)]
            bad.sort(key=lambda e: not e.infinite)
            row.append(bad[0] if bad else Exact(_tidy(q.xreplace(closed)), "closed-form"))
        out.append(tuple(row))
    return tuple(out)


def _tidy(e):
    from ._estimators import _tidy as tidy
    return tidy(e)


@dataclass(frozen=True)
class MomentsAt:
    """E h_j and Var h_j at parameter values: floats or None, with the method or the reason."""

    mean: float | None
    variance: float | None
    method: str
    missing: str | None = None


def moments_at(est: MeasureValued, values, *, budget=None) -> tuple:
    """(MomentsAt, ...) per component at the values: closed forms where the engine finds them
    (and their conditions hold), 30-digit quadrature of the rest (Rayleigh expectations as
    expectations over e ~ Exp(1), W = sqrt(2 e))."""
    if not est.applies:
        return ()
    pieces = _Pieces()
    comps = _per_component(est, pieces)
    exact = exact_values(values)
    numbers, methods, failed = {}, {}, {}
    with mpmath.workdps(30):
        for d, (h, base) in pieces.table.items():
            try:
                c = closed_form(h, base, budget=budget)
                if c is not None and all(holds(k, exact) is True for k in c.conditions):
                    numbers[d], methods[d] = evaluate(c.value, exact), "closed-form"
                else:
                    numbers[d] = quad_expectation(h, base, exact, what=f"E[{sp.sstr(h)}]")
                    methods[d] = "quadrature"
            except DeriveError as err:  # MomentError included
                failed[d] = err.message
    sub = {d: sp.Float(v, 30) for d, v in numbers.items()}
    out = []
    for mean, var in comps:
        row = []
        for q in (mean, var):
            if isinstance(q, DeriveError):
                row.append((None, q.message))
                continue
            bad = sorted(q.free_symbols & set(failed), key=str)
            row.append((None, failed[bad[0]]) if bad else
                       (float(evaluate(q.xreplace(sub), exact)), None))
        used = {methods[d] for q in (mean, var) if not isinstance(q, DeriveError)
                for d in q.free_symbols & set(methods)}
        method = "quadrature" if "quadrature" in used else "closed-form"
        (m, why_m), (v, why_v) = row
        out.append(MomentsAt(m, None if v is None else max(v, 0.0), method, why_m or why_v))
    return tuple(out)


# ------------------------------------------------------------------ NumPy source


def estimator_source(est: MeasureValued, *, dtype="float64") -> tuple:
    """(source, function name, parameter names) of ``measure_valued(rng, n, *, params)``
    returning the (n, k) per-sample estimates, for :func:`derive.numpy_estimator`."""
    if not est.applies:
        raise DeriveError(f"the measure-valued estimator does not apply: {est.refused}")
    if dtype not in ("float64", "float32"):
        raise DeriveError(f"dtype must be float64 or float32, not {dtype!r}")
    p, printer = est.problem, _Printer()
    fam = p.family
    names = _parameter_names(p)
    body = body_lines(est, printer)
    sig = ", ".join(["rng", "n", "*", *names]) if names else "rng, n"
    doc = (f'    """Measure-valued derivative ({"coupled" if est.coupled else "uncoupled"}) of '
           f'grad E_q[f], q = {fam}, f = {sp.sstr(p.f)}: (n, {len(p.wrt)}) per-sample rows."""')
    imports = printer.imports()
    if "import numpy" not in imports:
        imports.insert(0, "import numpy")
    source = "\n".join([*imports, f"DTYPE = numpy.{dtype}", f"K = {len(p.wrt)}",
                        f"WRT = {tuple(str(w) for w in p.wrt)!r}", "", "",
                        f"def measure_valued({sig}):", doc, *body]) + "\n"
    return source, "measure_valued", names


def body_lines(est: MeasureValued, printer, rng="rng", n="n") -> list:
    """Indented source lines computing the (n, k) per-sample estimates from the parameters in
    scope (and ``DTYPE``): all noise drawn as standard normals in one call of ``rng``; the same
    lines in :func:`estimator_source` and in :func:`derive.generate_module`."""
    p = est.problem
    mu, sigma = p.family.theta
    zp_, zm_ = sp.Symbol("_zp"), sp.Symbol("_zm")
    f_plus = printer.doprint(stable(p.f.xreplace({Z: zp_})))
    f_minus = printer.doprint(stable(p.f.xreplace({Z: zm_})))
    per_noise = {"mu": 2 if est.coupled else 4, "sigma": 3 if est.coupled else 4}
    used = [k for k in ("mu", "sigma") if any(d != 0 for ch in est.chain for d in
                                               [ch.get(k, 0)])]
    rows, start = {}, 0
    for k in used:
        rows[k] = start
        start += per_noise[k]
    body = [f"    _mu = {printer.doprint(mu)}", f"    _sigma = {printer.doprint(sigma)}",
            # (n, j) in one call, then transposed: sample i always gets the stream's values
            # i*j .. i*j + j - 1, whatever the chunk size
            f"    _g = {rng}.standard_normal(({n}, {max(start, 1)}), dtype=DTYPE).T",
            f"    _out = numpy.empty(({len(p.wrt)}, {n}), dtype=DTYPE)",
            "    _h = {}"]
    for k in used:
        a = rows[k]
        if k == "mu":
            body.append(f"    _w = numpy.hypot(_g[{a}], _g[{a + 1}])")
            body.append(f"    _wm = numpy.hypot(_g[{a + 2}], _g[{a + 3}])" if not est.coupled
                        else "    _wm = _w")
            body += ["    _zp = _mu + _sigma * _w", "    _zm = _mu - _sigma * _wm",
                     f"    _h['mu'] = ({f_plus} - ({f_minus})) / (_sigma * {_SQRT_2PI!r})"]
        else:
            body.append(f"    _r = numpy.sqrt(_g[{a}]**2 + _g[{a + 1}]**2 + _g[{a + 2}]**2)")
            body.append(f"    _m = numpy.copysign(_r, _g[{a}])")
            body.append(f"    _e = _g[{a}]" if est.coupled else f"    _e = _g[{a + 3}]")
            body += ["    _zp = _mu + _sigma * _m", "    _zm = _mu + _sigma * _e",
                     f"    _h['sigma'] = ({f_plus} - ({f_minus})) / _sigma"]
    for j, ch in enumerate(est.chain):
        terms = [f"({printer.doprint(d)}) * _h[{k!r}]" for k, d in ch.items() if d != 0]
        body.append(f"    _out[{j}] = " + (" + ".join(terms) if terms else "0"))
    body.append("    return _out.T")
    return body


_SQRT_2PI = float(sp.sqrt(2 * sp.pi).evalf(17))


def _parameter_names(p: Problem) -> tuple:
    fam = p.family
    own = []
    for t in fam.theta:
        for s in sorted(sp.sympify(t).free_symbols, key=str):
            if s.name not in own:
                own.append(s.name)
    rest = sorted(s.name for s in p.f.free_symbols - {Z} if s.name not in own)
    return tuple(own + rest)


def discontinuous(f) -> bool:
    """Whether f has a jump in z (where the pathwise estimator is refused and MVD applies)."""
    return any(a.has(Z) for a in sp.sympify(f).atoms(*_DISCONTINUOUS))
