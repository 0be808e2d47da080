"""The `mcgrad` command line: derive, check, demo.

Exit status: 0 success (every estimate agrees), 1 an estimate disagrees, 2 bad input. Bad input
is reported in one line that names the problem and the fix, never a traceback.
"""

import argparse
import json
import os
import sys

import sympy as sp

import derive
import numeric

from . import __version__
from ._check import DEFAULT_RATE, DEFAULT_SAMPLES, check, setup, verdict


class UsageError(Exception):
    """Bad input found by the command line itself (exit status 2)."""


def _param(text: str):
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{name.strip()}={value!r}: the value must be a number such as 0.3 or 1e-2") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{name.strip()}: the value must be finite")
    return name.strip(), value.strip()


def _define(text: str):
    name, sep, expr = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=EXPR, got {text!r}")
    return name.strip(), expr


def _samples(text: str) -> int:
    try:
        n = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 2:
        raise argparse.ArgumentTypeError("at least 2 samples are needed for a variance")
    return n


def _wrt(text: str):
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one parameter, e.g. --wrt mu,sigma")
    return names


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mcgrad", description="Monte Carlo gradient estimators of grad_phi E_q[f], derived "
        "symbolically and checked by Monte Carlo.")
    top.add_argument("--version", action="version", version=f"mcgrad {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    families = ", ".join([*derive.CATALOG, *(n if n != "categorical" else "categoricalK"
                                              for n in derive.DISCRETE_CATALOG)])

    def problem_args(p):
        p.add_argument("family", help=f"one of: {families}")
        p.add_argument("--f", required=True, dest="f", metavar="EXPR",
                       help="the integrand f(z), e.g. 'cos(2*z)'; may use the family's "
                            "parameters and other symbols such as x")
        p.add_argument("--wrt", type=_wrt, help="parameters to differentiate, comma-separated "
                                                "(default: all of the family's)")
        p.add_argument("--define", type=_define, action="append", default=[],
                       metavar="PARAM=EXPR", help="a family parameter as an expression of your "
                       "own, e.g. --define sigma=exp(s); then differentiate w.r.t. s")
        p.add_argument("--dim", type=_dim, metavar="D", help="the dimension of a vector family "
                       "(mvnormal_diag, mvnormal, dirichlet), or the number of independent "
                       "components of a scalar family (mean-field, e.g. gamma --dim 3); f is "
                       "then gaussian_decoder, bernoulli_decoder or an expression of z[0] .. "
                       "z[D-1]")

    d = sub.add_parser("derive", help="symbolic results and the derivation steps")
    problem_args(d)
    d.add_argument("--latex", action="store_true", help="print the derivations as LaTeX")

    c = sub.add_parser("check", help="exact gradient vs both estimators by Monte Carlo")
    problem_args(c)
    c.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                   help="a value for a parameter or another symbol of f (repeat)")
    c.add_argument("--samples", type=_samples, default=DEFAULT_SAMPLES)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--false-failure-rate", type=float, default=DEFAULT_RATE,
                   help="chance that a correct estimator is reported as disagreeing, per "
                        "comparison (default 1e-6)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--baseline", default="none", metavar="{none,constant=V,optimal,delta}",
                   help="also run the score-function estimator with a constant baseline V, "
                        "the optimal constant baseline, or the delta-method control variate")
    c.add_argument("--mvd", nargs="?", const="coupled", choices=("coupled", "uncoupled"),
                   help="also run the measure-valued derivative estimator (normal family; "
                        "coupled by default), JSON key \"measure_valued\"")
    c.add_argument("--data", metavar="FILE.npz", help="vector decoders: arrays W (D, d), c, x")
    c.add_argument("--obs-dim", type=_dim, metavar="D", help="vector decoders without --data: "
                   "the dimension of synthetic x (default 16)")
    c.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic decoder data")

    m = sub.add_parser("demo", help="the lecture's scenario: score function vs pathwise")
    m.add_argument("--samples", type=_samples, default=100_000)
    m.add_argument("--seed", type=int, default=0)
    d.set_defaults(run=_cmd_derive)
    c.set_defaults(run=_cmd_check)
    m.set_defaults(run=_cmd_demo)
    for module in _plugin_commands():
        module.register(sub, problem_args)
    return top


