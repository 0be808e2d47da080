"""`mcgrad verify`: decide whether a claimed gradient, or a claimed per-sample estimator, is right.

    $ mcgrad verify normal --f "z**4" --wrt mu --claim "3*mu**3 + 12*mu*sigma**2"
    REFUTED: d/dmu E[z**4] is 4*mu**3 + 12*mu*sigma**2; the claim differs by -mu**3 (claim minus
    exact; at mu=1, sigma=1: claim 15, exact 16)

Exit status: 0 confirmed, 1 refuted, 2 bad input or undecided (nothing could be compared).
"""

import json

from derive._verify import verify_claim, verify_estimator

from ._check import setup

EXIT = {"confirmed": 0, "refuted": 1, "undecided": 2}

_HELP = ("decide whether a claimed gradient (--claim) or per-sample estimator (--estimator) is "
         "right: symbolically, else exactly at many points, else by quadrature")
_ONE_WRT = ("--{option} is one derivative, but {names} were named; give one parameter, e.g. "
            "--wrt {first}")
_NEED_WRT = ("{family} has parameters {names}; name the one the {option} differentiates with "
             "--wrt, e.g. --wrt {first}")


def register(subparsers, problem_args):
    """Add the ``verify`` command to the ``mcgrad`` parser."""
    from .cli import _param
    p = subparsers.add_parser("verify", help=_HELP, description=_HELP + ". Exit status 0 "
                              "confirmed, 1 refuted, 2 bad input or undecided.")
    problem_args(p)
    claim = p.add_mutually_exclusive_group(required=True)
    claim.add_argument("--claim", metavar="EXPR", help="the claimed gradient d/dwrt E_q[f] in "
                       "the parameters, e.g. '4*mu**3 + 12*mu*sigma**2' (write "
                       "--claim=-2/lam**3 when it starts with a minus sign)")
    claim.add_argument("--estimator", metavar="EXPR", help="a claimed per-sample estimator h, "
                       "in z (z ~ q) or in the base noise eps (z = g(eps)), checked for "
                       "unbiasedness: E_q[h] = d/dwrt E_q[f]; e.g. 'z**4*(z - mu)/sigma**2'")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                   help="a value for every symbol (repeat): the point compared first, and the "
                        "only one when quadrature is needed")
    p.add_argument("--seed", type=int, default=0, help="seed of the random comparison points")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    """Verify, print the one-line verdict (or JSON), return 0/1/2."""
    from .cli import UsageError, _defines
    params = {}
    for name, value in args.param:
        if name in params:
            raise UsageError(f"--param {name} is given twice")
        params[name] = value
    option = "claim" if args.claim is not None else "estimator"
    s = setup(args.family, args.f, wrt=args.wrt, define=_defines(args),
              params=params or None)
    wrt = _one_wrt(args, s, option, UsageError)
    values = {k.name: v for k, v in s.values.items()} or None
    if option == "claim":
        result = verify_claim(s.problem, wrt, args.claim, values=values, seed=args.seed)
    else:
        result = verify_estimator(s.problem, wrt, args.estimator, values=values,
                                  seed=args.seed)
    print(json.dumps(as_json(result), indent=1) if args.json else result.text())
    return EXIT[result.verdict]


def _one_wrt(args, s, option, UsageError):
    names = [w.name for w in s.problem.wrt]
    if len(names) == 1:
        return names[0]
    if args.wrt:
        raise UsageError(_ONE_WRT.format(option=option, names=", ".join(names), first=names[0]))
    raise UsageError(_NEED_WRT.format(family=args.family, option=option,
                                      names=", ".join(names), first=names[0]))


def as_json(result) -> dict:
    """The verdict as JSON-ready data (expressions as text, numbers as floats)."""
    def text(e):
        return None if e is None else str(e)

    def number(v):
        return None if v is None else float(v)

    return {"verdict": result.verdict, "method": result.method, "subject": result.subject,
            "wrt": result.wrt.name, "claim": text(result.claim), "claimed": text(result.claimed),
            "exact": text(result.exact), "difference": text(result.difference),
            "point": {s.name: str(v) for s, v in result.point.items()},
            "claimed_value": number(result.claimed_value),
            "exact_value": number(result.exact_value), "tolerance": result.tolerance,
            "points": result.points, "conditions": [str(c) for c in result.conditions],
            "reason": result.reason}
