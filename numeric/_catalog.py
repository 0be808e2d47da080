"""The families of ``derive.CATALOG`` as plain data: parameter names and valid domains.

SymPy-free, so that :mod:`numeric.strategies` can draw valid parameters without importing
:mod:`derive`. ``tests/test_strategies.py`` checks that the names match ``derive.CATALOG``.

Each parameter has its domain (an open interval, ``None`` for an infinite end) and a default range
for strategies: moderate values at which every family's score-function and pathwise estimators of
the integrands in :func:`numeric.strategies.integrands` have finite variance and float64 does not
overflow.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Parameter:
    """One parameter: ``low < value < high`` (``None``: unbounded), default strategy range."""

    name: str
    low: float | None
    high: float | None
    default: tuple

    @property
    def domain(self) -> str:
        """The domain as text, e.g. ``sigma > 0`` or ``mu real``."""
        if self.low is None and self.high is None:
            return f"{self.name} real"
        if self.high is None:
            return f"{self.name} > {self.low:g}"
        if self.low is None:
            return f"{self.name} < {self.high:g}"
        return f"{self.low:g} < {self.name} < {self.high:g}"

    def contains(self, value) -> bool:
        return (math.isfinite(value) and (self.low is None or value > self.low)
                and (self.high is None or value < self.high))


def _real(name, default=(-3.0, 3.0)):
    return Parameter(name, None, None, default)


def _positive(name, default):
    return Parameter(name, 0.0, None, default)


FAMILIES = {
    "normal": (_real("mu"), _positive("sigma", (0.2, 3.0))),
    "lognormal": (_real("mu", (-1.0, 1.0)), _positive("sigma", (0.1, 1.0))),
    "laplace": (_real("mu"), _positive("b", (0.2, 3.0))),
    "logistic": (_real("mu"), _positive("s", (0.2, 3.0))),
    "gumbel": (_real("mu"), _positive("beta", (0.2, 3.0))),
    "cauchy": (_real("mu"), _positive("gamma", (0.2, 3.0))),
    "exponential": (_positive("lam", (0.2, 5.0)),),
    "weibull": (_positive("lam", (0.2, 3.0)), _positive("k", (0.5, 5.0))),
    "uniform": (_real("a"), _real("b")),
    "kumaraswamy": (_positive("a", (0.5, 5.0)), _positive("b", (0.5, 5.0))),
}
"""Family name -> its parameters, in ``derive.CATALOG``'s order."""

ORDERED = {"uniform": (("a", "b"),)}
"""Pairs (lo, hi) that must satisfy lo < hi (Uniform(a, b): a < b)."""

UNIFORM_WIDTH = (0.1, 4.0)
"""Default range of b - a for Uniform(a, b)."""


def violation(family: str, params: dict) -> str | None:
    """The first constraint the parameters violate, as text ("sigma > 0"), or None."""
    for p in FAMILIES[family]:
        if p.name in params and not p.contains(params[p.name]):
            return p.domain
    for lo, hi in ORDERED.get(family, ()):
        if lo in params and hi in params and not params[lo] < params[hi]:
            return f"{lo} < {hi}"
    return None
