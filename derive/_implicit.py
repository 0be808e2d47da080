"""Implicit reparameterization: families sampled directly, with dz/dtheta from the CDF.

Approximates grad_theta E_{q(z; theta)}[f(z)] with the pathwise estimator

    h_w(z) = f'(z) dz/dw + d/dw f(z),    dz/dw = -(d/dw F(z; theta)) / q(z; theta),    z ~ q,

where F is the CDF of q (implicit differentiation of F(z; theta) = u at fixed u). Requires f
continuous and a.e. differentiable in z, and F differentiable in theta. Reference: Figurnov,
Mohamed, Mnih (2018), "Implicit Reparameterization Gradients", NeurIPS; Mohamed et al. (2020),
section 5.3.

Families (``family(name)``), each written as z = loc + scale * x with x from a standard law
whose shape parameters are the remaining ones:

=========================== ================================= =================================
family                      sampler (numpy.random.Generator)  dz/dtheta
=========================== ================================= =================================
gamma(alpha, beta), rate    ``gamma(alpha, 1/beta, n)``       beta: -z/beta (symbolic);
                                                              alpha: numerical
beta(a, b)                  ``beta(a, b, n)``                 a, b: numerical
studentt(nu, mu, sigma)     ``mu + sigma*standard_t(nu, n)``  mu: 1, sigma: (z - mu)/sigma
                                                              (symbolic); nu: numerical
=========================== ================================= =================================

Symbolic versus numerical. The CDF is a SymPy function of the standard variable x whose
derivative in x is the standard density p(x); so the location and scale parts of -dF/q are
exact SymPy expressions. The derivative in a shape parameter (the regularized incomplete gamma
P(alpha, x) in alpha, the regularized incomplete beta I_z(a, b) in a and b, the Student-t CDF in
nu) has no elementary form; it appears as the function ``GammaDxDalpha(alpha, x)`` =
-dP(alpha, x)/dalpha / p(x; alpha) (likewise ``BetaDzDa``, ``BetaDzDb``, ``StudentTDxDnu``),
evaluated numerically:

- in the exact layer (``mpmath``): ``mpmath.diff`` of ``mpmath.gammainc`` / ``mpmath.betainc``
  (the Student-t tail is 1/2 I_{nu/(nu + x**2)}(nu/2, 1/2)) at the working precision (20
  digits inside quadrature), differentiating whichever tail (lower or upper) is the smaller, so
  that far in a tail the derivative keeps its relative accuracy;
- in the generated NumPy code (``scipy.special``): d/dtheta log T of the smaller tail T
  (``gammainc``/``gammaincc``, ``betainc``/``betaincc``, ``stdtr``) by a Richardson-extrapolated
  central difference (steps theta/2**9 and theta/2**10), and dz/dtheta =
  -/+ T * dlogT / p computed in logarithms. Relative error against the mpmath values at the
  quantiles 1e-6 .. 1 - 1e-6: about 1e-12 for shapes up to 10, 3e-10 for studentt nu = 100,
  1.3e-9 for gamma alpha = 1000 (tests/test_implicit.py checks 1e-9 for shapes up to 100).

Exact expectations E_q[h]: gamma by the engine's Gamma-integral rules (E_{Gamma(alpha, 1)}[g(x)]
= E_{Exp(1)}[g(x) x**(alpha - 1)/Gamma(alpha)]; rules only: SymPy's integrate returns
hyper/exp_polar forms in alpha there that cannot be evaluated); beta by derivatives of the Beta function
(terms c z**s (1 - z)**t log(z)**m log(1 - z)**k); studentt by the rule E[x**k (nu + x**2)**-p
log(nu + x**2)**m] = (-d/dp)**m nu**(k/2 - p) B((k+1)/2, p + (nu - k)/2) / B(1/2, nu/2), which
exists only where nu + 2p > k (so E[z**2] at nu <= 2 is infinite, never a number). Otherwise,
and for anything containing a numerical dz/dtheta, 20-digit quadrature against the density with
the project's integrability probes (:func:`quad_at`), and gradients by Richardson-extrapolated
central differences of that quadrature (:func:`gradient_at`).
"""

from dataclasses import dataclass

import mpmath
import sympy as sp

from ._bases import Base, EXPONENTIAL
from ._errors import DeriveError
from ._expectation import Closed, MomentError, _NoRule, by_rules
from ._families import Constraint, Family
from ._numbers import exact_number
from ._symbols import EPS, EPS_POS, Z


# ------------------------------------------------------------------ numerical pieces (mpmath)

def _smaller_tail_derivative(lower, upper, p, split):
    """d/dp of the lower-tail function at p, differentiating the smaller tail (lower if
    ``split`` else upper, whose derivative is the negative)."""
    if split:
        return mpmath.diff(lower, p)
    return -mpmath.diff(upper, p)


def _mp_gamma_logpdf(a, x):
    return (a - 1) * mpmath.log(x) - x - mpmath.loggamma(a)


def _mp_gamma_dx_dalpha(a, x):
    """-dP(a, x)/da / p(x; a), P the regularized lower incomplete gamma, p the Gamma(a, 1)
    density: the implicit derivative of x ~ Gamma(a, 1) with respect to its shape."""
    a, x = mpmath.mpf(a), mpmath.mpf(x)
    if x <= 0:
        return mpmath.mpf(0)
    d = _smaller_tail_derivative(lambda s: mpmath.gammainc(s, 0, x, regularized=True),
                                 lambda s: mpmath.gammainc(s, x, mpmath.inf, regularized=True),
                                 a, x < a)
    return -d / mpmath.exp(_mp_gamma_logpdf(a, x))


