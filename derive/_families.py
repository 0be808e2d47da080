"""Parametric families q(z; phi) with an explicit sampler z = g(eps; phi), eps from a standard base.

A family's parameters may be replaced by expressions of the user's own parameters
(``normal().reparametrize(mu=w*x + c, sigma=exp(s))``); every derived quantity then follows by
the chain rule, because derivations differentiate the substituted expressions directly.
"""

import difflib
from dataclasses import dataclass, field, replace
from typing import Mapping

import sympy as sp

from . import _bases as bases
from ._errors import DeriveError
from ._numbers import evaluate
from ._symbols import Z


@dataclass(frozen=True)
class Constraint:
    """A condition on the parameters, ``expr > 0``, with the words that explain it."""

    expr: sp.Expr
    text: str

    def holds_at(self, values: Mapping) -> bool:
        return evaluate(self.expr, values) > 0


@dataclass(frozen=True)
class Family:
    """q(z; theta): log-density, support, constraints and the sampler z = g(eps; theta).

    ``params`` are the family's own parameter symbols (mu, sigma, ...); ``theta`` maps each to
    the expression that stands for it (itself unless reparametrized).
    """

    name: str
    params: tuple
    log_density: sp.Expr
    support: tuple
    constraints: tuple
    base: bases.Base
    transform: sp.Expr
    sampler_text: str
    theta: tuple = field(default=())
    discrete: bool = False
    implicit: bool = False
    """Sampled directly, with dz/dtheta from the CDF (derive/_implicit.py)."""

    def __post_init__(self):
        if not self.theta:
            object.__setattr__(self, "theta", tuple(self.params))

    @property
    def param_names(self) -> tuple:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> sp.Symbol:
        for p in self.params:
            if p.name == name:
                return p
        raise DeriveError(f"{self.name} has no parameter {name!r}; its parameters are "
                          f"{', '.join(self.param_names)}")

    @property
    def substitution(self) -> dict:
        return dict(zip(self.params, self.theta))

    def _sub(self, expr):
        return sp.sympify(expr).xreplace(self.substitution)

    @property
    def q_log_density(self) -> sp.Expr:
        """log q(z; phi) in the user's parameters."""
        return self._sub(self.log_density)

    @property
    def q_transform(self) -> sp.Expr:
        """z = g(eps; phi) in the user's parameters."""
        return self._sub(self.transform)

    @property
    def q_support(self) -> tuple:
        return tuple(self._sub(e) for e in self.support)

    @property
    def symbols(self) -> set:
        """The symbols the family depends on: its parameters, or the user's after reparametrizing."""
        out = set()
        for t in self.theta:
            out |= sp.sympify(t).free_symbols
        return out

    def reparametrize(self, **exprs) -> "Family":
        """The same family with parameters given as expressions of other symbols."""
        theta = list(self.theta)
        for name, expr in exprs.items():
            theta[self.params.index(self.param(name))] = sp.sympify(expr)
        return replace(self, theta=tuple(theta))

    def check_values(self, values: Mapping) -> None:
        """Raise DeriveError naming the violated constraint, e.g. 'sigma > 0' at sigma = -1."""
        for c in self.constraints:
            expr = self._sub(c.expr)
            if not evaluate(expr, values) > 0:
                shown = ", ".join(f"{s} = {values[s]}" for s in sorted(expr.free_symbols, key=str)
                                  if s in values)
                raise DeriveError(f"{self.name} needs {c.text}, but {shown}; choose values "
                                  f"that satisfy {c.text}")

    def __str__(self):
        return f"{self.name.capitalize()}({', '.join(map(sp.sstr, self.theta))})"


def _real(name):
    return sp.Symbol(name, real=True)


def _pos(name):
    return sp.Symbol(name, positive=True)


def _location_scale(name, scale, base, log_std_density, text):
    mu, s = _real("mu"), _pos(scale)
    x = (Z - mu) / s
    return Family(name, (mu, s), log_std_density(x) - sp.log(s), (-sp.oo, sp.oo),
                  (Constraint(s, f"{scale} > 0"),), base, mu + s * base.symbol,
                  f"z = mu + {scale}*eps, {base.text}")


def normal():
    """Normal(mu, sigma): z = mu + sigma*eps, eps ~ N(0, 1)."""
    return _location_scale("normal", "sigma", bases.NORMAL,
                           lambda x: -x**2 / 2 - sp.log(2 * sp.pi) / 2, "")


def laplace():
    """Laplace(mu, b): density exp(-|z - mu|/b)/(2b); z = mu + b*eps."""
    return _location_scale("laplace", "b", bases.LAPLACE, lambda x: -sp.Abs(x) - sp.log(2), "")


def logistic():
    """Logistic(mu, s): z = mu + s*eps, eps ~ Logistic(0, 1)."""
    return _location_scale("logistic", "s", bases.LOGISTIC,
                           lambda x: -x - 2 * sp.log(1 + sp.exp(-x)), "")


