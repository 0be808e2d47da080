"""The canonical symbols: the sample z and the base noise of each kind of support."""

import sympy as sp

Z = sp.Symbol("z", real=True)
"""A draw of the family, z ~ q(z; phi)."""

EPS = sp.Symbol("epsilon", real=True)
"""Base noise on the whole real line (Normal, Laplace, Logistic, Gumbel, Cauchy)."""

EPS_POS = sp.Symbol("epsilon", positive=True)
"""Base noise on (0, oo) (standard exponential) or (0, 1) (standard uniform)."""


def user_symbol(name: str) -> sp.Symbol:
    """The symbol for a name of the user's (a parameter phi or data such as x): real-valued."""
    return sp.Symbol(name, real=True)
