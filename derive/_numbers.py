"""Exact and high-precision evaluation of symbolic results at given parameter values.

Float substitution into long expressions cancels catastrophically (the unsimplified pathwise
variance of cos(kx) evaluates to ~0 instead of 12.5 in float64), so values are substituted as
exact rationals and evaluated with SymPy's adaptive-precision ``evalf``.
"""

from fractions import Fraction
from functools import lru_cache
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
    number = _by_mpmath(expr, exact_values(values), digits)
    if number is None:
        number = filled.evalf(digits)
        re, im = number.as_real_imag()
        if not (re.is_finite and im.is_finite):
            raise DeriveError(f"{sp.sstr(expr)} is not finite at these values")
        with mpmath.workdps(digits):
            number = mpmath.mpc(str(re), str(im))
    with mpmath.workdps(digits):
        re, im = mpmath.mpf(number.real), mpmath.mpf(number.imag)
        if im != 0 and abs(im) > mpmath.mpf(10) ** (-digits // 2) * (1 + abs(re)):
            raise DeriveError(f"{sp.sstr(expr)} is not real at these values "
                              f"({mpmath.nstr(number, 15)})")
        return +re


def _by_mpmath(expr, values, digits):
    """expr at the exact values with 2*digits and with 3*digits working precision, if the two
    agree to ``digits`` significant digits (so cancellation lost fewer than ``digits`` digits);
    else None. Much faster than ``evalf`` for long closed forms with gamma and polygamma of
    complex arguments (logistic and Gumbel characteristic functions), which evalf takes minutes
    over. The symbols are arguments (not substituted) so that printing does not evalf."""
    symbols = tuple(sorted(expr.free_symbols, key=str))
    try:
        fn = _mpmath_function(expr, symbols)
        results = []
        for dps in (2 * digits, 3 * digits):
            with mpmath.workdps(dps):
                args = [mpmath.mpf(values[s].p) / values[s].q for s in symbols]
                results.append(mpmath.mpmathify(fn(*args)))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError,
            NameError, SyntaxError, RecursionError, KeyError):
        return None
    low, high = results
    with mpmath.workdps(3 * digits):
        if not (mpmath.isfinite(low) and mpmath.isfinite(high)) or high == 0:
            return None
        if abs(low - high) > mpmath.mpf(10) ** -digits * abs(high):
            return None
        return mpmath.mpc(high)


@lru_cache(maxsize=512)
def _mpmath_function(expr, symbols):
    return sp.lambdify(symbols, expr, modules="mpmath")


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