def _mp_beta_logpdf(a, b, z):
    return (a - 1) * mpmath.log(z) + (b - 1) * mpmath.log1p(-z) - mpmath.log(mpmath.beta(a, b))


def _mp_beta_dz(a, b, z, which):
    a, b, z = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(z)
    if not 0 < z < 1:
        return mpmath.mpf(0)
    if which == 0:
        lower = lambda s: mpmath.betainc(s, b, 0, z, regularized=True)  # noqa: E731
        upper = lambda s: mpmath.betainc(s, b, z, 1, regularized=True)  # noqa: E731
        p = a
    else:
        lower = lambda s: mpmath.betainc(a, s, 0, z, regularized=True)  # noqa: E731
        upper = lambda s: mpmath.betainc(a, s, z, 1, regularized=True)  # noqa: E731
        p = b
    d = _smaller_tail_derivative(lower, upper, p, z < a / (a + b))
    return -d / mpmath.exp(_mp_beta_logpdf(a, b, z))


def _mp_beta_dz_da(a, b, z):
    """-dI_z(a, b)/da / p(z; a, b): the implicit derivative of z ~ Beta(a, b) in a."""
    return _mp_beta_dz(a, b, z, 0)


def _mp_beta_dz_db(a, b, z):
    """-dI_z(a, b)/db / p(z; a, b): the implicit derivative of z ~ Beta(a, b) in b."""
    return _mp_beta_dz(a, b, z, 1)


def _mp_t_logpdf(nu, x):
    return (mpmath.loggamma((nu + 1) / 2) - mpmath.loggamma(nu / 2)
            - mpmath.log(nu * mpmath.pi) / 2 - (nu + 1) / 2 * mpmath.log1p(x * x / nu))


def _mp_t_tail(nu, x):
    """P(T <= -|x|) = 1/2 I_{nu/(nu + x**2)}(nu/2, 1/2)."""
    return mpmath.betainc(nu / 2, mpmath.mpf(1) / 2, 0, nu / (nu + x * x), regularized=True) / 2


def _mp_t_dx_dnu(nu, x):
    """-dF(x; nu)/dnu / p(x; nu), F and p the standard Student-t CDF and density."""
    nu, x = mpmath.mpf(nu), mpmath.mpf(x)
    if x == 0:
        return mpmath.mpf(0)
    d_tail = mpmath.diff(lambda s: _mp_t_tail(s, x), nu)
    d_cdf = d_tail if x < 0 else -d_tail
    return -d_cdf / mpmath.exp(_mp_t_logpdf(nu, x))


# ------------------------------------------------------------------ SymPy functions

class _Numerical(sp.Function):
    """A derivative with no elementary form, evaluated numerically (mpmath; scipy.special in
    generated code). ``_imp_`` lets lambdify (hence quadrature) evaluate it."""

    def _eval_evalf(self, prec):
        with mpmath.workprec(prec):
            args = [mpmath.mpf(str(sp.N(a, mpmath.mp.dps + 5))) for a in self.args]
            return sp.Float(self._imp_(*args), mpmath.mp.dps)


class GammaDxDalpha(_Numerical):
    """-dP(alpha, x)/dalpha / p(x; alpha): dx/dalpha for x ~ Gamma(alpha, 1) (numerical)."""

    nargs = 2
    _imp_ = staticmethod(_mp_gamma_dx_dalpha)


class BetaDzDa(_Numerical):
    """-dI_z(a, b)/da / p(z; a, b): dz/da for z ~ Beta(a, b) (numerical)."""

    nargs = 3
    _imp_ = staticmethod(_mp_beta_dz_da)


class BetaDzDb(_Numerical):
    """-dI_z(a, b)/db / p(z; a, b): dz/db for z ~ Beta(a, b) (numerical)."""

    nargs = 3
    _imp_ = staticmethod(_mp_beta_dz_db)


class StudentTDxDnu(_Numerical):
    """-dF(x; nu)/dnu / p(x; nu): dx/dnu for x ~ StudentT(nu) (numerical)."""

    nargs = 2
    _imp_ = staticmethod(_mp_t_dx_dnu)


NUMERICAL = (GammaDxDalpha, BetaDzDa, BetaDzDb, StudentTDxDnu)
"""The numerically evaluated derivatives; an expression containing one has no closed form."""


def _gamma_pdf(a, x):
    return x ** (a - 1) * sp.exp(-x) / sp.gamma(a)


def _beta_pdf(a, b, z):
    return z ** (a - 1) * (1 - z) ** (b - 1) * sp.gamma(a + b) / (sp.gamma(a) * sp.gamma(b))


def _t_pdf(nu, x):
    return (sp.gamma((nu + 1) / 2) / (sp.sqrt(nu * sp.pi) * sp.gamma(nu / 2))
            * (1 + x**2 / nu) ** (-(nu + 1) / 2))


