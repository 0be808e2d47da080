"""Everything mcgrad derives for one problem, symbolically, and its values at parameters."""

from dataclasses import dataclass
from typing import Mapping

import sympy as sp

from ._errors import DeriveError
from ._estimators import (ESTIMATORS, Estimator, Exact, Problem, exact_gradient, expectation,
                          variances)
from ._steps import Derivation, log_derivative_trick, reparameterization
from ._values import Number, gradient_at, variance_at


@dataclass(frozen=True)
class Analysis:
    """The exact gradient, every estimator, their exact per-sample variances, and derivations.

    ``gradient``: {w: Exact}; ``estimators``: {"score": Estimator, "pathwise": Estimator};
    ``variances``: {kind: (Exact per component)}; ``steps``: {w: (log-derivative trick,
    reparameterization)}. Closed forms are SymPy expressions; ``at`` gives numbers.
    """

    problem: Problem
    expectation: Exact
    gradient: dict
    estimators: dict
    variances: dict
    steps: dict

    def at(self, values: Mapping | None = None, **named) -> "Values":
        """Numbers at the given values (symbols or their names as keys): closed forms evaluated
        exactly, quadrature where there are none."""
        vals = _resolve(self.problem, {**(values or {}), **named})
        self.problem.family.check_values(vals)
        grad = gradient_at(self.problem, self.gradient, vals)
        var = {k: variance_at(e, self.variances[k], grad, vals)
               for k, e in self.estimators.items()}
        return Values(self, vals, grad, var)


@dataclass(frozen=True)
class Values:
    """``gradient``: {w: Number}; ``variances``: {kind: (Number per component)}."""

    analysis: Analysis
    values: dict
    gradient: dict
    variances: dict


def _resolve(p: Problem, values: Mapping) -> dict:
    symbols = set(p.family.symbols) | (p.f.free_symbols - {sp.Symbol("z", real=True)})
    by_name = {s.name: s for s in symbols}
    out = {}
    for key, v in values.items():
        name = key.name if isinstance(key, sp.Symbol) else str(key)
        if name not in by_name:
            raise DeriveError(f"{name} is not a symbol of this problem; its symbols are "
                              f"{', '.join(sorted(by_name))}")
        out[by_name[name]] = v
    missing = sorted(set(by_name) - {s.name for s in out})
    if missing:
        raise DeriveError(f"no value for {', '.join(missing)}; give one for every symbol "
                          f"(--param NAME=VALUE on the command line)")
    return out


def analyze(p: Problem, *, budget: float | None = None, steps: bool = True) -> Analysis:
    """Derive the exact gradient, both estimators, their variances and the derivation steps."""
    try:
        grad = exact_gradient(p, budget=budget)
        ests = {k: make(p) for k, make in ESTIMATORS.items()}
        var = {k: variances(e, grad, budget=budget) for k, e in ests.items()}
        st = {w: (log_derivative_trick(p, w, grad[w]), reparameterization(p, w, grad[w]))
              for w in p.wrt} if steps and not (p.family.discrete or p.family.implicit) else {}
        if steps and p.family.discrete:  # sums, and no reparameterization: derive/_discrete.py
            from ._discrete import derivations
            st = {w: derivations(p, w, grad[w]) for w in p.wrt}
        if steps and p.family.implicit:  # no transform g: dz/dphi from the CDF
            from ._implicit import derivation
            st = {w: (log_derivative_trick(p, w, grad[w]), derivation(p, w, grad[w]))
                  for w in p.wrt}
    except DeriveError as err:
        raise err.within(f"while deriving {p}") from None
    return Analysis(p, expectation(p, p.f, budget=budget), grad, ests, var, st)