def gumbel():
    """Gumbel(mu, beta), the max-Gumbel: density exp(-(x + exp(-x)))/beta, x = (z - mu)/beta."""
    return _location_scale("gumbel", "beta", bases.GUMBEL, lambda x: -x - sp.exp(-x), "")


def cauchy():
    """Cauchy(mu, gamma): z = mu + gamma*eps, eps ~ Cauchy(0, 1); no mean, no variance."""
    return _location_scale("cauchy", "gamma", bases.CAUCHY,
                           lambda x: -sp.log(sp.pi) - sp.log(1 + x**2), "")


def lognormal():
    """LogNormal(mu, sigma): z = exp(mu + sigma*eps), eps ~ N(0, 1)."""
    mu, sigma = _real("mu"), _pos("sigma")
    eps = bases.NORMAL.symbol
    logq = (-sp.log(Z) - sp.log(sigma) - sp.log(2 * sp.pi) / 2
            - (sp.log(Z) - mu)**2 / (2 * sigma**2))
    return Family("lognormal", (mu, sigma), logq, (sp.Integer(0), sp.oo),
                  (Constraint(sigma, "sigma > 0"),), bases.NORMAL, sp.exp(mu + sigma * eps),
                  "z = exp(mu + sigma*eps), eps ~ N(0, 1)")


def exponential():
    """Exponential(lam), lam the rate: z = -log(u)/lam = eps/lam, eps ~ Exp(1)."""
    lam = _pos("lam")
    eps = bases.EXPONENTIAL.symbol
    return Family("exponential", (lam,), sp.log(lam) - lam * Z, (sp.Integer(0), sp.oo),
                  (Constraint(lam, "lam > 0"),), bases.EXPONENTIAL, eps / lam,
                  "z = -log(u)/lam, u ~ U(0, 1) (eps = -log(u) ~ Exp(1))")


def weibull():
    """Weibull(lam, k), lam the scale, k the shape: z = lam*(-log u)**(1/k) (inverse CDF)."""
    lam, k = _pos("lam"), _pos("k")
    eps = bases.EXPONENTIAL.symbol
    logq = sp.log(k) - sp.log(lam) + (k - 1) * (sp.log(Z) - sp.log(lam)) - (Z / lam)**k
    return Family("weibull", (lam, k), logq, (sp.Integer(0), sp.oo),
                  (Constraint(lam, "lam > 0"), Constraint(k, "k > 0")), bases.EXPONENTIAL,
                  lam * eps ** (1 / k),
                  "z = lam*(-log u)**(1/k), u ~ U(0, 1) (inverse CDF; eps = -log u ~ Exp(1))")


def uniform():
    """Uniform(a, b), a < b: z = a + (b - a)*u. Its support moves with a and b."""
    a, b = _real("a"), _real("b")
    u = bases.UNIFORM.symbol
    return Family("uniform", (a, b), -sp.log(b - a), (a, b), (Constraint(b - a, "a < b"),),
                  bases.UNIFORM, a + (b - a) * u, "z = a + (b - a)*u, u ~ U(0, 1)")


def kumaraswamy():
    """Kumaraswamy(a, b) on (0, 1): z = (1 - (1 - u)**(1/b))**(1/a) (inverse CDF)."""
    a, b = _pos("a"), _pos("b")
    u = bases.UNIFORM.symbol
    logq = sp.log(a) + sp.log(b) + (a - 1) * sp.log(Z) + (b - 1) * sp.log(1 - Z**a)
    return Family("kumaraswamy", (a, b), logq, (sp.Integer(0), sp.Integer(1)),
                  (Constraint(a, "a > 0"), Constraint(b, "b > 0")), bases.UNIFORM,
                  (1 - (1 - u) ** (1 / b)) ** (1 / a),
                  "z = (1 - (1 - u)**(1/b))**(1/a), u ~ U(0, 1) (inverse CDF)")


CATALOG = {f.__name__: f for f in (normal, lognormal, laplace, logistic, gumbel, cauchy,
                                    exponential, weibull, uniform, kumaraswamy)}
"""Every family by name; each entry builds a fresh Family."""


def family(name: str) -> Family:
    """The family called ``name`` (see CATALOG)."""
    try:
        return CATALOG[name]()
    except KeyError:
        from . import _discrete  # discrete families: bernoulli, categoricalK, poisson, ...
        found = _discrete.family(name)
        if found is not None:
            return found
        from . import _implicit  # implicit reparameterization: gamma, beta, studentt
        found = _implicit.family(name)
        if found is not None:
            return found
        names = [*CATALOG, *_implicit.CATALOG, *_discrete.CATALOG]
        near = difflib.get_close_matches(str(name), names, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise DeriveError(f"unknown family {name!r}; {hint}choose one of "
                          f"{', '.join(names)}") from None