class GammaCDF(sp.Function):
    """P(alpha, x), the regularized lower incomplete gamma function: the CDF of Gamma(alpha, 1).
    d/dx is the density; d/dalpha = -GammaDxDalpha * density (the implicit relation)."""

    nargs = 2

    def fdiff(self, argindex=1):
        a, x = self.args
        if argindex == 2:
            return _gamma_pdf(a, x)
        return -GammaDxDalpha(a, x) * _gamma_pdf(a, x)

    def _eval_evalf(self, prec):
        a, x = (mpmath.mpf(str(sp.N(v, 30))) for v in self.args)
        with mpmath.workprec(prec):
            return sp.Float(mpmath.gammainc(a, 0, x, regularized=True), mpmath.mp.dps)


class BetaCDF(sp.Function):
    """I_z(a, b), the regularized incomplete beta function: the CDF of Beta(a, b)."""

    nargs = 3

    def fdiff(self, argindex=1):
        a, b, z = self.args
        if argindex == 3:
            return _beta_pdf(a, b, z)
        ratio = BetaDzDa(a, b, z) if argindex == 1 else BetaDzDb(a, b, z)
        return -ratio * _beta_pdf(a, b, z)

    def _eval_evalf(self, prec):
        a, b, z = (mpmath.mpf(str(sp.N(v, 30))) for v in self.args)
        with mpmath.workprec(prec):
            return sp.Float(mpmath.betainc(a, b, 0, z, regularized=True), mpmath.mp.dps)


class StudentTCDF(sp.Function):
    """F(x; nu), the CDF of the standard Student t with nu degrees of freedom."""

    nargs = 2

    def fdiff(self, argindex=1):
        nu, x = self.args
        if argindex == 2:
            return _t_pdf(nu, x)
        return -StudentTDxDnu(nu, x) * _t_pdf(nu, x)

    def _eval_evalf(self, prec):
        nu, x = (mpmath.mpf(str(sp.N(v, 30))) for v in self.args)
        with mpmath.workprec(prec):
            tail = _mp_t_tail(nu, x)
            return sp.Float(tail if x < 0 else 1 - tail, mpmath.mp.dps)


# ------------------------------------------------------------------ the families

@dataclass(frozen=True)
class ImplicitFamily(Family):
    """q(z; theta) sampled directly, z = loc + scale * x with x from a standard law with shape
    parameters; no explicit transform of a parameter-free noise (``base``/``transform`` None).

    ``cdf_std(x, *shape)`` and ``pdf_std(x, *shape)`` build the standard CDF (a SymPy function
    whose derivative in x is ``pdf_std``) and density; ``std`` is the standard variable's symbol;
    ``draw`` is NumPy source with ``{rng}``, ``{size}`` and ``{<param>}`` placeholders whose
    last line assigns the draws to ``z``.
    """

    implicit: bool = True
    loc: sp.Expr = sp.Integer(0)
    scale: sp.Expr = sp.Integer(1)
    shape: tuple = ()
    std: sp.Symbol = EPS_POS
    cdf_std: object = None
    pdf_std: object = None
    draw: str = ""

    @property
    def q_transform(self):
        raise DeriveError(f"{self.name} has no explicit sampler z = g(eps); it is reparameterized "
                          f"implicitly through its CDF")

    @property
    def q_loc(self):
        return self._sub(self.loc)

    @property
    def q_scale(self):
        return self._sub(self.scale)

    @property
    def q_shape(self):
        return tuple(self._sub(s) for s in self.shape)

    @property
    def q_cdf(self):
        """F(z; phi) in the user's parameters."""
        x = (Z - self.q_loc) / self.q_scale
        return self.cdf_std(x, *self.q_shape)

    def standard(self, h):
        """h(z) with z = loc + scale * x: a function of the standard variable ``std``."""
        return sp.sympify(h).xreplace({Z: self.q_loc + self.q_scale * self.std})


def _pos(name):
    return sp.Symbol(name, positive=True)


def gamma():
    """Gamma(alpha, beta), alpha the shape, beta the rate: z = x/beta, x ~ Gamma(alpha, 1)."""
    alpha, beta = _pos("alpha"), _pos("beta")
    logq = (alpha * sp.log(beta) + (alpha - 1) * sp.log(Z) - beta * Z - sp.loggamma(alpha))
    return ImplicitFamily(
        "gamma", (alpha, beta), logq, (sp.Integer(0), sp.oo),
        (Constraint(alpha, "alpha > 0"), Constraint(beta, "beta > 0")), None, None,
        "z = rng.gamma(alpha, 1/beta) (no explicit transform: implicit reparameterization "
        "through the CDF P(alpha, beta*z))",
        loc=sp.Integer(0), scale=1 / beta, shape=(alpha,), std=EPS_POS,
        cdf_std=lambda x, a: GammaCDF(a, x), pdf_std=lambda x, a: _gamma_pdf(a, x),
        draw="z = {rng}.gamma({alpha}, 1.0 / {beta}, {size})")


def beta():
    """Beta(a, b) on (0, 1): z = x, x ~ Beta(a, b)."""
    a, b = _pos("a"), _pos("b")
    logq = ((a - 1) * sp.log(Z) + (b - 1) * sp.log(1 - Z) + sp.loggamma(a + b)
            - sp.loggamma(a) - sp.loggamma(b))
    return ImplicitFamily(
        "beta", (a, b), logq, (sp.Integer(0), sp.Integer(1)),
        (Constraint(a, "a > 0"), Constraint(b, "b > 0")), None, None,
        "z = rng.beta(a, b) (no explicit transform: implicit reparameterization through the "
        "CDF I_z(a, b))",
        loc=sp.Integer(0), scale=sp.Integer(1), shape=(a, b), std=EPS_POS,
        cdf_std=lambda x, a_, b_: BetaCDF(a_, b_, x),
        pdf_std=lambda x, a_, b_: _beta_pdf(a_, b_, x),
        draw="z = {rng}.beta({a}, {b}, {size})")


