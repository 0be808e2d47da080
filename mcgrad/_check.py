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
    fam = derive.family(derive.discrete_family_name(family_name, params))  # categorical: K
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
          seed=0, false_failure_rate=DEFAULT_RATE, define=None, budget=None,
          baseline=None, mvd=None) -> dict:
    """The report of `mcgrad check` as a dict (the --json shape).

    For each parameter w: the exact gradient (closed form, else quadrature; null where it does
    not exist) and, for each estimator, the Monte Carlo mean, its standard error
    sqrt(variance/samples), the per-sample variance estimated and exact, and whether
    |mean - exact| <= z * SE, z for ``false_failure_rate`` per comparison (two-sided). The SE of
    the comparison uses the exact variance where there is one (a heavy-tailed sample
    underestimates it). An estimator that does not apply is {"refused": reason}.

    ``baseline`` ("none", "constant=V", "optimal", "delta"; see :func:`parse_baseline`) adds
    "score_baseline" per parameter: the score-function estimator with that baseline or control
    variate, the same fields, the baseline value used and the factor by which it divides the
    plain score function's per-sample variance.
    """
    spec = parse_baseline(baseline)
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
            if isinstance(runs[kind], str):
                entry[kind] = {"refused": runs[kind] + _why_no_mean(exact)}
                continue
            entry[kind] = _row(runs[kind], j, exact, at.variances[kind][j], samples,
                               false_failure_rate)
            if kind == "pathwise" and s.family.implicit:  # dz/dphi = -(dF/dphi)/q
                entry[kind]["method"] = "implicit"
        report["gradient"][w.name] = entry
    report["_notes"] = _notes(analysis, at)
    if spec is not None:
        rows, notes = _baseline_rows(s, analysis, at, spec, samples, seed, kwargs,
                                     false_failure_rate, budget)
        for w in s.problem.wrt:
            entry = report["gradient"][w.name]
            if "refused" not in rows[w] and "refused" not in entry["score"]:
                rows[w]["variance_reduction"] = _reduction(entry["score"], rows[w])
            entry["score_baseline"] = rows[w]
        report["_notes"] += notes
    if mvd is not None:  # measure-valued derivatives (Normal): "measure_valued" per parameter
        rows, notes = _mvd_rows(s, at, mvd, samples, seed, kwargs, false_failure_rate, budget)
        for w in s.problem.wrt:
            report["gradient"][w.name]["measure_valued"] = rows[w]
        report["_notes"] += notes
    return report


MVD_CHOICES = ("coupled", "uncoupled")


def _mvd_rows(s, at, how, samples, seed, kwargs, rate, budget):
    """({w: row}, notes): the measure-valued derivative estimator (derive/_mvd.py), coupled or
    not, with its exact per-sample variance (closed form, else quadrature)."""
    if how not in MVD_CHOICES:
        raise derive.DeriveError(f"--mvd {how!r} is not one of: {', '.join(MVD_CHOICES)}")
    coupled = how == "coupled"
    est = derive.measure_valued(s.problem, coupled=coupled)
    if not est.applies:
        return {w: {"coupled": coupled, "refused": est.refused} for w in s.problem.wrt}, []
    moments = derive.mvd_moments_at(est, s.values, budget=budget)
    run = _run(est, samples, seed, kwargs)
    rows, notes = {}, []
    for j, w in enumerate(s.problem.wrt):
        var = derive.Number(moments[j].variance, moments[j].method, moments[j].missing)
        if isinstance(run, str):
            rows[w] = {"coupled": coupled, "refused": run}
            continue
        rows[w] = {"coupled": coupled, **_row(run, j, at.gradient[w], var, samples, rate)}
        if moments[j].missing:
            notes.append(f"measure_valued variance d/d{w}: {moments[j].missing}")
    return rows, notes + [f"measure_valued: {line}" for line in est.notes]


BASELINES = "none, constant=V (a number), optimal, delta"


