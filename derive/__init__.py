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
from ._discrete import CATALOG as DISCRETE_CATALOG
from ._discrete import DiscreteFamily
from ._discrete import family_name as discrete_family_name
from ._errors import DeriveError
from ._estimators import (ESTIMATORS, Estimator, Exact, Problem, exact_gradient, expectation,
                          pathwise, problem, score_function, to_base, variances)
from ._expectation import Closed, MomentError, closed_form
from ._families import CATALOG, Constraint, Family, family
from ._implicit import CATALOG as IMPLICIT_CATALOG
from ._implicit import ImplicitFamily, dz_dw
from ._dirichlet import DirichletFamily
from ._meanfield import MEANFIELD_FAMILIES, MeanFieldFamily, meanfield_family
from ._mvd import MeasureValued, MomentsAt, measure_valued
from ._mvd import identities as mvd_identities
from ._mvd import moments as mvd_moments
from ._mvd import moments_at as mvd_moments_at
from ._numbers import evaluate, exact_number
from ._numpy import numpy_estimator, parameter_names, stable
from ._parse import ExpressionError, parse_expression
from ._quadrature import probe_integrability, quad_expectation
from ._steps import Derivation, Step, log_derivative_trick, reparameterization
from ._symbols import EPS, Z, user_symbol
from ._user import declared_symbols, parse
from ._values import Number, gradient_at, variance_at
from ._vector import (VECTOR_FAMILIES, VectorFamily, VectorProblem, matrix_derivation,
                      vector_estimator, vector_exact, vector_family, vector_module,
                      vector_problem, verify_matrix_forms)
from ._verify import Verification, verify_claim, verify_estimator

__all__ = [
    # problems, families and their catalogs
    "Base", "CATALOG", "Constraint", "DISCRETE_CATALOG", "DiscreteFamily", "EPS",
    "Family", "IMPLICIT_CATALOG", "ImplicitFamily", "Problem", "Z", "declared_symbols",
    "discrete_family_name", "family", "parse", "parse_expression", "problem", "user_symbol",
    # analysis: exact values, estimators, variances, derivations
    "Analysis", "Closed", "Derivation", "ESTIMATORS", "Estimator", "Exact", "Number", "Step",
    "Values", "analyze", "closed_form", "dz_dw", "evaluate", "exact_gradient", "exact_number",
    "expectation", "gradient_at", "log_derivative_trick", "pathwise", "probe_integrability",
    "quad_expectation", "reparameterization", "score_function", "to_base", "variance_at",
    "variances",
    # variance reduction and measure-valued derivatives
    "MeasureValued", "MomentsAt", "delta_method", "measure_valued", "mvd_identities",
    "mvd_moments", "mvd_moments_at", "optimal_baseline", "optimal_baseline_at",
    "optimal_score_baseline", "score_baseline",
    # vector latents: Gaussians, the Dirichlet, mean-field products of scalar families
    "DirichletFamily", "MEANFIELD_FAMILIES", "MeanFieldFamily", "VECTOR_FAMILIES",
    "VectorFamily", "VectorProblem", "matrix_derivation", "meanfield_family", "vector_estimator",
    "vector_exact", "vector_family", "vector_module", "vector_problem", "verify_matrix_forms",
    # code, verification
    "Verification", "generate_module", "numpy_estimator", "parameter_names", "stable",
    "verify_claim", "verify_estimator",
    # errors and budgets
    "DeriveError", "ExpressionError", "MomentError", "OutOfTime", "time_budget",
]