def studentt():
    """StudentT(nu, mu, sigma): z = mu + sigma*x, x ~ StudentT(nu)."""
    nu, mu, sigma = _pos("nu"), sp.Symbol("mu", real=True), _pos("sigma")
    x = (Z - mu) / sigma
    logq = (sp.loggamma((nu + 1) / 2) - sp.loggamma(nu / 2) - sp.log(sp.pi) / 2
            + nu / 2 * sp.log(nu) - sp.log(sigma) - (nu + 1) / 2 * sp.log(nu + x**2))
    return ImplicitFamily(
        "studentt", (nu, mu, sigma), logq, (-sp.oo, sp.oo),
        (Constraint(nu, "nu > 0"), Constraint(sigma, "sigma > 0")), None, None,
        "z = mu + sigma*rng.standard_t(nu) (no explicit transform of a parameter-free noise: "
        "implicit reparameterization through the CDF)",
        loc=mu, scale=sigma, shape=(nu,), std=EPS,
        cdf_std=lambda x_, n: StudentTCDF(n, x_), pdf_std=lambda x_, n: _t_pdf(n, x_),
        draw="z = {mu} + {sigma} * {rng}.standard_t({nu}, {size})")


CATALOG = {"gamma": gamma, "beta": beta, "studentt": studentt}
"""The implicitly reparameterized families by name; each entry builds a fresh family."""


def family(name: str):
    """The implicit family called ``name``, or None."""
    make = CATALOG.get(name)
    return make() if make is not None else None


def is_implicit(fam) -> bool:
    return bool(getattr(fam, "implicit", False))


# ------------------------------------------------------------------ dz/dw and the estimator

def dz_dw(fam: ImplicitFamily, w) -> sp.Expr:
    """dz/dw = -(dF(z; phi)/dw) / q(z; phi), with F and q written through the standard law:
    F = F_std(x; shape), q = p_std(x; shape)/scale, x = (z - loc)/scale."""
    x = (Z - fam.q_loc) / fam.q_scale
    shape = fam.q_shape
    dF = sp.diff(fam.cdf_std(x, *shape), w)
    ratio = -dF * fam.q_scale / fam.pdf_std(x, *shape)
    out = sp.cancel(sp.expand(ratio)) if not ratio.has(*NUMERICAL) else sp.expand(ratio)
    return sp.simplify(out) if sp.count_ops(out) < 80 else out


def pathwise(p, discontinuous=()):
    """Implicit pathwise estimator h_w(z) = f'(z) dz/dw + df/dw, z ~ q, dz/dw from the CDF.

    Approximates grad_phi E_q[f]. Requires f continuous and a.e. differentiable in z and the CDF
    differentiable in phi. Reference: Figurnov, Mohamed, Mnih (2018).
    """
    from ._estimators import Estimator
    fam, f = p.family, p.f
    jumps = [a for a in f.atoms(*discontinuous) if a.has(Z)] if discontinuous else []
    if jumps:
        return Estimator(
            "pathwise", p, None, (), (), "", "",
            refused=f"f is discontinuous in z (it contains {sp.sstr(jumps[0])}); the pathwise "
                    f"estimator misses the jump's contribution and would be biased. Use the "
                    f"score-function estimator, or smooth f")
    fz = sp.diff(f, Z)
    comps, notes = [], []
    for w in p.wrt:
        dz = dz_dw(fam, w)
        comps.append(fz * dz + sp.diff(f, w))
        kind = "numerical" if dz.has(*NUMERICAL) else "symbolic"
        notes.append(f"d/d{w}: implicit, dz/d{w} = {sp.sstr(dz)} ({kind})")
    comps = tuple(comps)
    return Estimator(
        "pathwise", p, Z, comps, comps,
        "h(z) = f'(z) dz/dphi + df/dphi, dz/dphi = -(dF(z; phi)/dphi)/q(z; phi), z ~ q "
        "(implicit reparameterization)",
        "f continuous and a.e. differentiable in z; the CDF F differentiable in phi; "
        "E|f'(z) dz/dphi| finite", notes=tuple(notes))