def _plugin_commands():
    """Command modules that register their own subparser: ``register(subparsers, problem_args)``
    adds a parser with ``set_defaults(run=fn)``; ``fn(args) -> exit status``."""
    import importlib
    out = []
    for name in ("_cmd_codegen", "_cmd_verify"):
        try:
            out.append(importlib.import_module(f"mcgrad.{name}"))
        except ModuleNotFoundError as err:
            if err.name != f"mcgrad.{name}":
                raise
    return out


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (derive.DeriveError, numeric.NumericError, UsageError) as err:
        print(f"mcgrad {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine's, not ours: a full disk, a read-only directory
        print(f"mcgrad {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug of ours, not the user's input
        if os.environ.get("MCGRAD_DEBUG"):
            raise
        print(f"mcgrad {args.command}: internal error ({type(err).__name__}: {err}). This is a "
              f"bug in mcgrad, not a problem with your input; please report it with the command "
              f"line (MCGRAD_DEBUG=1 shows the traceback).", file=sys.stderr)
        return 3


def _defines(args):
    out = {}
    for name, expr in args.define:
        if name in out:
            raise UsageError(f"--define {name} is given twice")
        out[name] = expr
    return out


def _dim(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _vector_args(args) -> bool:
    """True for a vector family (and its options are consistent); UsageError otherwise."""
    from ._check_vector import is_vector
    vector = is_vector(args.family, args.dim)
    extra = [o for o, v in (("--data", getattr(args, "data", None)),
                            ("--obs-dim", getattr(args, "obs_dim", None))) if v is not None]
    if not vector and extra:
        raise UsageError(f"{extra[0]} is for the vector families (mvnormal_diag, mvnormal, "
                         f"dirichlet), not {args.family}")
    if vector and args.define:
        raise UsageError("--define is not supported for vector families")
    if vector and getattr(args, "baseline", None) not in (None, "none", False):
        raise UsageError("--baseline is not supported for vector families")
    if vector and getattr(args, "mvd", None):
        raise UsageError("--mvd is not supported for vector families")
    return vector


def _cmd_derive(args) -> int:
    if _vector_args(args):
        from ._check_vector import derive_text
        print(derive_text(args.family, args.dim, args.f))
        return 0
    s = setup(args.family, args.f, wrt=args.wrt, define=_defines(args))
    a = derive.analyze(s.problem)
    out = [f"problem: {s.problem}", f"sampler: {s.family.sampler_text}",
           f"E_q[f] = {_show(a.expectation)}", ""]
    for j, w in enumerate(s.problem.wrt):
        out.append(f"d/d{w} E_q[f] = {_show(a.gradient[w])}")
        for kind, est in a.estimators.items():
            if not est.applies:
                out.append(f"  {kind}: refused: {est.refused}")
                continue
            law = (f"{est.variable} ~ q" if kind == "score" or s.family.implicit else
                   s.family.base.text.replace("eps", str(est.variable), 1))
            out.append(f"  {kind} estimator h = {sp.sstr(est.components[j])}   ({law})")
            out.append(f"  {kind} per-sample variance = {_show(a.variances[kind][j])}")
        for d in a.steps[w]:
            out.append(d.latex() if args.latex else d.text())
        out.append("")
    print("\n".join(out).rstrip())
    return 0


def _show(ex) -> str:
    if ex.expr is not None:
        cond = f"   (valid where {', '.join(map(str, ex.conditions))})" if ex.conditions else ""
        return f"{sp.sstr(ex.expr)}   [{ex.method}]{cond}"
    if ex.infinite:
        return f"does not exist: {ex.missing}"
    return "no closed form; mcgrad check computes it by quadrature at given values"


def _cmd_check(args) -> int:
    params = {}
    for name, value in args.param:
        if name in params:
            raise UsageError(f"--param {name} is given twice")
        params[name] = value
    if not 0 < args.false_failure_rate < 0.5:
        raise UsageError("--false-failure-rate must be between 0 and 0.5, e.g. 1e-6")
    if _vector_args(args):
        from ._check_vector import check as check_vector
        report = check_vector(args.family, args.dim, args.f, params, wrt=args.wrt,
                              samples=args.samples, seed=args.seed,
                              false_failure_rate=args.false_failure_rate, data_path=args.data,
                              obs_dim=args.obs_dim, data_seed=args.data_seed)
        notes = report.pop("_notes")
        print(json.dumps(report, indent=1) if args.json else
              _table(report, notes, args.false_failure_rate))
        return verdict(report)
    report = check(args.family, args.f, params, wrt=args.wrt, samples=args.samples,
                   seed=args.seed, false_failure_rate=args.false_failure_rate,
                   define=_defines(args), baseline=args.baseline, mvd=args.mvd)
    notes = report.pop("_notes")
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(_table(report, notes, args.false_failure_rate))
    return verdict(report)


def _fmt(x, spec=".6g"):
    return "-" if x is None else format(x, spec)


def _table(report, notes, rate) -> str:
    lines = [f"{report['family']}({', '.join(f'{k}={v:g}' for k, v in report['params'].items())})"
             f", f = {report['f']}, {report['samples']:,} samples, seed {report['seed']}", ""]
    head = (f"{'':10}{'estimator':10}{'exact':>14}{'mean':>14}{'std. error':>12}"
            f"{'variance':>13}{'var. exact':>13}  agrees")
    lines.append(head)
    for w, entry in report["gradient"].items():
        lines.append(f"d/d{w:<7}{'':10}{_fmt(entry['exact']):>14}   [{entry['exact_method']}]")
        for kind in ("score", "pathwise", "score_baseline", "measure_valued"):
            if kind not in entry:
                continue
            row = entry[kind]
            label = kind if kind != "score_baseline" else \
                {"constant": "baseline", "optimal": "optimal b"}.get(row["baseline"], "delta")
            if kind == "measure_valued":
                label = "MVD" + (" coupl." if row["coupled"] else " indep.")
            if row.get("method") == "implicit":  # pathwise through dz/dphi = -(dF/dphi)/q
                label = "implicit"
            if "refused" in row:
                lines.append(f"{'':10}{label:10}  refused: {row['refused']}")
                continue
            agrees = {True: "yes", False: "NO", None: "-"}[row["agrees"]]
            lines.append(f"{'':10}{label:10}{'':>14}{_fmt(row['mean']):>14}"
                         f"{_fmt(row['stderr'], '.3g'):>12}{_fmt(row['variance'], '.5g'):>13}"
                         f"{_fmt(row['variance_exact'], '.5g'):>13}  {agrees}")
            if kind == "score_baseline":
                lines.append(_baseline_line(row))
    lines += ["", f"agrees: |mean - exact| <= z*SE with a false-failure rate of {rate:g} per "
                  f"comparison"]
    lines += [f"note: {n}" for n in notes]
    failed = verdict(report)
    lines.append("some estimate DISAGREES with the exact gradient" if failed else
                 "every estimate agrees with the exact gradient where it exists")
    return "\n".join(lines)


def _baseline_line(row) -> str:
    used = (f"expansion about z = {_fmt(row['expansion_point'])}" if "expansion_point" in row
            else f"b = {_fmt(row['value'], '.10g')}")
    factor = row["variance_reduction"]
    cut = ("the variance falls to 0" if factor is None and row["variance_exact"] == 0 else
           f"the score-function variance divided by {_fmt(factor, '.3g')}")
    return f"{'':20}{used}: {cut}"


def _cmd_demo(args) -> int:
    from ._demo import run
    text, code = run(samples=args.samples, seed=args.seed)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
