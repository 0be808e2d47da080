"""NumPy functions for derived estimators: ``fn(rng, n, **params) -> (n, k)``.

One code path: the function is the one :func:`derive.generate_module` writes into a module
(:func:`derive._codegen.estimator_source`), compiled in memory. It draws the base noise in one
call, so :func:`numeric.estimate` gives the same result for any chunk size, and prints unstable
forms stably: log(1 + exp(u)) as logaddexp(0, u) (log1p(exp(800)) is inf) and exp(u)/(1 + exp(u))
as expit(u).
"""

from ._codegen import estimator_source, sigmoid, softplus, stable
from ._estimators import Estimator

__all__ = ["numpy_estimator", "parameter_names", "sigmoid", "softplus", "stable"]


def parameter_names(est: Estimator) -> tuple:
    """The keyword arguments the NumPy function takes: the family's symbols, then the other
    symbols of f, as in the generated module's ``PARAMETERS``."""
    return estimator_source(est)[2]


def numpy_estimator(est: Estimator, *, dtype: str = "float64"):
    """``fn(rng, n, **params)`` returning the (n, k) per-sample estimates of ``est``.

    ``fn.parameters`` names its keyword arguments and ``fn.source`` is the generated source.
    Raises ValueError (a DeriveError) when the estimator does not apply.
    """
    source, name, names = estimator_source(est, dtype=dtype)
    namespace = {"__name__": f"mcgrad_generated_{est.kind}"}
    exec(compile(source, f"<mcgrad {est.kind} estimator>", "exec"), namespace)  # generated code
    fn = namespace[name]
    fn.__name__ = f"{est.kind}_{est.problem.family.name}"
    fn.parameters = names
    fn.source = source
    return fn