def derivation(p, w, gradient):
    """grad E_q[f] = E_q[f'(z) dz/dw + df/dw], dz/dw = -(dF/dw)/q: implicit reparameterization,
    each step checked where it can be (the last against the exact gradient's closed form)."""
    from ._steps import Derivation, Step, _E, _is_zero, _same
    from ._estimators import expectation
    fam, f = p.family, p.f
    start = sp.Derivative(_E(f), w)
    est = pathwise(p, _DISCONTINUOUS_FOR_STEPS)
    title = f"implicit reparameterization for d/d{w} E_q[{sp.sstr(f)}], q = {fam}"
    if not est.applies:
        s1 = Step(start, _E(sp.Derivative(f, w)), "interchange", False, est.refused)
        return Derivation(title, start, (s1,))
    F = fam.q_cdf
    density = sp.exp(fam.q_log_density)
    u = sp.Symbol("u")
    s1 = Step(start, _E(sp.diff(f, Z) * sp.Derivative(sp.Function("z")(w), w) + sp.diff(f, w)),
              f"z = F^-1(u; phi), u ~ U(0, 1), with F = {sp.sstr(F)}; differentiate inside "
              f"(f continuous, a.e. differentiable)", True, "by construction of the sampler")
    formula = -sp.diff(F, w) / density
    s2 = Step(s1.rhs, _E(sp.diff(f, Z) * formula + sp.diff(f, w)),
              f"differentiate F(z(u; phi); phi) = {u} at fixed {u}: dz/d{w} = -(dF/d{w})/q",
              True, "implicit function theorem (q > 0 on the support)")
    comp = est.components[p.wrt.index(w)]
    s3 = Step(s2.rhs, _E(comp), "simplify -(dF/dw)/q", _is_zero(
        sp.diff(f, Z) * formula + sp.diff(f, w) - comp), "the difference simplifies to 0")
    agree, how = _same(expectation(p, comp), gradient, p)
    s4 = Step(s3.rhs, gradient.expr if gradient.expr is not None else s3.rhs,
              "the expectation equals the exact gradient", agree, how)
    return Derivation(title, start, (s1, s2, s3, s4))


_DISCONTINUOUS_FOR_STEPS = (sp.sign, sp.Heaviside, sp.floor, sp.ceiling, sp.Piecewise, sp.frac)


# ------------------------------------------------------------------ exact expectations

def closed_form(fam: ImplicitFamily, h, *, budget=None) -> Closed | None:
    """E_q[h(z)] in closed form, or None; MomentError when it does not exist."""
    h = sp.sympify(h)
    if h.has(*NUMERICAL):
        return None
    if not h.has(Z):
        return Closed(h, "closed-form")
    g = fam.standard(h)
    x = fam.std
    if fam.name == "gamma":
        (alpha,) = fam.q_shape
        weighted = g.xreplace({x: EPS_POS}) * EPS_POS ** (alpha - 1) / sp.gamma(alpha)
        try:  # the rules only: SymPy's integrate returns hyper/exp_polar forms in alpha here
            return by_rules(weighted, EXPONENTIAL)
        except _NoRule:
            return None
    if fam.name == "beta":
        return _beta_rule(g, x, *fam.q_shape)
    return _t_rule(g, x, *fam.q_shape)


def _terms(g, x):
    e = sp.expand(sp.powdenest(g), deep=True, power_base=True, mul=True,
                  multinomial=True, log=False)
    return sp.Add.make_args(e)


def _beta_rule(g, u, a, b):
    """E[g(u)], u ~ Beta(a, b): terms c u**s (1-u)**t log(u)**m log(1-u)**k have
    d^m/ds^m d^k/dt^k B(a+s, b+t) / B(a, b), finite where a + s > 0 and b + t > 0."""
    g = sp.expand_log(g)  # no force=True: it takes every symbol positive (DESIGN.md)
    s_, t_ = sp.Dummy("s"), sp.Dummy("t")
    big_b = sp.gamma(a + s_) * sp.gamma(b + t_) / sp.gamma(a + b + s_ + t_)
    value, conditions = sp.Integer(0), []
    one_minus = 1 - u
    for term in _terms(g, u):
        coeff, s, t, m, k = sp.Integer(1), sp.Integer(0), sp.Integer(0), 0, 0
        for f in sp.Mul.make_args(term):
            base, ex = (f.base, f.exp) if f.is_Pow else (f, sp.Integer(1))
            if not f.has(u):
                coeff *= f
            elif base == u and not ex.has(u):
                s += ex
            elif base == one_minus and not ex.has(u):
                t += ex
            elif base == sp.log(u) and ex.is_Integer and ex > 0:
                m += int(ex)
            elif base == sp.log(one_minus) and ex.is_Integer and ex > 0:
                k += int(ex)
            else:
                return None
        for cond in (a + s > 0, b + t > 0):
            if cond is sp.false:
                raise MomentError(f"E[{sp.sstr(term)}] is infinite under Beta({a}, {b})")
            if cond is not sp.true:
                conditions.append(cond)
        d = sp.diff(big_b, s_, m) if m else big_b
        d = sp.diff(d, t_, k) if k else d
        value += coeff * d.subs({s_: s, t_: t}) * sp.gamma(a + b) / (sp.gamma(a) * sp.gamma(b))
    return Closed(_tidy(value), "closed-form", tuple(dict.fromkeys(conditions)))


def _t_term(term, x, quad):
    """(coeff, k, p, m) of a term c x**k (nu + x**2)**(-p) log(nu + x**2)**m, or None."""
    num, den = term.as_numer_denom()
    if den.has(x):  # expand multiplied (nu + x**2)**-2 out: 1/(x**4 + 2 nu x**2 + nu**2)
        try:
            term = num / sp.factor(den, x)
        except (sp.PolynomialError, NotImplementedError):  # exp(x) in a denominator
            return None
    coeff, k, p, m = sp.Integer(1), 0, sp.Integer(0), 0
    for f in sp.Mul.make_args(term):
        base, ex = (f.base, f.exp) if f.is_Pow else (f, sp.Integer(1))
        if not f.has(x):
            coeff *= f
        elif base == x and ex.is_Integer and ex > 0:
            k += int(ex)
        elif base == quad and not ex.has(x):
            p -= ex
        elif base == sp.log(quad) and ex.is_Integer and ex > 0:
            m += int(ex)
        else:
            return None
    return coeff, k, p, m


