"""User text to SymPy, through the safe parser (never eval)."""

import re

import sympy as sp

from ._errors import DeriveError
from ._families import Family
from ._parse import ALLOWED_FUNCTIONS, CONSTANTS, ExpressionError, parse_expression
from ._symbols import Z, user_symbol

_NAME = re.compile(r"(?<![A-Za-z0-9_.])[A-Za-z][A-Za-z0-9_]*")


def declared_symbols(text: str, family: Family, extra=()) -> dict:
    """z, the family's symbols, ``extra`` names, and any other identifier of ``text`` that is not
    a function or constant (data such as x), each as the symbol derivations use."""
    symbols = {s.name: s for s in family.symbols}
    symbols.update({p.name: p for p in family.params if p in family.theta})
    for name in list(extra) + _NAME.findall(text):
        if name not in symbols and name not in ALLOWED_FUNCTIONS and name not in CONSTANTS \
                and name != "z":
            symbols[name] = user_symbol(name)
    symbols["z"] = Z
    return symbols


def parse(text: str, family: Family, *, extra=(), what: str = "f") -> sp.Expr:
    """Parse user text for an integrand or a claim about ``family``; raises ExpressionError."""
    if not isinstance(text, str):
        raise DeriveError(f"{what} must be text such as 'cos(2*z)', not {type(text).__name__}")
    return parse_expression(text, declared_symbols(text, family, extra), what=what)
