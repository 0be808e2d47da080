"""Safe parser for user-typed expressions (integrands, claims, ...).

User text is **never evaluated as Python**: ``sympify``/``parse_expr`` call
``eval`` and have been escaped through ``().__class__.__bases__``.  Instead the
text is parsed with :func:`ast.parse` and the resulting tree is checked against a
strict whitelist *before anything is built*; SymPy objects are then constructed
directly from the AST nodes.

Accepted language
-----------------
* integer literals (``|n| <= MAX_INT_LITERAL``) and decimal literals
  (``0.3``, ``1e6``, ``2.5e-3``; magnitude in ``[MIN_FLOAT_LITERAL,
  MAX_FLOAT_LITERAL]`` or zero).  **Decimal literals become exact rationals read
  from their decimal text** (``0.3 -> 3/10``, ``1e6 -> 1000000``), never binary
  floats, so downstream symbolic work does not suffer float cancellation;
* the declared symbols (the ``symbols`` mapping) and the constants ``pi`` and
  ``E`` (Euler's number); a declared symbol shadows a constant of the same name;
* unary ``+``/``-``, binary ``+ - * / **`` and parentheses;
* calls with positional arguments of the functions in :data:`ALLOWED_FUNCTIONS`
  (arity in :data:`FUNCTION_ARITY`).  ``sigmoid``, ``softplus``, ``logsigmoid``
  and ``relu`` are expanded into plain SymPy expressions: ``1/(1 + exp(-x))``,
  ``log(1 + exp(x))``, ``-log(1 + exp(-x))`` and ``Max(0, x)``;
* comparisons ``< <= > >= == !=`` become 0/1 indicators
  ``Piecewise((1, cond), (0, True))``; a chain ``0 < z < 1`` is the product of
  the indicators of its links.

Everything else (attributes, subscripts, strings, lambdas, comprehensions,
keyword arguments, ``and``/``or``/``not``, ``x if c else y``, names starting
with ``_``, ...) is an :class:`ExpressionError` naming the construct.

Resource caps (nothing can hang)
--------------------------------
* Before anything is built: text length, bracket nesting, AST size and depth
  (a flat chain ``a + b - c + ...`` counts as one level), literal sizes and
  literal exponents.
* While building, every symbol-free sub-expression is evaluated with mpmath at
  two precisions (80 and 160 bits; never SymPy's ``evalf``) and must be real,
  finite, within ``1e±MAX_CONSTANT_LOG10`` (or exactly zero) and numerically
  stable.  Comparisons, ``floor``/``ceiling``, ``sign``, ``Heaviside``, ``Abs``,
  ``min``/``max`` of constants are decided from those values (near-ties are
  refused), so SymPy never has to decide them itself.
* Powers are checked before SymPy evaluates them: numeric exponents
  ``|e| <= MAX_EXPONENT``, rational exponents with denominators
  ``<= MAX_ROOT_DENOMINATOR``, no exact number over ``MAX_RATIONAL_BITS``,
  ``exp(k*log(c))`` (which SymPy turns into ``c**k``) obeys the same limits,
  and ``gamma``/``lgamma`` of constants are bounded by ``MAX_SPECIAL_ARGUMENT``.
* Comparisons with a symbolic side are built unevaluated (SymPy's relational
  simplification can take minutes); comparing an indicator again is refused.
* ``1/0``, ``log(0)`` etc. are errors rather than ``zoo``; results containing
  ``zoo``/``nan``/``oo`` or the imaginary unit, or that are conditions rather
  than numbers, are rejected.

These bounds make parse time small for the symbols mcgrad uses (real symbols);
SymPy's assumption system can still be slow on deeply nested functions of
symbols without assumptions.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from types import MappingProxyType
from typing import Callable, Mapping

import mpmath
import sympy
from sympy.functions.elementary.piecewise import ExprCondPair

from ._errors import DeriveError

__all__ = [
    "ALLOWED_FUNCTIONS",
    "CONSTANTS",
    "ExpressionError",
    "FUNCTION_ARITY",
    "MAX_CONSTANT_LOG10",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_FLOAT_LITERAL",
    "MAX_INT_LITERAL",
    "MAX_LENGTH",
    "MAX_NODES",
    "MAX_RATIONAL_BITS",
    "MAX_ROOT_DENOMINATOR",
    "MAX_SPECIAL_ARGUMENT",
    "MIN_FLOAT_LITERAL",
    "parse_expression",
]

MAX_LENGTH = 2000  # characters of input text
MAX_DEPTH = 50  # nesting of brackets and of AST nodes (a flat chain a+b-c+... is one level)
MAX_NODES = 2000  # expression nodes in the AST
MAX_INT_LITERAL = 10**12  # |integer literal|
MAX_FLOAT_LITERAL = 1e300  # |decimal literal| (non-zero ones must also be >= MIN_FLOAT_LITERAL)
MIN_FLOAT_LITERAL = 1e-300
MAX_EXPONENT = 100  # |e| for a numeric (symbol-free) exponent of **
MAX_CONSTANT_LOG10 = 300  # every non-zero constant sub-expression lies in [1e-300, 1e300]
MAX_RATIONAL_BITS = 4096  # bits of numerator/denominator of any exact rational built
MAX_SPECIAL_ARGUMENT = 1000  # |x| for gamma/lgamma of a constant (SymPy evaluates them exactly)
MAX_ROOT_DENOMINATOR = 1000  # q in x**(p/q): SymPy may build polynomials of degree q


class ExpressionError(DeriveError):
    """A user expression was rejected; the message says what, where and how to fix it.

    ``fragment`` is the offending piece of text (or ``None``) and ``column`` its
    0-based character column in the stripped input (or ``None``).
    """

    def __init__(
        self,
        message: str,
        *,
        fragment: str | None = None,
        column: int | None = None,
        context: str | None = None,
    ):
        super().__init__(message, context=context)
        self.fragment = fragment
        self.column = column


# --------------------------------------------------------------------------- whitelist


def _sigmoid(x):
    return sympy.Integer(1) / (1 + sympy.exp(-x))


def _softplus(x):
    return sympy.log(1 + sympy.exp(x))


def _logsigmoid(x):
    return -_softplus(-x)


def _relu(x):
    return sympy.Max(sympy.Integer(0), x)


_UNARY = (1, 1)
_VARIADIC = (2, None)
_FUNCTIONS: dict[str, tuple[Callable[..., sympy.Expr], tuple[int, int | None]]] = {
    "exp": (sympy.exp, _UNARY),
    "log": (sympy.log, _UNARY),
    "sqrt": (sympy.sqrt, _UNARY),
    "sin": (sympy.sin, _UNARY),
    "cos": (sympy.cos, _UNARY),
    "tan": (sympy.tan, _UNARY),
    "sinh": (sympy.sinh, _UNARY),
    "cosh": (sympy.cosh, _UNARY),
    "tanh": (sympy.tanh, _UNARY),
    "asin": (sympy.asin, _UNARY),
    "acos": (sympy.acos, _UNARY),
    "atan": (sympy.atan, _UNARY),
    "abs": (sympy.Abs, _UNARY),
    "Abs": (sympy.Abs, _UNARY),
    "sign": (sympy.sign, _UNARY),
    "Heaviside": (sympy.Heaviside, _UNARY),
    "heaviside": (sympy.Heaviside, _UNARY),
    "step": (sympy.Heaviside, _UNARY),
    "floor": (sympy.floor, _UNARY),
    "ceiling": (sympy.ceiling, _UNARY),
    "erf": (sympy.erf, _UNARY),
    "erfc": (sympy.erfc, _UNARY),
    "gamma": (sympy.gamma, _UNARY),
    "lgamma": (sympy.loggamma, _UNARY),
    "loggamma": (sympy.loggamma, _UNARY),
    "sigmoid": (_sigmoid, _UNARY),
    "softplus": (_softplus, _UNARY),
    "logsigmoid": (_logsigmoid, _UNARY),
    "relu": (_relu, _UNARY),
    "min": (sympy.Min, _VARIADIC),
    "Min": (sympy.Min, _VARIADIC),
    "max": (sympy.Max, _VARIADIC),
    "Max": (sympy.Max, _VARIADIC),
}

#: name -> SymPy callable building the function application.
ALLOWED_FUNCTIONS: Mapping[str, Callable[..., sympy.Expr]] = MappingProxyType(
    {name: fn for name, (fn, _) in _FUNCTIONS.items()}
)
#: name -> (minimum, maximum) number of positional arguments; maximum None = unbounded.
FUNCTION_ARITY: Mapping[str, tuple[int, int | None]] = MappingProxyType(
    {name: arity for name, (_, arity) in _FUNCTIONS.items()}
)
#: names usable as constants (unless shadowed by a declared symbol).
CONSTANTS: Mapping[str, sympy.Expr] = MappingProxyType({"pi": sympy.pi, "E": sympy.E})

_SPECIAL_ARGUMENT_FUNCTIONS = frozenset({"gamma", "lgamma", "loggamma"})
_EXPONENTIAL_FUNCTIONS = frozenset({"exp", "sinh", "cosh", "sigmoid", "softplus", "logsigmoid"})

_NAME_HINTS = {
    "e": "Euler's number is written E (capital), e.g. E**z or exp(z)",
    "ln": "use log(x) for the natural logarithm",
    "arctan": "use atan(x)",
    "arcsin": "use asin(x)",
    "arccos": "use acos(x)",
    "ceil": "use ceiling(x)",
    "inf": "infinite values are not allowed in an expression",
    "oo": "infinite values are not allowed in an expression",
    "nan": "NaN is not allowed in an expression",
    "I": "complex numbers are not supported",
    "j": "complex numbers are not supported",
    "True": "booleans are not numbers here; use 1 or 0",
    "False": "booleans are not numbers here; use 1 or 0",
    "None": "None is not a number",
}

_CONSTRUCTS = {
    ast.Attribute: ("attribute access", "write functions by bare name, e.g. exp(z), not sympy.exp(z) or z.exp()"),
    ast.Subscript: ("subscript/indexing", "indexing is not supported; use a declared symbol"),
    ast.Lambda: ("lambda expressions", "write the expression itself"),
    ast.IfExp: (
        "conditional expressions (a if c else b)",
        "use indicators, e.g. (z > 0)*a + (z <= 0)*b",
    ),
    ast.NamedExpr: ("assignment expressions (:=)", "write the expression itself"),
    ast.ListComp: ("list comprehensions", None),
    ast.SetComp: ("set comprehensions", None),
    ast.DictComp: ("dict comprehensions", None),
    ast.GeneratorExp: ("generator expressions", None),
    ast.List: ("lists", None),
    ast.Tuple: ("tuples", "function arguments go inside the call parentheses, e.g. max(z, 0)"),
    ast.Set: ("sets", None),
    ast.Dict: ("dicts", None),
    ast.JoinedStr: ("f-strings", None),
    ast.FormattedValue: ("f-strings", None),
    ast.Starred: ("starred arguments", "pass arguments one by one"),
    ast.Await: ("await", None),
    ast.Yield: ("yield", None),
    ast.YieldFrom: ("yield", None),
    ast.Slice: ("slices", None),
}

_BINOPS_REFUSED = {
    ast.BitXor: ("'^' (bitwise XOR in Python)", "use ** for powers, e.g. z**2"),
    ast.FloorDiv: ("'//' (floor division)", "use floor(a/b)"),
    ast.Mod: ("'%' (modulo)", None),
    ast.MatMult: ("'@' (matrix multiplication)", "use * for multiplication"),
    ast.BitAnd: ("'&' (bitwise and)", "multiply indicators instead, e.g. (z > 0)*(z < 1)"),
    ast.BitOr: ("'|' (bitwise or)", None),
    ast.LShift: ("'<<' (shift)", None),
    ast.RShift: ("'>>' (shift)", None),
}

_COMPARISONS = {
    ast.Lt: sympy.Lt,
    ast.LtE: sympy.Le,
    ast.Gt: sympy.Gt,
    ast.GtE: sympy.Ge,
    ast.Eq: sympy.Eq,
    ast.NotEq: sympy.Ne,
}

_DISPLAY_WIDTH = 100  # characters of the input shown around an error
_NONFINITE = (sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)
_FLOAT_RE = re.compile(r"^(?P<int>\d*)(?:\.(?P<frac>\d*))?(?:[eE](?P<exp>[+-]?\d+))?$")
_CHAIN_CLASS = {ast.Add: "add", ast.Sub: "add", ast.Mult: "mul", ast.Div: "mul"}


# --------------------------------------------------------------------------- public API


def parse_expression(
    text: str, symbols: Mapping[str, sympy.Symbol], *, what: str = "expression",
    vectors: Mapping[str, tuple] | None = None,
) -> sympy.Expr:
    """Parse ``text`` into a SymPy expression without evaluating any Python.

    ``symbols`` maps the only names allowed as variables to their SymPy symbols;
    ``what`` names the input in error messages (e.g. ``"--f"``).  ``vectors`` maps
    names of vectors to their component symbols: ``z[0]`` (a literal non-negative
    integer index in range, nothing else) is then ``vectors["z"][0]``; it is the
    one subscript the language accepts.  Raises :class:`ExpressionError` (a
    ``ValueError``) for anything not in the language described in the module
    docstring.
    """
    parser = _Parser(text, symbols, what)
    parser.vectors = dict(vectors or {})
    return parser.parse()


# --------------------------------------------------------------------------- implementation


class _Parser:
    def __init__(self, text, symbols, what):
        self.what = what
        self.symbols = dict(symbols)
        self.raw = text
        self.text = text.strip() if isinstance(text, str) else ""
        self._constants = {}  # SymPy expr -> validated (lo, hi) mpmath values, or None
        self._memo_lo = {}
        self._memo_hi = {}

    # ----------------------------------------------------------------- errors
    def fail(self, problem, node=None, hint=None, *, span=None):
        """Raise ExpressionError; ``span`` = (line index, start col, end col) in characters."""
        lines = self.text.splitlines() or [""]
        if node is not None and getattr(node, "lineno", None) is not None:
            span = self._node_span(node, lines)
        parts = [f"invalid {self.what}: {problem}"]
        fragment = column = None
        if span is not None:
            line_no, start, end = span
            line_no = min(max(line_no, 0), len(lines) - 1)
            line = lines[line_no]
            start = min(max(start, 0), len(line))
            end = min(max(end, start + 1), max(len(line), start + 1))
            fragment, column = line[start:end], start
            where = f" (line {line_no + 1}, column {start + 1})" if len(lines) > 1 else ""
            shown, offset = _window(line, start, end)
            carets = "^" * max(1, min(end - start, len(shown) - (start - offset)))
            parts.append(f"    {shown}\n    {' ' * (start - offset)}{carets}{where}")
        if hint:
            parts.append(f"hint: {hint}")
        raise ExpressionError("\n".join(parts), fragment=fragment, column=column)

    @staticmethod
    def _node_span(node, lines):
        line_no = node.lineno - 1
        line = lines[min(line_no, len(lines) - 1)]
        encoded = line.encode("utf-8")

        def to_chars(byte_col):
            return len(encoded[:byte_col].decode("utf-8", errors="ignore"))

        start = to_chars(node.col_offset)
        if node.end_lineno == node.lineno and node.end_col_offset is not None:
            end = to_chars(node.end_col_offset)
        else:
            end = len(line)
        return line_no, start, end

    def segment(self, node):
        return ast.get_source_segment(self.text, node) or ast.dump(node)[:40]

    # ----------------------------------------------------------------- driver
    def parse(self):
        if not isinstance(self.raw, str):
            raise ExpressionError(
                f"invalid {self.what}: expected a string, got {type(self.raw).__name__}"
            )
        if len(self.raw) > MAX_LENGTH:
            raise ExpressionError(
                f"invalid {self.what}: expression too long ({len(self.raw)} characters, "
                f"limit {MAX_LENGTH}); starts with {self.raw[:40]!r}...\n"
                "hint: simplify the expression or split it into parts"
            )
        if not self.text:
            self.fail("empty expression", hint="type an expression such as cos(2*z)")
        self._check_brackets()
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            self._syntax_error(exc)
        except (ValueError, RecursionError, MemoryError) as exc:
            self.fail(f"could not parse the expression ({exc})", hint="simplify or de-nest the expression")
        self._validate(tree)
        value = self._build(tree.body)
        return self._final_check(value, tree.body)

    def _check_brackets(self):
        depth = 0
        for line_no, line in enumerate(self.text.splitlines()):
            for col, ch in enumerate(line):
                if ch in "([{":
                    depth += 1
                    if depth > MAX_DEPTH:
                        self.fail(
                            f"brackets nested too deeply (more than {MAX_DEPTH} levels)",
                            hint="remove redundant parentheses",
                            span=(line_no, col, col + 1),
                        )
                elif ch in ")]}":
                    depth -= 1

    def _syntax_error(self, exc):
        lines = self.text.splitlines() or [""]
        line_no = min(max((exc.lineno or 1) - 1, 0), len(lines) - 1)
        line = lines[line_no]
        # CPython reports offset 0 when the input ends unexpectedly.
        start = (exc.offset - 1) if exc.offset else len(line)
        end = start + 1
        if exc.end_offset and exc.end_lineno in (None, exc.lineno) and exc.end_offset - 1 > start:
            end = exc.end_offset - 1
        msg = exc.msg or "invalid syntax"
        if start >= len(line):
            hint = "the expression ends too early: is an operand or a closing parenthesis missing?"
        else:
            hint = "check for a missing operand, operator (write 2*z, not 2 z) or parenthesis"
        self.fail(f"syntax error: {msg} at column {start + 1}", hint=hint, span=(line_no, start, end))

    # ----------------------------------------------------------------- validation
    def _validate(self, tree):
        """Whitelist every node and enforce size/depth/literal caps; builds nothing."""
        count = 0
        stack = [(tree.body, 1)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > MAX_NODES:
                self.fail(
                    f"expression too large (more than {MAX_NODES} nodes)",
                    hint="simplify the expression",
                )
            if depth > MAX_DEPTH:
                self.fail(
                    f"expression nested too deeply (more than {MAX_DEPTH} levels)",
                    node,
                    hint="simplify or de-nest the expression",
                )
            children = self._check_node(node)
            for child in reversed(children):
                same_chain = (
                    isinstance(node, ast.BinOp)
                    and child is node.left
                    and isinstance(child, ast.BinOp)
                    and _CHAIN_CLASS.get(type(child.op)) is not None
                    and _CHAIN_CLASS.get(type(child.op)) == _CHAIN_CLASS.get(type(node.op))
                )
                stack.append((child, depth if same_chain else depth + 1))

    def _check_node(self, node):
        """Check one node; return its expression children."""
        if isinstance(node, ast.Constant):
            self._check_constant(node)
            return []
        if isinstance(node, ast.Name):
            self._check_name(node.id, node, as_function=False)
            return []
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            if op in _BINOPS_REFUSED:
                name, hint = _BINOPS_REFUSED[op]
                self.fail(f"operator {name} is not allowed", node, hint)
            if op is ast.Pow:
                self._check_literal_exponent(node)
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                self.fail(
                    "boolean 'not' is not allowed",
                    node,
                    "use the complementary comparison, e.g. (z <= 0) instead of not (z > 0)",
                )
            if isinstance(node.op, ast.Invert):
                self.fail("operator '~' (bitwise not) is not allowed", node, "use -x for negation")
            return [node.operand]
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARISONS:
                    word = {ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}.get(type(op), "?")
                    self.fail(f"comparison operator '{word}' is not allowed", node, "use < <= > >= == !=")
            return [node.left, *node.comparators]
        if isinstance(node, ast.Call):
            return self._check_call(node)
        if isinstance(node, ast.Subscript) and self._vector_component(node) is not None:
            return []
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            self.fail(
                f"boolean operator '{word}' is not allowed",
                node,
                "comparisons are 0/1 indicators: multiply them for 'and', e.g. (z > 0)*(z < 1)",
            )
        name, hint = _CONSTRUCTS.get(type(node), (f"'{type(node).__name__}' constructs", None))
        self.fail(f"{name} not allowed", node, hint)

    def _vector_component(self, node):
        """The symbol of ``v[k]`` for a declared vector v and a literal index k in range; None
        when ``node`` is not a subscript of a declared vector (refused as any subscript)."""
        vectors = getattr(self, "vectors", {})
        if not (isinstance(node.value, ast.Name) and node.value.id in vectors):
            return None
        name, parts = node.value.id, vectors[node.value.id]
        index = node.slice
        if not (isinstance(index, ast.Constant) and type(index.value) is int):
            self.fail(f"the index of {name}[...] must be a whole number such as {name}[0]", node)
        if not 0 <= index.value < len(parts):
            self.fail(f"{name}[{index.value}] is out of range: {name} has {len(parts)} components, "
                      f"{name}[0] to {name}[{len(parts) - 1}]", node)
        return parts[index.value]

    def _check_constant(self, node):
        value = node.value
        if isinstance(value, bool):
            self.fail(f"boolean constant {value} is not allowed", node, "use 1 or 0")
        if isinstance(value, int):
            if abs(value) > MAX_INT_LITERAL:
                self.fail(
                    f"integer literal too large (|n| must be <= {MAX_INT_LITERAL:.0e})",
                    node,
                    "rescale the problem, or use exp/log for huge magnitudes",
                )
            return
        if isinstance(value, float):
            self._float_literal(node)  # validates bounds
            return
        if isinstance(value, complex):
            self.fail("imaginary literals are not allowed", node, "integrands must be real-valued")
        if isinstance(value, (str, bytes)):
            self.fail("string literals are not allowed", node, "write the expression without quotes")
        self.fail(f"the constant {value!r} is not allowed", node)

    def _float_literal(self, node):
        """Exact Rational for a decimal literal, after bounds checks (nothing big is computed)."""
        value = node.value
        text = self.segment(node).replace("_", "")
        match = _FLOAT_RE.match(text)
        if match is None:  # pragma: no cover - Python only produces floats from such literals
            self.fail("unrecognised number literal", node)
        int_part, frac_part = match["int"] or "", match["frac"] or ""
        mantissa = int(int_part + frac_part or "0")
        if mantissa == 0:
            return sympy.Integer(0)
        if math.isinf(value) or abs(value) > MAX_FLOAT_LITERAL:
            self.fail(f"number literal too large (limit {MAX_FLOAT_LITERAL:g})", node)
        if abs(value) < MIN_FLOAT_LITERAL:
            self.fail(f"number literal too small (non-zero literals must be >= {MIN_FLOAT_LITERAL:g})", node)
        exp10 = int(match["exp"] or "0") - len(frac_part)
        # |value| is bounded and the text is short, so |exp10| is small here.
        if exp10 >= 0:
            return sympy.Integer(mantissa * 10**exp10)
        return sympy.Rational(mantissa, 10 ** (-exp10))

    def _check_literal_exponent(self, node):
        exponent = node.right
        if isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, (ast.USub, ast.UAdd)):
            exponent = exponent.operand
        if (
            isinstance(exponent, ast.Constant)
            and isinstance(exponent.value, (int, float))
            and not isinstance(exponent.value, bool)
            and abs(exponent.value) > MAX_EXPONENT
        ):
            self.fail(
                f"exponent too large (numeric exponents must satisfy |e| <= {MAX_EXPONENT})",
                node,
                "use a smaller exponent or rescale the variable",
            )

    def _check_name(self, name, node, *, as_function):
        if name.startswith("_"):
            self.fail(f"names starting with '_' are not allowed: {name!r}", node, "use a declared symbol")
        if as_function:
            if name in _FUNCTIONS:
                return
            if name in self.symbols or name in CONSTANTS:
                self.fail(
                    f"{name!r} is not a function",
                    node,
                    f"for multiplication write {name}*(...)",
                )
            self.fail(f"unknown function {name!r}", node, self._suggest(name, functions=True))
        if name in self.symbols or name in CONSTANTS:
            return
        if name in getattr(self, "vectors", {}):
            self.fail(f"{name!r} is a vector of {len(self.vectors[name])} components; use one "
                      f"component at a time", node, f"write e.g. {name}[0]**2 + {name}[1]**2")
        if name in _FUNCTIONS:
            self.fail(f"function {name!r} used without arguments", node, f"call it, e.g. {name}(z)")
        self.fail(f"unknown name {name!r}", node, self._suggest(name, functions=False))

    def _suggest(self, name, *, functions):
        pool = list(_FUNCTIONS) if functions else [*self.symbols, *CONSTANTS]
        close = difflib.get_close_matches(name, pool, n=3)
        bits = []
        if name in _NAME_HINTS:
            bits.append(_NAME_HINTS[name])
        elif close:
            bits.append("did you mean " + " or ".join(repr(c) for c in close) + "?")
        declared = ", ".join(sorted(self.symbols)) or "(none)"
        bits.append(f"allowed symbols: {declared}; constants: {', '.join(CONSTANTS)}")
        bits.append(f"functions: {', '.join(sorted(_FUNCTIONS, key=str.lower))}")
        return "\n      ".join(bits)

    def _check_call(self, node):
        if isinstance(node.func, ast.Attribute):
            self.fail("attribute access not allowed", node.func, _CONSTRUCTS[ast.Attribute][1])
        if not isinstance(node.func, ast.Name):
            self.fail("only named functions can be called", node, "e.g. exp(z)")
        if node.keywords:
            self.fail(
                "keyword arguments are not allowed",
                node,
                "pass arguments positionally, e.g. max(z, 0)",
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.fail("starred arguments not allowed", arg, "pass arguments one by one")
        name = node.func.id
        self._check_name(name, node.func, as_function=True)
        low, high = FUNCTION_ARITY[name]
        n = len(node.args)
        if n < low or (high is not None and n > high):
            if high is None:
                expected = f"at least {low} arguments"
            elif low == high:
                expected = f"exactly {low} argument{'s' if low != 1 else ''}"
            else:
                expected = f"{low} to {high} arguments"
            hint = None
            if name == "log" and n == 2:
                hint = "log is the natural logarithm; for base b write log(x)/log(b)"
            self.fail(f"{name}() takes {expected}, got {n}", node, hint)
        return list(node.args)

    # ----------------------------------------------------------------- building
    def _build(self, node):
        """SymPy value of a validated node."""
        return self._guarded(node, lambda: self._build_node(node))

    def _guarded(self, node, make):
        """Run ``make`` and check its result; SymPy failures become errors at ``node``."""
        try:
            return self._checked(make(), node)
        except ExpressionError:
            raise
        except Exception as exc:  # SymPy or mpmath refusing (e.g. comparing non-real numbers)
            self.fail(f"cannot build {self.segment(node)!r} ({type(exc).__name__}: {exc})", node)

    def _build_node(self, node):
        if isinstance(node, ast.Constant):
            if isinstance(node.value, int):
                return sympy.Integer(node.value)
            return self._float_literal(node)
        if isinstance(node, ast.Name):
            if node.id in self.symbols:
                return self.symbols[node.id]
            return CONSTANTS[node.id]
        if isinstance(node, ast.UnaryOp):
            operand = self._build(node.operand)
            return operand if isinstance(node.op, ast.UAdd) else -operand
        if isinstance(node, ast.BinOp):
            return self._build_binop(node)
        if isinstance(node, ast.Compare):
            return self._build_compare(node)
        if isinstance(node, ast.Call):
            return self._build_call(node)
        if isinstance(node, ast.Subscript):
            return self._vector_component(node)
        raise AssertionError(f"unvalidated node {type(node).__name__}")  # pragma: no cover

    def _build_binop(self, node):
        # Build the left spine of a same-precedence chain iteratively (a+b-c+... is flat).
        cls = _CHAIN_CLASS.get(type(node.op))
        chain = []
        while cls is not None and isinstance(node, ast.BinOp) and _CHAIN_CLASS.get(type(node.op)) == cls:
            chain.append(node)
            node = node.left
        if not chain:  # a power
            return self._power(node, self._build(node.left), self._build(node.right))
        value = self._build(node)
        for op_node in reversed(chain[1:]):
            right = self._build(op_node.right)
            value = self._guarded(op_node, lambda v=value, r=right, n=op_node: self._arithmetic(n, v, r))
        top = chain[0]
        return self._arithmetic(top, value, self._build(top.right))

    def _arithmetic(self, node, left, right):
        op = type(node.op)
        if op is ast.Add:
            return left + right
        if op is ast.Sub:
            return left - right
        if op is ast.Mult:
            return left * right
        if right == 0:
            self.fail("division by zero", node, "check the denominator")
        return left / right

    def _power(self, node, base, exponent):
        exp_num = self.constant(exponent, node.right)
        base_num = self.constant(base, node.left)
        if exp_num is not None:
            e = abs(exp_num[1])
            if e > MAX_EXPONENT:
                self.fail(
                    f"exponent too large (numeric exponents must satisfy |e| <= {MAX_EXPONENT})",
                    node,
                    "use a smaller exponent or rescale the variable",
                )
            if base == 0 and exp_num[1] < 0:
                self.fail("division by zero (0 raised to a negative power)", node)
            coeff = _rational_coefficient(base)
            if coeff is not None and _rational_bits(coeff) * e > MAX_RATIONAL_BITS:
                self.fail(
                    f"power would produce an exact number with about {int(_rational_bits(coeff) * e * 0.30103)} digits",
                    node,
                    "rescale the constants",
                )
            if base_num is not None and base != 0:
                if e * abs(float(_LO.log10(abs(base_num[0])))) > MAX_CONSTANT_LOG10:
                    self.fail(
                        f"constant power too large or too small (limit 1e±{MAX_CONSTANT_LOG10})",
                        node,
                        "rescale the constants",
                    )
        if base == sympy.E:
            self._exp_guard(exponent, node)
        if exponent.is_Rational:
            self._check_rational_exponent(exponent, node)
        return sympy.Pow(base, exponent)  # combined exponents, (z**50)**50, are checked per node

    def _build_compare(self, node):
        operands = [node.left, *node.comparators]
        values = [self._build(child) for child in operands]
        for child, value in zip(operands, values):
            if value.has(sympy.Piecewise):  # SymPy folds such conditions with (very slow) simplification
                self.fail(
                    "comparing the result of a comparison is not supported",
                    child,
                    "comparisons are 0/1 indicators; combine them with *, e.g. (z > 0)*(z < 1)",
                )
        result = sympy.Integer(1)
        for op, a, b in zip(node.ops, values, values[1:]):
            relation = _COMPARISONS[type(op)]
            a_num, b_num = self.constant(a, node), self.constant(b, node)
            if a_num is not None and b_num is not None and not (a.is_Rational and b.is_Rational):
                order = self._order(a, a_num, b, b_num, node)
                truth = bool(relation(order, 0))  # decide constant comparisons ourselves
                indicator = sympy.Integer(int(truth))
            elif a.is_Rational and b.is_Rational:
                indicator = sympy.Integer(int(bool(relation(a, b))))
            else:  # unevaluated: SymPy's relational/Piecewise simplification can be very slow
                condition = relation(a, b, evaluate=False)
                indicator = sympy.Piecewise((1, condition), (0, True), evaluate=False)
            result = result * self._checked(indicator, node)
        return result

    def _order(self, a, a_num, b, b_num, node):
        """-1/0/1 ordering of two validated constants, refusing near-ties SymPy could not decide."""
        if a == b:
            return 0
        d_lo, d_hi = a_num[0] - b_num[0], a_num[1] - b_num[1]
        scale = max(abs(a_num[1]), abs(b_num[1]))
        if abs(d_hi) <= _TIE_TOLERANCE * scale or (d_lo > 0) != (d_hi > 0):
            self.fail(
                "cannot decide how two constants compare (they are numerically too close)",
                node,
                "simplify the constants",
            )
        return 1 if d_hi > 0 else -1

    def _build_call(self, node):
        name = node.func.id
        args = [self._build(arg) for arg in node.args]
        nums = [self.constant(a, n) for a, n in zip(args, node.args)]
        fn = ALLOWED_FUNCTIONS[name]
        if all(n is not None for n in nums):  # decide the piecewise functions of constants ourselves
            x, x_num = args[0], nums[0]
            if fn is sympy.Abs:
                return x if x_num[1] >= 0 else -x
            if fn is sympy.sign:
                return sympy.Integer(0 if x == 0 else (1 if x_num[1] > 0 else -1))
            if fn is sympy.Heaviside:
                return sympy.Rational(1, 2) if x == 0 else sympy.Integer(int(x_num[1] > 0))
            if fn in (sympy.floor, sympy.ceiling) and not x.is_Rational:
                return self._integer_part(fn, x_num, node)
            if fn in (sympy.Max, sympy.Min, _relu):
                pairs = [(sympy.Integer(0), (0, 0)), (x, x_num)] if fn is _relu else list(zip(args, nums))
                sign = -1 if fn is sympy.Min else 1
                best = pairs[0]
                for cand in pairs[1:]:
                    if sign * self._order(cand[0], cand[1], best[0], best[1], node) > 0:
                        best = cand
                return best[0]
        if name in _EXPONENTIAL_FUNCTIONS:
            self._exp_guard(args[0], node)
        if name in _SPECIAL_ARGUMENT_FUNCTIONS and nums[0] is not None:
            if abs(nums[0][1]) > MAX_SPECIAL_ARGUMENT:
                self.fail(
                    f"{name}() of a constant larger than {MAX_SPECIAL_ARGUMENT} in magnitude",
                    node,
                    "SymPy would evaluate it exactly; rescale or use a symbol",
                )
        return fn(*args)

    def _check_rational_exponent(self, exponent, node, context=""):
        """Powers with huge rational exponents make SymPy build polynomials of that degree."""
        if abs(exponent) > MAX_EXPONENT:
            self.fail(
                f"{context}exponent {_short(exponent)} too large (|e| <= {MAX_EXPONENT})",
                node,
                "rewrite the power or rescale",
            )
        if exponent.q > MAX_ROOT_DENOMINATOR:
            self.fail(
                f"{context}fractional exponent {_short(exponent)} has too large a denominator "
                f"(limit {MAX_ROOT_DENOMINATOR})",
                node,
                "round the exponent, e.g. z**0.123 rather than z**1.000000001",
            )

    def _exp_guard(self, arg, node):
        """SymPy rewrites exp(k*log(c)) as c**k: apply the power limits to such k."""
        for term in sympy.Add.make_args(arg):
            if term.has(sympy.log):
                coeff = term.as_coeff_Mul()[0]
                if coeff.is_Rational:
                    self._check_rational_exponent(coeff, node, "exp(k*log(c)) is c**k: ")

    def _integer_part(self, fn, x_num, node):
        lo, hi = x_num
        rounder = _LO.floor if fn is sympy.floor else _LO.ceil
        k_lo, k_hi = int(rounder(lo)), int((_HI.floor if fn is sympy.floor else _HI.ceil)(hi))
        near = abs(hi - _HI.nint(hi)) <= _TIE_TOLERANCE * max(1, abs(hi))
        if abs(hi) > 1e15 or near or k_lo != k_hi:
            self.fail(
                f"cannot decide {fn.__name__}() of a constant this close to an integer (or this large)",
                node,
                "write the integer directly",
            )
        return sympy.Integer(k_hi)

    # ----------------------------------------------------------------- checks
    def _checked(self, value, node):
        """Per-node invariants: finite, bounded exact numbers, sane constants."""
        if not isinstance(value, sympy.Basic):  # pragma: no cover - defensive
            self.fail(f"internal: got {type(value).__name__}", node)
        if value in _NONFINITE or any(arg in _NONFINITE for arg in value.args):
            self.fail(f"{self.segment(node)!r} is not finite", node, "check for log(0), 1/0, tan(pi/2) or poles")
        for part in (value, *value.args[:_SHALLOW]):
            coeff = _rational_coefficient(part)
            if coeff is not None and _rational_bits(coeff) > MAX_RATIONAL_BITS:
                self.fail(
                    f"exact number too large ({_rational_bits(coeff)} bits, limit {MAX_RATIONAL_BITS})",
                    node,
                    "rescale the constants",
                )
            if part.is_Pow and part.exp.is_Rational:
                self._check_rational_exponent(part.exp, node)
        self.constant(value, node)
        return value

    def constant(self, value, node):
        """(low, high)-precision mpmath values if ``value`` is symbol-free, else None.

        Constants are evaluated with mpmath (never SymPy's evalf) and must be real,
        finite, within 1e±MAX_CONSTANT_LOG10 (or exactly zero) and numerically stable,
        so that SymPy's own automatic numeric decisions on them stay cheap.
        """
        cached = self._constants.get(value, _MISSING)
        if cached is not _MISSING:
            return cached
        try:
            lo, hi = _SHADOW_LO(value, self._memo_lo), _SHADOW_HI(value, self._memo_hi)
        except _Unevaluable as exc:
            self.fail(f"invalid constant in {self.segment(node)!r}: {exc}", node, exc.hint)
        if lo is _NONCONST or hi is _NONCONST:
            result = None
        elif value == 0:
            result = (_LO.mpf(0), _HI.mpf(0))
        else:
            result = self._validate_constant(lo, hi, node)
        self._constants[value] = result
        return result

    def _validate_constant(self, lo, hi, node):
        fragment = self.segment(node)
        if isinstance(lo, bool) or isinstance(hi, bool):
            self.fail(f"{fragment!r} is a condition, not a number", node)
        if _is_complex(lo) or _is_complex(hi):
            self.fail(
                f"{fragment!r} is not real-valued",
                node,
                "check for sqrt/log/asin/acos or fractional powers of negative constants",
            )
        lo, hi = _LO.re(lo), _HI.re(hi)
        if _HI.isinf(hi) or _LO.isinf(lo):
            self.fail(f"{fragment!r} is not finite", node, "check for log(0), 1/0 or poles")
        if _HI.isnan(hi) or _LO.isnan(lo):
            self.fail(
                f"{fragment!r} cannot be evaluated reliably (overflow, cancellation or a near-tie)",
                node,
                "simplify the constant",
            )
        if hi == 0:
            self.fail(f"{fragment!r} is numerically zero but not exactly zero", node, "simplify the constant")
        log_m = float(_HI.log10(abs(hi)))
        if abs(log_m) > MAX_CONSTANT_LOG10:
            self.fail(
                f"constant {'too large' if log_m > 0 else 'too small'} "
                f"(about 1e{log_m:+.0f}; constants must lie within 1e±{MAX_CONSTANT_LOG10})",
                node,
                "rescale the constants",
            )
        if abs(lo - hi) > _STABILITY_TOLERANCE * abs(hi):
            self.fail(
                f"{fragment!r} cannot be evaluated reliably (ill-conditioned constant)",
                node,
                "simplify the constant",
            )
        return (lo, hi)

    def _final_check(self, value, node):
        if not isinstance(value, sympy.Expr):  # e.g. a relational (sympy.Symbol is also a Boolean)
            self.fail("the result is a condition, not a number", node, "wrap conditions like (z > 0) in arithmetic")
        if value.has(*_NONFINITE):
            self.fail("the expression is not finite (contains zoo/nan/oo)", node, "check for log(0), 1/0 or poles")
        if value.has(sympy.I):
            self.fail(
                "the expression is not real-valued (contains the imaginary unit)",
                node,
                "check for sqrt or log of negative constants",
            )
        return value


# --------------------------------------------------------------------------- constant evaluation

_MISSING = object()
_NONCONST = object()
_TIE_TOLERANCE = 1e-9
_STABILITY_TOLERANCE = 1e-6
_SHALLOW = 32  # arguments of a node result inspected by the per-node checks


class _Unevaluable(Exception):
    def __init__(self, message, hint="rescale or simplify the constants"):
        super().__init__(message)
        self.hint = hint


def _is_complex(v):
    return isinstance(v, (_LO.mpc, _HI.mpc)) and v.imag != 0


class _Shadow:
    """Evaluate symbol-free SymPy trees with mpmath at a fixed precision (no SymPy evalf)."""

    def __init__(self, prec):
        ctx = mpmath.MPContext()
        ctx.prec = prec
        self.ctx = ctx
        self.eps = ctx.mpf(2) ** (10 - prec)

        def heaviside(x, h0=ctx.mpf(0.5)):
            return ctx.mpf(1) if x > 0 else (ctx.mpf(0) if x < 0 else h0)

        self.functions = {
            sympy.exp: ctx.exp,
            sympy.log: ctx.log,
            sympy.sin: ctx.sin,
            sympy.cos: ctx.cos,
            sympy.tan: ctx.tan,
            sympy.cot: ctx.cot,
            sympy.sec: ctx.sec,
            sympy.csc: ctx.csc,
            sympy.sinh: ctx.sinh,
            sympy.cosh: ctx.cosh,
            sympy.tanh: ctx.tanh,
            sympy.coth: ctx.coth,
            sympy.asin: ctx.asin,
            sympy.acos: ctx.acos,
            sympy.atan: ctx.atan,
            sympy.acot: ctx.acot,
            sympy.asinh: ctx.asinh,
            sympy.acosh: ctx.acosh,
            sympy.atanh: ctx.atanh,
            sympy.Abs: ctx.fabs,
            sympy.sign: ctx.sign,
            sympy.floor: ctx.floor,
            sympy.ceiling: ctx.ceil,
            sympy.erf: ctx.erf,
            sympy.erfc: ctx.erfc,
            sympy.gamma: ctx.gamma,
            sympy.loggamma: ctx.loggamma,
            sympy.factorial: ctx.factorial,
            sympy.Heaviside: heaviside,
        }
        self.relations = {
            sympy.StrictLessThan: lambda d: d < 0,
            sympy.LessThan: lambda d: d <= 0,
            sympy.StrictGreaterThan: lambda d: d > 0,
            sympy.GreaterThan: lambda d: d >= 0,
            sympy.Equality: lambda d: d == 0,
            sympy.Unequality: lambda d: d != 0,
        }

    def __call__(self, expr, memo):
        try:
            return memo[expr]
        except KeyError:
            pass
        try:
            value = self._eval(expr, memo)
        except _Unevaluable:
            raise
        except (ValueError, ZeroDivisionError, ArithmeticError, TypeError) as exc:
            value = self.ctx.nan if not isinstance(exc, ZeroDivisionError) else self.ctx.inf
        self._check_range(expr, value)
        memo[expr] = value
        return value

    def _check_range(self, expr, value):
        """Every constant sub-expression must be real and within 1e±MAX_CONSTANT_LOG10 (or 0)."""
        if value is _NONCONST or isinstance(value, (bool, tuple)):
            return
        ctx = self.ctx
        if _is_complex(value):
            raise _Unevaluable(
                f"the constant {_short(expr)} is not real-valued",
                "check for sqrt/log/asin/acos/lgamma or fractional powers of negative constants",
            )
        value = ctx.re(value)
        if ctx.isnan(value) or ctx.isinf(value) or value == 0:
            return  # reported with the node (not finite / unreliable / inexact zero)
        log_m = float(ctx.log10(abs(value)))
        if abs(log_m) > MAX_CONSTANT_LOG10:
            raise _Unevaluable(
                f"the constant {_short(expr)} is too {'large' if log_m > 0 else 'small'} "
                f"(about 1e{log_m:+.0f}; constants must lie within 1e±{MAX_CONSTANT_LOG10})"
            )

    def _eval(self, expr, memo):
        ctx = self.ctx
        if expr.is_Symbol:
            return _NONCONST
        if expr.is_Rational:
            return ctx.mpf(expr.p) / expr.q
        if expr is sympy.pi:
            return +ctx.pi
        if expr is sympy.E:
            return +ctx.e
        if expr is sympy.I:
            return ctx.mpc(0, 1)
        if expr is sympy.true or expr is sympy.false:
            return bool(expr)
        if expr in _NONFINITE:
            return ctx.nan if expr is sympy.nan else ctx.inf
        if expr.is_Float:
            return ctx.mpf(expr._mpf_)
        if not expr.args:
            raise _Unevaluable(f"unsupported atom {expr}")
        args = [self(arg, memo) for arg in expr.args]
        if any(a is _NONCONST for a in args):
            return _NONCONST
        if any(self._bad(a) for a in args):
            return self._first_bad(args)
        if expr.is_Add:
            total = ctx.fsum(args)
            largest = max(abs(a) for a in args)
            if not _is_complex(total) and abs(total) <= largest * self.eps:
                return ctx.nan  # catastrophic cancellation: the true value is unknown
            return total
        if expr.is_Mul:
            return ctx.fprod(args)
        if expr.is_Pow:
            return ctx.power(args[0], args[1])
        if isinstance(expr, sympy.Piecewise):
            for value, condition in args:
                if condition is True:
                    return value
                if condition is not False:
                    raise _Unevaluable("undecided condition")
            raise _Unevaluable("no piece applies")
        if isinstance(expr, ExprCondPair):
            return tuple(args)
        if type(expr) in self.relations:
            a, b = args
            if _is_complex(a) or _is_complex(b):
                raise _Unevaluable("comparison of non-real values")
            d = a - b
            if abs(d) <= self.eps * max(abs(a), abs(b)):
                raise _Unevaluable("comparison too close to decide")
            return self.relations[type(expr)](d)
        if isinstance(expr, (sympy.Max, sympy.Min)):
            pick = max if isinstance(expr, sympy.Max) else min
            return pick(ctx.re(a) for a in args)
        fn = self.functions.get(type(expr))
        if fn is None:
            raise _Unevaluable(f"unsupported function {type(expr).__name__}")
        return fn(*args)

    def _bad(self, value):
        if isinstance(value, (bool, tuple)):
            return False
        return self.ctx.isnan(value) or self.ctx.isinf(value)

    def _first_bad(self, args):
        if any(self._bad(a) and self.ctx.isnan(a) for a in args):
            return self.ctx.nan
        return self.ctx.inf


_SHADOW_LO = _Shadow(80)
_SHADOW_HI = _Shadow(160)
_LO = _SHADOW_LO.ctx
_HI = _SHADOW_HI.ctx


def _window(line, start, end, width=_DISPLAY_WIDTH):
    """Return (displayed text, index in ``line`` of its first character) around [start, end)."""
    if len(line) <= width:
        return line, 0
    lo = max(0, min(start - width // 4, len(line) - width))
    hi = min(len(line), lo + width)
    shown = line[lo:hi]
    if lo > 0:
        shown = "..." + shown[3:]
    if hi < len(line):
        shown = shown[:-3] + "..."
    return shown, lo


def _short(expr):
    """Short text of a SymPy expression; order="none" so printing never evaluates numbers."""
    try:
        text = sympy.sstr(expr, order="none")
    except Exception:  # pragma: no cover - defensive
        text = type(expr).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _rational_coefficient(value):
    if value.is_Rational:
        return value
    if value.is_Mul:
        return value.as_coeff_Mul()[0]
    if value.is_Add:
        return value.as_coeff_Add()[0]
    return None


def _rational_bits(value):
    return max(abs(value.p).bit_length(), value.q.bit_length())