def _t_rule(g, x, nu):
    """E[g(x)], x ~ StudentT(nu): terms c x**k (nu + x**2)**(-p) log(nu + x**2)**m have
    (-d/dp)^m nu**(k/2 - p) B((k+1)/2, p + (nu - k)/2) / B(1/2, nu/2) (0 for odd k), finite
    only where nu + 2p > k."""
    p_ = sp.Dummy("p")
    quad = nu + x**2
    value, conditions, divergent = sp.Integer(0), [], []
    for term in _terms(g, x):
        parts = _t_term(term, x, quad)
        if parts is None:
            return None  # a term without a rule: quadrature decides on the whole integrand
        coeff, k, p, m = parts
        cond = nu + 2 * p - k > 0
        if cond is sp.false:
            divergent.append(MomentError(
                f"E[{sp.sstr(term)}] does not exist under StudentT({nu}): its tails fall like "
                f"|x|**-(nu + 1), so it needs nu > {k - 2 * p}"))
            continue
        if cond is not sp.true:
            conditions.append(cond)
        if k % 2:
            continue
        half = sp.Rational(k + 1, 2)
        moment = (nu ** (sp.Rational(k, 2) - p_) * sp.gamma(half) * sp.gamma(p_ + (nu - k) / 2)
                  / sp.gamma(p_ + (nu + 1) / 2)) * sp.gamma((nu + 1) / 2) / (
                      sp.sqrt(sp.pi) * sp.gamma(nu / 2))
        d = (-1) ** m * sp.diff(moment, p_, m) if m else moment
        value += coeff * d.subs(p_, p)
    if len(divergent) == 1:  # one infinite term beside finite ones: nothing can cancel it
        raise divergent[0]
    if divergent:  # several may cancel (see derive/_expectation.py by_rules)
        return None
    return Closed(_tidy(value), "closed-form", tuple(dict.fromkeys(conditions)))


def _tidy(expr, seconds=1.0):
    """gammasimp within a time budget (the callers simplify what they keep)."""
    from ._budget import OutOfTime, time_budget
    if sp.count_ops(expr) > 300:
        return expr
    try:
        with time_budget(seconds):
            return sp.gammasimp(expr)
    except OutOfTime:
        return expr


# ------------------------------------------------------------------ values by quadrature

_FAR = (100, 200, 400, 800)


def _standard_base(fam, values) -> Base:
    """The standard law at the values, as a parameter-free Base for the quadrature."""
    shape = [exact_number(_value(s, values)) for s in fam.q_shape]
    x = fam.std
    density = fam.pdf_std(x, *shape)
    if fam.name == "gamma":
        (a,) = shape
        w = max(1.0, float(a) ** 0.5)
        c = float(a)
        points = sorted({0.0, c / 4, c, c + 4 * w, c + 16 * w, c + 64 * w})
        return Base("gamma-std", f"x ~ Gamma({a}, 1)", x, density, (sp.Integer(0), sp.oo), "",
                    None, lambda t: sp.true, (*points, sp.oo),
                    tuple(c + r * w for r in _FAR))
    if fam.name == "beta":
        return Base("beta-std", f"x ~ Beta({shape[0]}, {shape[1]})", x, density,
                    (sp.Integer(0), sp.Integer(1)), "", None, lambda t: sp.true,
                    (0, 0.5, 1), ())
    return Base("studentt-std", f"x ~ StudentT({shape[0]})", x, density, (-sp.oo, sp.oo), "",
                None, lambda t: sp.true, (-sp.oo, -100, -10, -1, 0, 1, 10, 100, sp.oo),
                (1e4, 1e6, 1e8, 1e10), heavy_tails=True)


def _value(expr, values):
    from ._numbers import exact_values
    out = sp.sympify(expr).xreplace(exact_values(values))
    if out.free_symbols:
        raise DeriveError(f"no value for {', '.join(sorted(map(str, out.free_symbols)))}")
    return out


def quad_at(fam: ImplicitFamily, h, values, *, what=""):
    """E_q[h(z)] at the values by 20-digit quadrature over the standard law (MomentError when it
    does not exist, from the integrability probes)."""
    from ._quadrature import quad_expectation
    base = _standard_base(fam, values)
    return quad_expectation(fam.standard(h), base, values, what=what)


def gradient_at(p, w, values):
    """d/dw E_q[f] at the values: a Richardson-extrapolated central difference of quadrature,
    independent of either estimator's formula."""
    exact = {s: exact_number(v) for s, v in values.items()}
    x0 = exact[w]
    step = sp.Rational(1, 10**5) * (abs(x0) if x0 != 0 else 1)
    what = f"E_q[{sp.sstr(p.f)}]"

    def F(v):
        return quad_at(p.family, p.f, {**exact, w: v}, what=what)

    def D(h):
        return (F(x0 + h) - F(x0 - h)) / (2 * mpmath.mpf(h.p) / h.q)

    with mpmath.workdps(30):
        F(x0)
        return (4 * D(step / 2) - D(step)) / 3


# ------------------------------------------------------------------ NumPy estimators

