"""NumPy functions for derived estimators: ``fn(rng, n, **params) -> (n, k)``.

The function draws the base noise in one call (so :func:`numeric.estimate` gives the same
result for any chunk size), maps it through the sampler and evaluates each component. Unstable
forms are printed stably: log(1 + exp(u)) as logaddexp(0, u) (log1p(exp(800)) is inf) and
exp(u)/(1 + exp(u)) as expit(u).
"""

import numpy as np
import scipy.special
import sympy as sp

from ._estimators import Estimator
from ._symbols import Z


class softplus(sp.Function):
    """log(1 + exp(x)), printed as numpy.logaddexp(0, x)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


class sigmoid(sp.Function):
    """1/(1 + exp(-x)), printed as scipy.special.expit(x)."""

    def fdiff(self, argindex=1):
        x = self.args[0]
        return sigmoid(x) * (1 - sigmoid(x))


def stable(expr: sp.Expr) -> sp.Expr:
    """expr with softplus and sigmoid patterns replaced by their stable functions."""
    w = sp.Wild("w")
    expr = expr.replace(sp.log(1 + sp.exp(w)), lambda w: softplus(w))
    expr = expr.replace(sp.exp(w) / (1 + sp.exp(w)), lambda w: sigmoid(w))
    expr = expr.replace(1 / (1 + sp.exp(w)), lambda w: sigmoid(-w))
    return expr


_MODULES = [{"softplus": lambda x: np.logaddexp(0, x), "sigmoid": scipy.special.expit},
            "numpy", "scipy"]


def parameter_names(est: Estimator) -> tuple:
    """The keyword arguments the NumPy function takes: every symbol but z and the noise."""
    symbols = set()
    for c in est.components:
        symbols |= c.free_symbols
    symbols |= est.problem.family.q_transform.free_symbols
    symbols -= {Z, est.problem.family.base.symbol}
    return tuple(sorted(s.name for s in symbols))


def numpy_estimator(est: Estimator):
    """``fn(rng, n, **params)`` returning the (n, k) per-sample estimates of ``est``."""
    if not est.applies:
        raise ValueError(f"the {est.kind} estimator does not apply: {est.refused}")
    fam = est.problem.family
    eps = fam.base.symbol
    names = parameter_names(est)
    symbols = [sp.Symbol(n_, real=True) for n_ in names]
    by_name = {s.name: s for c in (*est.components, fam.q_transform) for s in c.free_symbols}
    args = [by_name.get(n_, s) for n_, s in zip(names, symbols)]
    z_of_eps = sp.lambdify([eps, *args], stable(fam.q_transform), modules=_MODULES)
    var = Z if est.kind == "score" else eps
    comps = [sp.lambdify([var, *args], stable(c), modules=_MODULES) for c in est.components]
    draw = fam.base.numpy_draw.split("(")[0]
    k = len(comps)

    def fn(rng, n, **params):
        values = [params[n_] for n_ in names]
        noise = getattr(rng, draw)(size=n) if draw != "random" else rng.random(n)
        x = z_of_eps(noise, *values) if var is Z else noise
        out = np.empty((k, n))
        for j, c in enumerate(comps):
            out[j] = c(x, *values)
        return out.T

    fn.__name__ = f"{est.kind}_{fam.name}"
    fn.parameters = names
    return fn
