"""Exact and high-precision evaluation of symbolic results at given parameter values.

Float substitution into long expressions cancels catastrophically (the unsimplified pathwise
variance of cos(kx) evaluates to ~0 instead of 12.5 in float64), so values are substituted as
exact rationals and evaluated with SymPy's adaptive-precision ``evalf``.
"""

from fractions import Fraction
from typing import Mapping

import mpmath
import sympy as sp

from ._errors import DeriveError

DIGITS = 30


def exact_number(value) -> sp.Rational:
    """A user's number as an exact rational: 0.3 -> 3/10 (from its shortest decimal repr)."""
    if isinstance(value, sp.Basic):
        if value.is_Rational:
            return value
        if value.is_number:
            return sp.Rational(str(sp.N(value, DIGITS)))
        raise DeriveError(f"{value} is not a number")
    if isinstance(value, bool):
        raise DeriveError(f"{value!r} is not a number")
    if isinstance(value, int):
        return sp.Integer(value)
    if isinstance(value, Fraction):
        return sp.Rational(value.numerator, value.denominator)
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DeriveError(f"{value!r} is not a number") from None
    if not mpmath.isfinite(f):
        raise DeriveError(f"{value!r} is not a finite number")
    return sp.Rational(repr(f))


def exact_values(values: Mapping) -> dict:
    """Map symbols to exact rationals."""
    return {s: exact_number(v) for s, v in values.items()}


def evaluate(expr: sp.Expr, values: Mapping, *, digits: int = DIGITS) -> mpmath.mpf:
    """expr at exact values, to ``digits`` significant digits, as an mpmath number.

    Raises DeriveError when a symbol has no value, or the value is not a finite real number.
    """
    expr = sp.sympify(expr)
    filled = expr.xreplace(exact_values(values))
    missing = sorted(str(s) for s in filled.free_symbols)
    if missing:
        raise DeriveError(f"no value for {', '.join(missing)}",
                          context=f"evaluating {sp.sstr(expr)}")
    number = filled.evalf(digits)
    re, im = number.as_real_imag()
    if not (re.is_finite and im.is_finite):
        raise DeriveError(f"{sp.sstr(expr)} is not finite at these values")
    if im != 0 and abs(im) > 10 ** (-digits // 2) * (1 + abs(re)):
        raise DeriveError(f"{sp.sstr(expr)} is not real at these values ({number})")
    with mpmath.workdps(digits):
        return mpmath.mpf(str(re))


def holds(condition, values: Mapping) -> bool | None:
    """Whether a condition on the parameters holds at the values (None: cannot tell)."""
    if condition in (sp.true, True):
        return True
    if condition in (sp.false, False):
        return False
    filled = condition.xreplace(exact_values(values))
    try:
        result = filled.doit()
        if result in (sp.true, sp.false):
            return bool(result)
        lhs, rhs = filled.lhs.evalf(DIGITS), filled.rhs.evalf(DIGITS)
        return bool(type(filled)(lhs, rhs))
    except (TypeError, AttributeError):
        return None
