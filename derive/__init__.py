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
from ._baselines import (delta_method, optimal_baseline, optimal_baseline_at,
                         optimal_score_baseline, score_baseline)
from ._budget import OutOfTime, time_budget
from ._codegen import generate_module
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
from ._verify import Verification, verify_claim, verify_estimator

__all__ = [
    "Analysis", "Base", "CATALOG", "Closed", "Constraint", "Derivation", "DeriveError", "EPS",
    "ESTIMATORS", "Estimator", "Exact", "ExpressionError", "Family", "MomentError", "Number",
    "OutOfTime", "Problem", "Step", "Values", "Z", "analyze", "closed_form", "declared_symbols", "evaluate",
    "exact_gradient", "exact_number", "expectation", "family", "gradient_at",
    "log_derivative_trick", "numpy_estimator", "parameter_names", "parse", "parse_expression",
    "pathwise", "problem", "quad_expectation", "reparameterization", "score_function", "stable",
    "time_budget", "to_base", "user_symbol", "variance_at", "variances",
    "delta_method", "optimal_baseline", "optimal_baseline_at", "optimal_score_baseline",
    "score_baseline", "generate_module", "Verification", "verify_claim", "verify_estimator",
]

from ._vector import (VECTOR_FAMILIES, VectorFamily, VectorProblem, matrix_derivation,  # noqa: E402
                      vector_estimator, vector_exact, vector_family, vector_module,
                      vector_problem, verify_matrix_forms)

__all__ += ["VECTOR_FAMILIES", "VectorFamily", "VectorProblem", "matrix_derivation",
            "vector_estimator", "vector_exact", "vector_family", "vector_module",
            "vector_problem", "verify_matrix_forms"]

from ._discrete import CATALOG as DISCRETE_CATALOG  # noqa: E402
from ._discrete import DiscreteFamily, family_name as discrete_family_name  # noqa: E402

__all__ += ["DISCRETE_CATALOG", "DiscreteFamily", "discrete_family_name"]

from ._implicit import CATALOG as IMPLICIT_CATALOG  # noqa: E402
from ._implicit import ImplicitFamily, dz_dw  # noqa: E402

__all__ += ["IMPLICIT_CATALOG", "ImplicitFamily", "dz_dw"]

from ._mvd import MeasureValued, MomentsAt, measure_valued  # noqa: E402
from ._mvd import identities as mvd_identities, moments as mvd_moments  # noqa: E402
from ._mvd import moments_at as mvd_moments_at  # noqa: E402

__all__ += ["MeasureValued", "MomentsAt", "measure_valued", "mvd_identities", "mvd_moments",
            "mvd_moments_at"]
