"""Standard base distributions of the noise epsilon from which every family's sampler starts.

Each base knows its density, its support, its moment-generating function M(t) = E[exp(t eps)]
(where one exists) with the region of t where it is finite, and how NumPy draws it. The
expectation engine uses M: E[eps**n exp(t eps)] = M^(n)(t).
"""

from dataclasses import dataclass
from typing import Callable

import sympy as sp

from ._symbols import EPS, EPS_POS


@dataclass(frozen=True)
class Base:
    """A standard noise distribution: eps ~ base, with no parameters."""

    name: str
    text: str
    symbol: sp.Symbol
    density: sp.Expr
    support: tuple[sp.Expr, sp.Expr]
    numpy_draw: str
    """The `numpy.random.Generator` call that draws n values, with ``{n}`` for the count."""
    mgf: Callable[[sp.Expr], sp.Expr] | None
    """t -> E[exp(t eps)], valid where ``mgf_domain(t)`` holds; None when only t = 0 is finite."""
    mgf_domain: Callable[[sp.Expr], sp.Basic]
    quad_points: tuple
    """Points for mpmath.quad: finite cut-offs where a tail falls doubly exponentially."""
    tail_probes: tuple
    """Distances from the end of the support at which integrability is probed (see _quadrature)."""
    heavy_tails: bool = False
    """Tails that fall only polynomially (Cauchy): oscillating integrands need quadosc there."""


def _true(t):
    return sp.true


_FAR = (8, 16, 32, 64)            # Gaussian tails: density exp(-2048) at 64
_EXP_FAR = (100, 200, 400, 800)   # exponential tails
_POLY_FAR = (1e4, 1e6, 1e8, 1e10)  # polynomial (Cauchy) tails

NORMAL = Base(
    "normal", "eps ~ N(0, 1)", EPS, sp.exp(-EPS**2 / 2) / sp.sqrt(2 * sp.pi), (-sp.oo, sp.oo),
    "standard_normal({n})", lambda t: sp.exp(t**2 / 2), _true,
    (-sp.oo, -12, -8, -4, -2, 0, 2, 4, 8, 12, sp.oo), _FAR)
UNIFORM = Base(
    "uniform", "eps ~ U(0, 1)", EPS_POS, sp.Integer(1), (sp.Integer(0), sp.Integer(1)),
    "random({n})", lambda t: (sp.exp(t) - 1) / t, _true, (0, 0.5, 1), ())
EXPONENTIAL = Base(
    "exponential", "eps = -log(u) ~ Exp(1)", EPS_POS, sp.exp(-EPS_POS), (sp.Integer(0), sp.oo),
    "standard_exponential({n})", lambda t: 1 / (1 - t), lambda t: sp.re(t) < 1,
    (0, 1, 4, 16, 64, sp.oo), _EXP_FAR)
LAPLACE = Base(
    "laplace", "eps ~ Laplace(0, 1)", EPS, sp.exp(-sp.Abs(EPS)) / 2, (-sp.oo, sp.oo),
    "laplace(size={n})", lambda t: 1 / (1 - t**2), lambda t: sp.Abs(sp.re(t)) < 1,
    (-sp.oo, -64, -16, -4, 0, 4, 16, 64, sp.oo), _EXP_FAR)
LOGISTIC = Base(
    "logistic", "eps ~ Logistic(0, 1)", EPS, sp.exp(-EPS) / (1 + sp.exp(-EPS))**2, (-sp.oo, sp.oo),
    "logistic(size={n})", lambda t: sp.pi * t / sp.sin(sp.pi * t),  # = Gamma(1-t)Gamma(1+t)
    lambda t: sp.Abs(sp.re(t)) < 1, (-sp.oo, -64, -16, -4, 0, 4, 16, 64, sp.oo), _EXP_FAR)
GUMBEL = Base(
    "gumbel", "eps ~ Gumbel(0, 1)", EPS, sp.exp(-EPS - sp.exp(-EPS)), (-sp.oo, sp.oo),
    "gumbel(size={n})", lambda t: sp.gamma(1 - t), lambda t: sp.re(t) < 1,
    (-7, -3, 0, 4, 16, 64, sp.oo), _EXP_FAR)
CAUCHY = Base(
    "cauchy", "eps ~ Cauchy(0, 1)", EPS, 1 / (sp.pi * (1 + EPS**2)), (-sp.oo, sp.oo),
    "standard_cauchy({n})", None, _true, (-sp.oo, -100, -10, -1, 0, 1, 10, 100, sp.oo), _POLY_FAR,
    heavy_tails=True)
