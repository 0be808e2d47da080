"""`mcgrad check`: exact gradient, both estimators by Monte Carlo, variances, agreement.

The one place (with the command line) where :mod:`derive` and :mod:`numeric` meet.
"""

import math
from dataclasses import dataclass

import sympy as sp

import derive
import numeric

DEFAULT_SAMPLES = 100_000
DEFAULT_RATE = 1e-6


@dataclass(frozen=True)
class Setup:
    """A parsed problem: the family (reparametrized if asked), f, wrt, and values by name."""

    family: derive.Family
    f_text: str
    problem: derive.Problem
    values: dict


def setup(family_name: str, f_text: str, *, params: dict | None = None, wrt=None,
          define: dict | None = None) -> Setup:
    """Parse and check the user's problem: family, integrand, parameter values, wrt names.

    ``define`` maps family parameters to expressions of the user's own (``sigma="exp(s)"``).
    """
    fam = derive.family(family_name)
    if define:
        exprs = {}
        for name, text in define.items():
            fam.param(name)
            exprs[name] = derive.parse(text, _undeclared(fam), what=f"the definition of {name}")
        fam = fam.reparametrize(**exprs)
    f = derive.parse(f_text, fam, extra=tuple(params or ()))
    p = derive.problem(fam, f, wrt)
    values = {}
    if params is not None:
        values = _values(p, params)
    return Setup(fam, f_text, p, values)


def _undeclared(fam):
    """A family view whose own parameters are not declared, for parsing their definitions."""
    return fam.reparametrize(**{p.name: sp.Integer(1) for p in fam.params})


def _values(p: derive.Problem, params: dict) -> dict:
    symbols = {s.name: s for s in p.family.symbols | (p.f.free_symbols - {derive.Z})}
    unknown = sorted(set(params) - set(symbols))
    if unknown:
        raise derive.DeriveError(
            f"unknown parameter {', '.join(unknown)}: the symbols of this problem are "
            f"{', '.join(sorted(symbols))}")
    missing = sorted(set(symbols) - set(params))
    if missing:
        raise derive.DeriveError(
            f"no value for {', '.join(missing)}; add --param {missing[0]}=VALUE")
    values = {symbols[k]: derive.exact_number(v) for k, v in params.items()}
    p.family.check_values(values)
    return values


def check(family_name: str, f_text: str, params: dict, *, wrt=None, samples=DEFAULT_SAMPLES,
          seed=0, false_failure_rate=DEFAULT_RATE, define=None, budget=None) -> dict:
    """The report of `mcgrad check` as a dict (the --json shape).

    For each parameter w: the exact gradient (closed form, else quadrature; null where it does
    not exist) and, for each estimator, the Monte Carlo mean, its standard error
    sqrt(variance/samples), the per-sample variance estimated and exact, and whether
    |mean - exact| <= z * SE, z for ``false_failure_rate`` per comparison (two-sided). The SE of
    the comparison uses the exact variance where there is one (a heavy-tailed sample
    underestimates it). An estimator that does not apply is {"refused": reason}.
    """
    if not (isinstance(samples, int) and samples >= 2):
        raise derive.DeriveError(f"samples must be an integer >= 2, not {samples!r}")
    s = setup(family_name, f_text, params=params, wrt=wrt, define=define)
    analysis = derive.analyze(s.problem, budget=budget, steps=False)
    at = analysis.at(s.values)
    kwargs = {k.name: float(v) for k, v in s.values.items()}
    report = {"family": family_name, "params": {k: float(v) for k, v in params.items()},
              "f": f_text, "samples": samples, "seed": seed, "gradient": {}}
    runs = {k: _run(e, samples, seed, kwargs) for k, e in analysis.estimators.items()}
    for j, w in enumerate(s.problem.wrt):
        exact = at.gradient[w]
        entry = {"exact": exact.value, "exact_method": exact.method}
        for kind, est in analysis.estimators.items():
            if not est.applies:
                entry[kind] = {"refused": est.refused}
                continue
            entry[kind] = _row(runs[kind], j, exact, at.variances[kind][j], samples,
                               false_failure_rate)
        report["gradient"][w.name] = entry
    report["_notes"] = _notes(analysis, at)
    return report


def _run(est, samples, seed, kwargs):
    if not est.applies:
        return None
    fn = derive.numpy_estimator(est)
    return numeric.estimate(fn, samples, seed=seed, **{k: kwargs[k] for k in fn.parameters})


def _row(run, j, exact, var_exact, samples, rate):
    mean, variance = float(run.mean[j]), float(run.variance[j])
    stderr = math.sqrt(variance / samples)
    agrees = None
    if exact.value is not None and not var_exact.infinite:
        se = math.sqrt(var_exact.value / samples) if var_exact.value is not None else stderr
        z = numeric.z_for_rate(rate)
        agrees = bool(abs(mean - exact.value) <= z * se + 64 * 2.0**-52 * abs(exact.value))
    return {"mean": mean, "stderr": stderr, "variance": variance,
            "variance_exact": var_exact.value, "agrees": agrees}


def _notes(analysis, at):
    notes = []
    for w, number in at.gradient.items():
        if number.missing:
            notes.append(f"exact d/d{w}: {number.missing}")
    for kind, numbers in at.variances.items():
        for w, number in zip(analysis.problem.wrt, numbers):
            if number.missing:
                notes.append(f"{kind} variance d/d{w}: {number.missing}")
        for line in analysis.estimators[kind].notes:
            notes.append(f"{kind}: {line}")
    return notes


def verdict(report: dict) -> int:
    """0 when every comparison agrees, 1 when one does not."""
    flags = [row.get("agrees") for entry in report["gradient"].values()
             for row in entry.values() if isinstance(row, dict)]
    return 1 if any(a is False for a in flags) else 0