HELPERS = '''
def _richardson_dlog(fn, p):
    """d/dp log fn(p) (elementwise) by central differences at steps p/2**9 and p/2**10,
    Richardson-extrapolated (error O(h**4) plus the rounding of log fn divided by h)."""
    def central(h):
        return (numpy.log(fn(p + h)) - numpy.log(fn(p - h))) / (2 * h)
    h = p / 512.0
    return (4 * central(h / 2) - central(h)) / 3


def _split(lower, lower_fn, upper_fn, *args):
    """lower_fn(*args) where lower, upper_fn(*args) elsewhere, each evaluated only there."""
    out = numpy.empty(lower.shape)
    low = [a[lower] if numpy.ndim(a) else a for a in args]
    high = [a[~lower] if numpy.ndim(a) else a for a in args]
    out[lower] = lower_fn(*low)
    out[~lower] = upper_fn(*high)
    return out


def _gamma_dx_dalpha(alpha, x):
    """-dP(alpha, x)/dalpha / p(x; alpha) for x ~ Gamma(alpha, 1): the smaller tail T of P and
    Q = 1 - P, d log T/dalpha by _richardson_dlog, the ratio in logarithms."""
    x = numpy.asarray(x, dtype=numpy.float64)
    lower = x < alpha
    def tail(a):
        return _split(lower, scipy.special.gammainc, scipy.special.gammaincc, a, x)
    dlog = _richardson_dlog(tail, alpha)
    logp = (alpha - 1) * numpy.log(x) - x - scipy.special.gammaln(alpha)
    ratio = numpy.exp(numpy.log(tail(alpha)) - logp)
    return numpy.where(lower, -ratio, ratio) * dlog


def _beta_dz(a, b, z, which):
    z = numpy.asarray(z, dtype=numpy.float64)
    lower = z < a / (a + b)
    def tail(s):
        aa, bb = (s, b) if which == 0 else (a, s)
        return _split(lower, scipy.special.betainc, scipy.special.betaincc, aa, bb, z)
    dlog = _richardson_dlog(tail, a if which == 0 else b)
    logp = ((a - 1) * numpy.log(z) + (b - 1) * numpy.log1p(-z) - scipy.special.betaln(a, b))
    ratio = numpy.exp(numpy.log(tail(a if which == 0 else b)) - logp)
    return numpy.where(lower, -ratio, ratio) * dlog


def _beta_dz_da(a, b, z):
    """-dI_z(a, b)/da / p(z; a, b) for z ~ Beta(a, b) (see _gamma_dx_dalpha)."""
    return _beta_dz(a, b, z, 0)


def _beta_dz_db(a, b, z):
    """-dI_z(a, b)/db / p(z; a, b) for z ~ Beta(a, b) (see _gamma_dx_dalpha)."""
    return _beta_dz(a, b, z, 1)


def _studentt_dx_dnu(nu, x):
    """-dF(x; nu)/dnu / p(x; nu) for x ~ StudentT(nu): T = stdtr(nu, -|x|), the smaller tail;
    dF/dnu = -sign(x) dT/dnu."""
    x = numpy.asarray(x, dtype=numpy.float64)
    def tail(n):
        return scipy.special.stdtr(n, -numpy.abs(x))
    dlog = _richardson_dlog(tail, nu)
    logp = (scipy.special.gammaln((nu + 1) / 2) - scipy.special.gammaln(nu / 2)
            - 0.5 * numpy.log(nu * numpy.pi) - (nu + 1) / 2 * numpy.log1p(x * x / nu))
    return numpy.sign(x) * numpy.exp(numpy.log(tail(nu)) - logp) * dlog
'''

_PRINTED = {GammaDxDalpha: "_gamma_dx_dalpha", BetaDzDa: "_beta_dz_da", BetaDzDb: "_beta_dz_db",
            StudentTDxDnu: "_studentt_dx_dnu"}


def _printer():
    from ._codegen import _Printer

    class Printer(_Printer):
        pass

    for cls, name in _PRINTED.items():
        setattr(Printer, f"_print_{cls.__name__}",
                lambda self, e, _n=name: f"{_n}({', '.join(self.doprint(a) for a in e.args)})")
    return Printer()


def estimator_source(est, *, dtype="float64") -> tuple:
    """(source, function name, parameter names) of ``fn(rng, n, **params) -> (n, k)`` for an
    estimator of an implicit family: z drawn in one call (chunk-size invariant), then the
    components, which are expressions of z (dz/dtheta through the helpers above)."""
    from ._codegen import keyword_parameters, scalar_preamble, stable
    if dtype != "float64":
        raise DeriveError("implicit families are generated in float64 only")
    if not est.applies:
        raise DeriveError(f"the {est.kind} estimator does not apply: {est.refused}")
    p = est.problem
    fam = p.family
    printer = _printer()
    params = keyword_parameters(p)
    names = tuple(s.name for s in params)
    name = "score_function" if est.kind == "score" else est.kind
    body, theta = scalar_preamble(fam, params, printer)
    body.append("    " + fam.draw.format(rng="_rng", size="_size", **theta))
    body.append(f"    _out = numpy.empty(({len(est.components)}, _size))")
    body.append("    with numpy.errstate(divide='ignore', invalid='ignore', over='ignore'):")
    for j, c in enumerate(est.components):
        body.append(f"        _out[{j}] = {printer.doprint(stable(c))}")
    body.append("    return _out.T")
    head = [f"def {name}(_rng, _size, *, {', '.join(names)}):",
            f'    """{est.kind} estimator of {p}: per-sample rows, shape (n, {len(p.wrt)})."""']
    imports = printer.imports()
    for line in ("import numpy", "import scipy.special"):
        if line not in imports:
            imports.insert(0, line)
    source = "\n".join([*imports, "", HELPERS, "", *head, *body]) + "\n"
    return source, name, names


