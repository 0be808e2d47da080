"""derive: gradient estimators of grad_phi E_{q(z; phi)}[f(z)] derived symbolically with SymPy.

    >>> import derive
    >>> from derive import Z
    >>> p = derive.problem(derive.family("normal"), derive.parse("cos(2*z)", derive.family("normal")))
    >>> a = derive.analyze(p)
    >>> a.gradient[p.wrt[0]].expr
    -2*exp(-2*sigma**2)*sin(2*mu)

Nothing here imports :mod:`numeric`; the command line joins the two.
"""

from ._analysis import Analysis, Values, analyze
from ._bases import Base
from ._budget import OutOfTime, time_budget
from ._errors import DeriveError
from ._estimators import (ESTIMATORS, Estimator, Exact, Problem, exact_gradient, expectation,
                          pathwise, problem, score_function, to_base, variances)
from ._expectation import Closed, MomentError, closed_form
from ._families import CATALOG, Constraint, Family, family
from ._numbers import evaluate, exact_number
from ._numpy import numpy_estimator, parameter_names, stable
from ._parse import ExpressionError, parse_expression
from ._quadrature import quad_expectation
from ._steps import Derivation, Step, log_derivative_trick, reparameterization
from ._symbols import EPS, Z, user_symbol
from ._user import declared_symbols, parse
from ._values import Number, gradient_at, variance_at

__all__ = [
    "Analysis", "Base", "CATALOG", "Closed", "Constraint", "Derivation", "DeriveError", "EPS",
    "ESTIMATORS", "Estimator", "Exact", "ExpressionError", "Family", "MomentError", "Number",
    "OutOfTime", "Problem", "Step", "Values", "Z", "analyze", "closed_form", "declared_symbols", "evaluate",
    "exact_gradient", "exact_number", "expectation", "family", "gradient_at",
    "log_derivative_trick", "numpy_estimator", "parameter_names", "parse", "parse_expression",
    "pathwise", "problem", "quad_expectation", "reparameterization", "score_function", "stable",
    "time_budget", "to_base", "user_symbol", "variance_at", "variances",
]
