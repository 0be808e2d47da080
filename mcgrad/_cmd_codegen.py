"""`mcgrad codegen`: write a standalone NumPy module of the estimators for one problem.

    mcgrad codegen normal --f "-(x - z)**2/2" --wrt mu,sigma -o gaussian_elbo_grads.py

Without -o the module is printed. -o refuses to overwrite a file unless --force is given, and
writes through a temporary file in the same directory, renamed into place only once the whole
module has been generated, so a failed generation leaves no partial file.
"""

import os
import shlex
import sys
import tempfile

from derive._codegen import DTYPES, generate_module

from . import __version__
from ._check import setup


def register(subparsers, problem_args):
    """Add the ``codegen`` subcommand (called by :mod:`mcgrad.cli`)."""
    p = subparsers.add_parser(
        "codegen", help="write a standalone NumPy module: sampler, estimators, exact gradient",
        description="Generate one readable Python module that needs only NumPy (and "
                    "scipy.special where a special function requires it): sample, "
                    "score_function, pathwise, exact_gradient and variance.")
    problem_args(p)
    p.add_argument("-o", "--output", metavar="PATH",
                   help="write the module to PATH (default: print it)")
    p.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    p.add_argument("--dtype", choices=DTYPES, default="float64",
                   help="precision of the samples and per-sample estimates (float32 halves "
                        "the memory traffic)")
    p.add_argument("--baseline", action="store_true",
                   help="also write score_function_baseline (the score function with the "
                        "optimal constant baseline b*, where b* has a closed form) and "
                        "optimal_baseline")
    p.add_argument("--mvd", action="store_true",
                   help="also write measure_valued, the coupled measure-valued derivative "
                        "estimator (normal family), and its exact per-sample variances")
    p.set_defaults(run=run)


def command_line(args) -> str:
    """The canonical command for the module's header (without -o and --force, so that the
    module does not depend on where it is written)."""
    words = ["mcgrad", "codegen", args.family, "--f", args.f]
    if getattr(args, "dim", None) is not None:
        words += ["--dim", str(args.dim)]
    if args.wrt:
        words += ["--wrt", ",".join(args.wrt)]
    for name, expr in args.define:
        words += ["--define", f"{name}={expr}"]
    if args.dtype != "float64":
        words += ["--dtype", args.dtype]
    if args.baseline:
        words += ["--baseline"]
    if getattr(args, "mvd", False):
        words += ["--mvd"]
    return shlex.join(words)


def run(args) -> int:
    from .cli import UsageError, _defines
    if args.output and os.path.exists(args.output) and not args.force:
        raise UsageError(f"{args.output} exists; pass --force to overwrite it")
    if args.output:
        folder = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(folder):
            raise UsageError(f"cannot write {args.output}: the directory {folder} does not exist")
    from .cli import _vector_args
    if _vector_args(args):
        from derive._vector import vector_module
        from ._check_vector import problem
        if args.mvd:
            raise UsageError("--mvd is not supported for vector families")
        if args.wrt:
            raise UsageError("--wrt is not supported by codegen for vector families: the module "
                             "returns every scalar parameter's column (see WRT)")
        source = vector_module(problem(args.family, args.dim, args.f), dtype=args.dtype,
                               command=command_line(args), version=__version__)
    else:
        s = setup(args.family, args.f, wrt=args.wrt, define=_defines(args))
        source = generate_module(s.problem, dtype=args.dtype, command=command_line(args),
                                 version=__version__, baseline=args.baseline, mvd=args.mvd)
    if not args.output:
        sys.stdout.write(source)
        return 0
    _write(args.output, source)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _write(path, text):
    """Write ``text`` to ``path`` atomically: a temporary file in the same directory, then
    os.replace, so that readers never see a partial module."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".mcgrad-codegen-", suffix=".py", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