# ------------------------------------------------------------------ mcgrad codegen

MODULE_HELPERS = HELPERS + '''

def _scalar(value, name):
    """A parameter as a NumPy float64 scalar: the implicit families' samplers and helpers take
    scalar parameters only (no broadcasting of parameter arrays)."""
    if numpy.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar: the implicitly reparameterized families "
                         f"take scalar parameters (call once per parameter value)")
    return numpy.float64(value)
'''


def teach(printer):
    """Let a codegen printer (an instance) print the numerical dz/dtheta as the helper calls."""
    import types
    for cls, name in _PRINTED.items():
        def method(self, e, _n=name):
            return f"{_n}({', '.join(self.doprint(a) for a in e.args)})"
        setattr(printer, f"_print_{cls.__name__}", types.MethodType(method, printer))
    return printer


def _module_body(ctx, params):
    from ._codegen import stable
    fam = ctx.analysis.problem.family
    body = [f"{s.name} = _scalar({s.name}, {s.name!r})" for s in params]
    checks = [c for c in fam.constraints]
    if checks:
        body.append(f"_check({', '.join(s.name for s in _check_symbols(ctx))})"
                    if _check_symbols(ctx) else "pass")
    theta = {}
    for i, (param, t) in enumerate(zip(fam.params, fam.theta)):
        if t == param:
            theta[param.name] = param.name
        else:
            body.append(f"_theta{i} = {ctx.printer.doprint(stable(t))}")
            theta[param.name] = f"_theta{i}"
    body.append(fam.draw.format(rng=ctx.rng, size=ctx.n, **theta))
    return body


def _check_symbols(ctx):
    from ._codegen import _constraint_symbols
    return _constraint_symbols(ctx)


def sample_lines(ctx):
    """def sample(rng, n, *, params): n draws of z (scalar parameters)."""
    from ._codegen import _docstring, _signature, _wrap
    fam = ctx.analysis.problem.family
    doc = (_wrap(f"n draws of z ~ {fam}: {fam.sampler_text}.", "", 92) + "\n\nReturns shape "
           "(n,); scalar parameters only (implicit families do not broadcast\nparameter "
           "arrays).")
    body = _module_body(ctx, ctx.family_params)
    return ([f"def sample({_signature(ctx, sampler=True)}):", *_docstring(doc)]
            + ["    " + line for line in body] + ["    return z"])


def estimator_lines(ctx, kind, est):
    """def score_function / pathwise(rng, n, *, params) for an implicit family: z drawn in one
    call, then each column (dz/dtheta through the helpers), shape (n, len(WRT))."""
    from ._codegen import FUNCTION_NAMES, _docstring, _signature, _wrap, stable
    name = FUNCTION_NAMES[kind]
    if not est.applies:
        return [f"# {name} is not generated: the {kind} estimator does not apply.",
                *("# " + line for line in _wrap_text(est.refused))]
    teach(ctx.printer)
    body = _module_body(ctx, ctx.params)
    body.append(f"{ctx.out} = numpy.empty(({len(est.components)}, {ctx.n}), DTYPE)")
    body.append("with numpy.errstate(divide='ignore', invalid='ignore', over='ignore'):")
    for j, c in enumerate(est.components):
        body.append(f"    {ctx.out}[{j}] = {ctx.printer.doprint(stable(c))}")
    title = ("Score-function (log-derivative, REINFORCE) estimator of grad E_q[f]:"
             if kind == "score" else
             "Implicit reparameterization (pathwise) estimator of grad E_q[f] (Figurnov et al. "
             "2018):")
    lines = [title, "", _wrap(est.formula, "    "), ""]
    lines += [_wrap(f"d/d{w}: h = {sp.sstr(c)}", "    ") for w, c in zip(ctx.wrt, est.components)]
    lines += ["", _wrap(f"Requires: {est.requires}.", "")]
    lines += [_wrap(f"Note: {n}.", "") for n in est.notes]
    lines += ["", f"Returns an (n, {len(ctx.wrt)}) array, one estimate a row (column j for "
                  f"WRT[j]); z is drawn", "in one call. Scalar parameters only."]
    doc = "\n".join(lines)
    return ([f"def {name}({_signature(ctx)}):", *_docstring(doc)]
            + ["    " + line for line in body] + [f"    return _per_sample({ctx.out})"])


def _wrap_text(text):
    import textwrap
    return textwrap.wrap(text, 96)


__all__ = ["BetaCDF", "BetaDzDa", "BetaDzDb", "CATALOG", "GammaCDF", "GammaDxDalpha",
           "HELPERS", "ImplicitFamily", "MODULE_HELPERS", "NUMERICAL", "StudentTCDF",
           "StudentTDxDnu", "beta", "closed_form", "derivation", "dz_dw", "estimator_lines",
           "estimator_source", "family", "gamma", "gradient_at", "is_implicit", "pathwise",
           "quad_at", "sample_lines", "studentt", "teach"]