def parse_baseline(text):
    """``--baseline`` text as None (none), ("constant", V), ("optimal", None) or ("delta", None);
    DeriveError naming the choices for anything else."""
    if text is None or isinstance(text, tuple):
        return text
    word, sep, value = str(text).strip().partition("=")
    word = word.strip().lower()
    if word in ("none", "optimal", "delta") and not sep:
        return None if word == "none" else (word, None)
    if word == "constant" and sep:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if math.isfinite(number):
            return ("constant", derive.exact_number(value.strip()))
        raise derive.DeriveError(f"--baseline {text!r}: the constant must be a finite number, "
                                 f"e.g. constant=-1e6")
    raise derive.DeriveError(f"--baseline {text!r} is not one of: {BASELINES}")


def _baseline_rows(s, analysis, at, spec, samples, seed, kwargs, rate, budget):
    """({w: row}, notes) for the score-function estimator with the baseline ``spec``."""
    p = s.problem
    kind, value = spec
    used, notes = {w: None for w in p.wrt}, []
    if kind == "constant":
        est = derive.score_baseline(p, value)
        used = {w: float(value) for w in p.wrt}
    elif kind == "optimal" and p.family.discrete:
        return {w: {"baseline": kind, "refused": "the optimal baseline is not implemented for "
                    "discrete families yet; use --baseline constant=V"} for w in p.wrt}, []
    elif kind == "optimal":
        numbers = derive.optimal_baseline_at(p, s.values, budget=budget)
        bad = [(w, n) for w, n in numbers.items() if n.value is None]
        if bad:
            return {w: {"baseline": kind, "refused": f"no optimal baseline for d/d{bad[0][0]}: "
                                                      f"{bad[0][1].missing}"} for w in p.wrt}, []
        est = derive.score_baseline(p, {w: derive.exact_number(n.value)
                                        for w, n in numbers.items()})
        used = {w: n.value for w, n in numbers.items()}
    else:
        est = derive.delta_method(p, budget=budget)
    if not est.applies:
        return {w: {"baseline": kind, "refused": est.refused} for w in p.wrt}, []
    exact = derive.variances(est, analysis.gradient, budget=budget)
    var_at = derive.variance_at(est, exact, at.gradient, s.values)
    run = _run(est, samples, seed, kwargs)
    rows = {}
    for j, w in enumerate(p.wrt):
        row = _row(run, j, at.gradient[w], var_at[j], samples, rate)
        rows[w] = {"baseline": kind, "value": used[w], **row, "variance_reduction": None}
        if var_at[j].missing:
            notes.append(f"score_baseline variance d/d{w}: {var_at[j].missing}")
    if kind == "delta":
        mean = derive.expectation(p.family, derive.Z, budget=budget)
        point = float(derive.evaluate(mean.expr, s.values))
        for w in p.wrt:
            rows[w]["expansion_point"] = point
    shown = est.notes if kind == "delta" else est.notes[1:]  # [0] restates the values used
    return rows, notes + [f"score_baseline: {line}" for line in shown]


def _reduction(plain, row):
    """Var(plain score function) / Var(with the baseline): the exact variances where both
    exist, else the estimates; None where the baseline's variance is 0 (no finite factor)."""
    old, new = plain["variance_exact"], row["variance_exact"]
    if old is None or new is None:
        old, new = plain["variance"], row["variance"]
    if not new or new <= 0:
        return None
    return old / new


def _run(est, samples, seed, kwargs):
    """The Estimate, None for a refused estimator, or the reason (str) Monte Carlo failed: a
    sample that overflows to inf (exp(z/5) under Cauchy noise, whose mean does not exist) is
    reported in that estimator's row rather than ending the whole check."""
    if not est.applies:
        return None
    fn = derive.numpy_estimator(est)
    try:
        return numeric.estimate(fn, samples, seed=seed, **{k: kwargs[k] for k in fn.parameters})
    except numeric.NumericError as err:
        return f"Monte Carlo failed: {err}"


def _why_no_mean(exact) -> str:
    return f" (the exact gradient: {exact.missing})" if exact.value is None and exact.missing \
        else ""


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
