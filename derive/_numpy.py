"""NumPy functions for derived estimators: ``fn(rng, n, **params) -> (n, k)``.

One code path: the function is the one :func:`derive.generate_module` writes into a module
(:func:`derive._codegen.estimator_source`), compiled in memory. It draws the base noise in one
call, so :func:`numeric.estimate` gives the same result for any chunk size, and prints unstable
forms stably: log(1 + exp(u)) as logaddexp(0, u) (log1p(exp(800)) is inf) and exp(u)/(1 + exp(u))
as expit(u).
"""

from . import _discrete, _implicit
from ._codegen import estimator_source, sigmoid, softplus, stable
from ._estimators import Estimator

__all__ = ["numpy_estimator", "parameter_names", "sigmoid", "softplus", "stable"]


def parameter_names(est: Estimator) -> tuple:
    """The keyword arguments the NumPy function takes: the family's symbols, then the other
    symbols of f, as in the generated module's ``PARAMETERS``."""
    return _source(est, "float64")[2]


def _source(est, dtype):
    if est.kind == "measure_valued":  # several noise variables per sample: derive/_mvd.py
        from . import _mvd
        return _mvd.estimator_source(est, dtype=dtype)
    if est.problem.family.discrete:  # z drawn directly: derive/_discrete.py
        return _discrete.estimator_source(est, dtype=dtype)
    if est.problem.family.implicit:  # z drawn directly, dz/dphi from the CDF: derive/_implicit.py
        return _implicit.estimator_source(est, dtype=dtype)
    return estimator_source(est, dtype=dtype)


def numpy_estimator(est: Estimator, *, dtype: str = "float64"):
    """``fn(rng, n, **params)`` returning the (n, k) per-sample estimates of ``est``.

    ``fn.parameters`` names its keyword arguments and ``fn.source`` is the generated source.
    Raises ValueError (a DeriveError) when the estimator does not apply.
    """
    source, name, names = _source(est, dtype)
    namespace = {"__name__": f"mcgrad_generated_{est.kind}"}
    exec(compile(source, f"<mcgrad {est.kind} estimator>", "exec"), namespace)  # generated code
    fn = namespace[name]
    fn.__name__ = f"{est.kind}_{est.problem.family.name}"
    fn.parameters = names
    fn.source = source
    return fn
