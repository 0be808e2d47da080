"""Numeric runtime of mcgrad: stream Monte Carlo estimates and check them against references.

NumPy only; this package never imports SymPy. See ``DESIGN.md`` beside this file.

For test suites (imported on demand, not here): :mod:`numeric.testing` (``assert_unbiased``,
``assert_variance``, ``assert_unbiased_sequential``: statistical assertions at a stated
false-failure rate), :mod:`numeric.strategies` (Hypothesis strategies: seeds, valid parameters of
every family, integrands, problems) and the opt-in pytest plugin :mod:`numeric.pytest_plugin`.
"""

from ._agree import agrees
from ._agree import variance_agrees
from ._agree import z_for_rate
from ._errors import NumericError
from ._estimate import DEFAULT_CHUNK_SIZE
from ._estimate import Estimate
from ._estimate import estimate
from ._tails import variance_is_stable

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Estimate",
    "NumericError",
    "agrees",
    "estimate",
    "variance_agrees",
    "variance_is_stable",
    "z_for_rate",
]
