"""Standalone NumPy source for derived estimators: :func:`generate_module`.

The per-sample functions are compiled, not just printed. Printing ``x - mu - sigma*eps`` as one
NumPy expression allocates a temporary per operation, and the plain form of an estimator costs
1.4-3.9x the random numbers it consumes instead of 1.25x (``numeric/DESIGN.md``). So:

1. each component is made numerically safe (:func:`stable`: softplus as ``logaddexp(0, u)``,
   sigmoid as ``expit``; ``log1p``/``expm1`` where ``log(1 + u)`` or ``exp(u) - 1`` appear;
   ``(1 + u)**p`` as ``exp(p*log1p(u))``) and its pure numbers are evaluated to 17 digits;
2. constant factors are pulled out of sums and pushed into shared sums where that saves a pass
   (:func:`_arrange`), then ``sympy.cse`` finds the common subexpressions;
3. every sub-expression free of the noise is hoisted and printed once per call by SymPy's
   ``SciPyPrinter`` (as are the closed forms of the exact gradient and variances);
4. every noise-dependent operation becomes one NumPy ufunc call with ``out=`` into rows of
   a ``(k, *S, n)`` buffer (:class:`_Kernel`), the rows being assigned by liveness so that the
   noise is drawn straight into an output row and scratch rows are rare.

The generated module needs NumPy only (``scipy.special`` where a special function requires it).
"""

import ast
import importlib
import keyword
import random
import re
import textwrap
from dataclasses import dataclass

import mpmath
import sympy as sp
from sympy.codegen.rewriting import expm1_opt, log1p_opt, optimize
from sympy.printing.numpy import SciPyPrinter
from sympy.printing.precedence import PRECEDENCE

from . import _discrete, _implicit
from ._errors import DeriveError
from ._numbers import holds
from ._symbols import Z

DTYPES = ("float64", "float32")
RESERVED = frozenset({"numpy", "scipy", "functools", "DTYPE", "WRT", "PARAMETERS"})
"""Names the generated module uses at module level; a symbol of these names would shadow them."""

FUNCTION_NAMES = {"score": "score_function", "pathwise": "pathwise",
                  "score_baseline": "score_function_baseline",
                  "score_delta": "score_function_delta", "measure_valued": "measure_valued"}

_DRAWS_WITH_OUT = frozenset({"standard_normal", "random", "standard_exponential"})
"""Generator methods taking ``out=`` and ``dtype=`` (float32 or float64)."""


# ------------------------------------------------------------------ numerically safe forms


class softplus(sp.Function):
    """log(1 + exp(x)), printed as numpy.logaddexp(0, x)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


class sigmoid(sp.Function):
    """1/(1 + exp(-x)), printed as scipy.special.expit(x)."""

    def fdiff(self, argindex=1):
        x = self.args[0]
        return sigmoid(x) * (1 - sigmoid(x))


def stable(expr: sp.Expr) -> sp.Expr:
    """expr with softplus and sigmoid patterns replaced by their stable functions.

    log(1 + exp(u)) -> softplus(u) (log1p(exp(800)) is inf; logaddexp(0, 800) is 800);
    exp(u)/(1 + exp(u)) -> sigmoid(u), also inside a longer product, and 1/(1 + exp(u)) ->
    sigmoid(-u) (exp(800)/(1 + exp(800)) is nan).
    """
    w = sp.Wild("w")
    expr = sp.sympify(expr).replace(sp.log(1 + sp.exp(w)), lambda w: softplus(w))
    return _sigmoids(expr)


def _sigmoids(expr):
    """Products are searched for exp(u)/(1 + exp(u)) before their factors are rewritten."""
    if expr.is_Atom:
        return expr
    if expr.is_Mul:
        return sp.Mul(*map(_sigmoids, _sigmoid_factors(list(expr.args))))
    expr = expr.func(*map(_sigmoids, expr.args))
    if expr.is_Pow and expr.exp == -1 and _one_plus_exp(expr.base) is not None:
        return sigmoid(-_one_plus_exp(expr.base))
    return expr


def _sigmoid_factors(factors):
    for i, f in enumerate(factors):
        u = _one_plus_exp(f.base) if f.is_Pow and f.exp == -1 else None
        if u is not None and sp.exp(u) in factors:
            rest = [g for j, g in enumerate(factors) if j != i]
            rest.remove(sp.exp(u))
            return _sigmoid_factors(rest) + [sigmoid(u)]
    return factors


def _one_plus_exp(e):
    """u when e is 1 + exp(u), else None."""
    if e.is_Add and len(e.args) == 2 and sp.S.One in e.args:
        other = e.args[0] if e.args[1] == 1 else e.args[1]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _accurate(expr, variables):
    """log1p/expm1 forms, and (1 + u)**p -> exp(p*log1p(u)) for noise-dependent u."""
    def one_plus(e):
        return (e.is_Pow and e.base.is_Add and sp.S.One in e.base.args
                and not e.exp.is_Integer and e.base.has(*variables))

    def rewrite(e):
        u = e.base - 1
        return sp.exp(e.exp * sp.log(1 + u, evaluate=False))

    expr = expr.replace(one_plus, rewrite)
    return optimize(expr, [expm1_opt, log1p_opt])


def _fold_numbers(expr):
    """Pure-number subexpressions (pi**2/6, sqrt(2), zeta(3)) evaluated to 17 digits, so that
    they cost nothing per call and cannot cancel in float64. Rationals and pi stay readable."""
    if not expr.free_symbols:
        if expr.is_Rational or expr.is_NumberSymbol or expr.is_Float:
            return expr
        if expr.is_number:
            value = expr.evalf(30)
            if value.is_real and value.is_finite:
                return sp.Float(float(value))
        return expr
    if expr.is_Atom:
        return expr
    return expr.func(*map(_fold_numbers, expr.args))


# ------------------------------------------------------------------ the printer


class _Printer(SciPyPrinter):
    """SciPyPrinter with exact float literals, the stable functions and plain reciprocals."""

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "inline": True, "strict": True})

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_softplus(self, expr):
        return f"{self._module_format('numpy.logaddexp')}(0, {self._print(expr.args[0])})"

    def _print_sigmoid(self, expr):
        return f"{self._module_format('scipy.special.expit')}({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"{self._module_format('numpy.absolute')}({self._print(expr.args[0])})"

    def _print_zeta(self, expr):
        args = ", ".join(map(self._print, expr.args))
        return f"{self._module_format('scipy.special.zeta')}({args})"

    def _print_polygamma(self, expr):
        if expr.args[0] == 0:
            return f"{self._module_format('scipy.special.digamma')}({self._print(expr.args[1])})"
        return super()._print_polygamma(expr)

    def _print_Heaviside(self, expr):
        at_zero = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return self.call("numpy.heaviside", self._print(expr.args[0]), self._print(at_zero))

    def _print_Max(self, expr):
        return self._fold("numpy.maximum", expr.args)

    def _print_Min(self, expr):
        return self._fold("numpy.minimum", expr.args)

    def _fold(self, name, args):
        text = self._print(args[0])
        for a in args[1:]:
            text = self.call(name, text, self._print(a))
        return text

    def _print_Pow(self, expr, rational=False):
        if expr.exp == -1:
            return "1/" + self.parenthesize(expr.base, PRECEDENCE["Pow"])
        if expr.exp.is_Integer and expr.exp < 0:
            return "1/" + self.parenthesize(sp.Pow(expr.base, -expr.exp, evaluate=False),
                                            PRECEDENCE["Pow"])
        return super()._print_Pow(expr, rational=rational)

    def call(self, dotted, *args):
        """``dotted(args)``, registering the import of its module."""
        return f"{self._module_format(dotted)}({', '.join(args)})"

    def imports(self):
        modules = sorted(self.module_imports)
        return [f"import {m}" for m in modules]


def _resolve(dotted):
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None


def _ufunc_call(text, placeholders):
    """(function, args) when ``text`` is one call of a NumPy ufunc with as many plain arguments
    (placeholders or numbers) as it takes; None otherwise."""
    import numpy
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.Call) or node.keywords:
        return None
    name = ast.unparse(node.func)
    fn = _resolve(name)
    if not isinstance(fn, numpy.ufunc) or fn.nin != len(node.args) or fn.nout != 1:
        return None
    args = []
    for a in node.args:
        if isinstance(a, ast.Name):
            args.append(placeholders.get(a.id, a.id))
        elif isinstance(a, ast.Constant) or (isinstance(a, ast.UnaryOp)
                                             and isinstance(a.operand, ast.Constant)):
            args.append(ast.unparse(a))
        else:
            return None
    return name, args


# ------------------------------------------------------------------ arranging for fewer passes


def _split(expr, variables):
    """(constant part, noise-dependent part) of a product."""
    return expr.as_independent(*variables, as_Add=False)


def _unit(term, variables):
    c, _ = _split(term, variables)
    return c in (1, -1)


def _arrange(targets, variables):
    """The targets with constant factors pulled out of sums and pushed into the sum of a
    product where that saves passes over the samples: C*eps*A and C*B*A (A a sum shared by
    two targets) become eps*A' and B*A' with A' = C*A distributed, computed once."""
    targets = [sp.factor_terms(t, sign=False) if t.has(*variables) else t for t in targets]
    counts = {}
    for t in targets:
        for m in sp.preorder_traversal(t):
            if m.is_Mul:
                c, _ = _split(m, variables)
                if c not in (1, -1):
                    for a in m.args:
                        if a.is_Add and a.has(*variables):
                            counts[(c, a)] = counts.get((c, a), 0) + 1

    def distribute(m):
        c, v = _split(m, variables)
        if c in (1, -1) or not v.has(*variables):
            return m
        adds = [a for a in sp.Mul.make_args(v) if a.is_Add and a.has(*variables)]
        def gain(a):
            units = sum(_unit(t, variables) for t in a.args if t.has(*variables))
            return counts.get((c, a), 0) - units

        gains = sorted((gain(a), sp.default_sort_key(a), a) for a in adds)
        if not gains or gains[-1][0] <= 0:
            return m
        a = gains[-1][2]
        rest = [f for f in sp.Mul.make_args(v) if f != a]
        return sp.Mul(*rest, sp.Add(*[c * t for t in a.args]))

    return [t.replace(lambda e: e.is_Mul, distribute) for t in targets]


# ------------------------------------------------------------------ the vector compiler


@dataclass
class _Op:
    kind: str            # "draw", "ufunc", "assign", "fill", "copy"
    text: str            # ufunc name, expression template, draw method, or constant
    args: tuple          # operands: int (a virtual register) or str (constant text)
    result: int
    note: str = ""


@dataclass
class _Program:
    """Constant assignments, then ops on rows; ``rows`` maps registers to row names."""

    constants: list
    ops: list
    rows: dict
    scratch: int
    noise_own: bool
    out_names: tuple
    scratch_names: tuple


class _Names:
    """Identifiers that avoid the user's symbols and each other."""

    def __init__(self, taken):
        self.taken = set(taken)

    def get(self, base):
        name = base
        while name in self.taken or keyword.iskeyword(name):
            name += "_"
        self.taken.add(name)
        return name

    def numbered(self, prefix):
        i = 0
        while True:
            name = f"{prefix}{i}"
            i += 1
            if name not in self.taken:
                self.taken.add(name)
                yield sp.Symbol(name, real=True)


class _Kernel:
    """Compile noise-dependent expressions to in-place ufunc calls on rows of a buffer.

    ``compile(targets)`` emits single-assignment ops on virtual registers (register 0 is the
    noise), then assigns each register a row: target j must end in output row j; the other
    values go, by preference, to the row of an operand that dies at the op (in place), to a
    free output row, or to a scratch row. Two values share a row when their lifetimes do not
    overlap; a value may be written by the op that reads another's last use (ufuncs allow
    ``out`` to alias an input).
    """

    def __init__(self, printer, noise, names: _Names, draw, constant_names):
        self.p, self.noise, self.names, self.draw = printer, noise, names, draw
        self.cnames = constant_names
        self.ops, self.regs, self.memo, self.constants = [], {}, {}, {}
        self.const_defs = []

    # --- constants
    def const(self, expr):
        """Operand text for a noise-free expression, hoisted to a named constant if compound."""
        if expr.is_Number or expr.is_Symbol or expr.is_NumberSymbol:
            return self.p.doprint(expr)
        if expr in self.constants:
            return self.constants[expr]
        name = str(next(self.cnames))
        self.constants[expr] = name
        self.const_defs.append((name, expr))
        return name

    def is_const(self, e):
        return not (e.free_symbols & self.variables)

    # --- ops
    def op(self, kind, text, args, note):
        r = len(self.ops)
        self.ops.append(_Op(kind, text, tuple(args), r, note))
        return r

    def ufunc(self, name, args, note):
        return self.op("ufunc", self.p._module_format(name), args, note)

    def emit(self, e):
        """A register or constant text holding e."""
        if e in self.regs:
            return self.regs[e]
        if self.is_const(e):
            return self.const(e)
        if e in self.memo:
            return self.memo[e]
        if e.is_Add:
            r = self.emit_add(e)
        elif e.is_Mul:
            r = self.emit_mul(e)
        elif e.is_Pow:
            r = self.emit_pow(e)
        elif isinstance(e, (sp.Function, sp.Max, sp.Min)) and not e.is_Piecewise:
            r = self.emit_function(e)
        else:
            r = self.emit_whole(e)
        self.memo[e] = r
        return r

    def note(self, e):
        text = sp.sstr(e)
        return text if len(text) <= 60 else text[:57] + "..."

    def emit_add(self, e):
        const = sp.Add(*[a for a in e.args if self.is_const(a)])
        terms = sorted((a for a in e.args if not self.is_const(a)),
                       key=lambda a: (-sp.count_ops(a), sp.default_sort_key(a)))
        plus, minus = [], []
        for t in terms:
            c, rest = t.as_coeff_Mul()
            (minus if c.is_negative else plus).append(-t if c.is_negative else t)
        if plus:
            r = self.emit(plus[0])
            for t in plus[1:]:
                r = self.ufunc("numpy.add", [r, self.emit(t)], self.note(e))
            for t in minus:
                r = self.ufunc("numpy.subtract", [r, self.emit(t)], self.note(e))
            if const != 0:
                if const.is_Number and const.is_negative:
                    return self.ufunc("numpy.subtract", [r, self.const(-const)], self.note(e))
                return self.ufunc("numpy.add", [r, self.const(const)], self.note(e))
            return r
        r = self.emit(minus[0])
        for t in minus[1:]:
            r = self.ufunc("numpy.add", [r, self.emit(t)], self.note(-sp.Add(*minus)))
        if const != 0:
            return self.ufunc("numpy.subtract", [self.const(const), r], self.note(e))
        return self.ufunc("numpy.negative", [r], self.note(e))

    def emit_mul(self, e):
        const = sp.Mul(*[a for a in e.args if self.is_const(a)])
        factors = [a for a in e.args if not self.is_const(a)]
        up = sorted((f for f in factors if not (f.is_Pow and f.exp.is_Number and f.exp < 0)),
                    key=lambda a: (-sp.count_ops(a), sp.default_sort_key(a)))
        down = sorted((1 / f for f in factors if f.is_Pow and f.exp.is_Number and f.exp < 0),
                      key=sp.default_sort_key)
        if not up:
            r = self.ufunc("numpy.divide", [self.const(const), self.emit(down[0])],
                           self.note(const / down[0]))
            for i, d in enumerate(down[1:]):
                r = self.ufunc("numpy.divide", [r, self.emit(d)], self.note(e))
            return r
        r = self.emit(up[0])
        if const == -1 and len(up) == 1 and not down:
            return self.ufunc("numpy.negative", [r], self.note(e))
        for f in up[1:]:
            r = self.ufunc("numpy.multiply", [r, self.emit(f)], self.note(e))
        for d in down:
            r = self.ufunc("numpy.divide", [r, self.emit(d)], self.note(e))
        if const != 1:
            r = self.ufunc("numpy.multiply", [r, self.const(const)], self.note(e))
        return r

    def emit_pow(self, e):
        b, x = e.base, e.exp
        if self.is_const(x) and x.is_Integer and 0 < x <= 64:
            return self.power(self.emit(b), int(x), e)
        if self.is_const(x) and x.is_Integer and x < 0:
            r = self.emit(b ** -x)
            return self.ufunc("numpy.divide", ["1", r], self.note(e))
        if x == sp.Rational(1, 2):
            return self.ufunc("numpy.sqrt", [self.emit(b)], self.note(e))
        if x == sp.Rational(-1, 2):
            r = self.ufunc("numpy.sqrt", [self.emit(b)], self.note(sp.sqrt(b)))
            return self.ufunc("numpy.divide", ["1", r], self.note(e))
        if x == sp.Rational(1, 3):
            return self.ufunc("numpy.cbrt", [self.emit(b)], self.note(e))
        return self.ufunc("numpy.power", [self.emit(b), self.emit(x)], self.note(e))

    def power(self, r, k, e):
        if k == 1:
            return r
        if k == 2:
            return self.ufunc("numpy.square", [r], self.note(e))
        half = self.power(r, k // 2, e.base ** (k // 2))
        sq = self.ufunc("numpy.square", [half], self.note(e.base ** (k // 2 * 2)))
        return sq if k % 2 == 0 else self.ufunc("numpy.multiply", [sq, r], self.note(e))

    def emit_function(self, e):
        holders = {}
        args = []
        for i, a in enumerate(e.args):
            if self.is_const(a):
                args.append(a if a.is_Number else sp.Symbol(self.const(a)))
                continue
            s = sp.Symbol(f"_a{i}")
            holders[s.name] = self.emit(a)
            args.append(s)
        text = self.p.doprint(e.func(*args))
        call = _ufunc_call(text, holders)
        if call is not None:
            name, operands = call
            return self.op("ufunc", name, operands, self.note(e))
        # not one ufunc (e.g. numpy.select for Heaviside): assign the printed expression, its
        # noise-dependent arguments read from their rows
        operands = list(holders.values())
        index = {name: f"_r{i}" for i, name in enumerate(holders)}
        text = re.sub(r"\b_a(\d+)\b", lambda m: index[m.group(0)], text)
        return self.op("assign", text, operands, self.note(e))

    def emit_whole(self, e):
        return self.assign(e)

    def assign(self, e):
        """Fallback: ``row[...] = <printed e>``, registers in e printed as placeholders."""
        holders, operands, subs = {}, [], {}
        for s in sorted(e.free_symbols & self.variables, key=lambda s: s.name):
            ph = sp.Symbol(f"_r{len(operands)}")
            subs[s] = ph
            operands.append(self.emit(s))
        text = self.p.doprint(e.xreplace(subs))
        return self.op("assign", text, operands, self.note(e))

    # --- the program
    def compile(self, replacements, targets, out_names, scratch_prefix):
        """ops for cse ``replacements`` and ``targets``, with registers assigned to rows."""
        self.variables = {self.noise}
        noise_reg = self.op("draw", self.draw, (), f"{self.noise}")
        self.regs[self.noise] = noise_reg
        for sym, expr in replacements:
            if not (expr.free_symbols & self.variables):
                self.const_defs.append((sym.name, expr))
                continue
            self.variables.add(sym)
            r = self.emit(expr)
            if isinstance(r, int):
                self.regs[sym] = r
                if self.ops[r].note and r != noise_reg:
                    self.ops[r].note = f"{sym} = {self.ops[r].note}"
            else:
                self.const_defs.append((sym.name, expr))
                self.variables.discard(sym)
        final = []
        own_noise = self.draw not in _DRAWS_WITH_OUT
        for j, t in enumerate(targets):
            r = self.emit(t)
            if not isinstance(r, int):
                r = self.op("fill", r, (), "")
            elif r in final or (r == noise_reg and own_noise):
                r = self.op("copy", "", (r,), "")
            final.append(r)
        return self.allocate(final, out_names, scratch_prefix)

    def allocate(self, final, out_names, scratch_prefix):
        ops, end = self.ops, len(self.ops)
        last = {op.result: op.result for op in ops}
        for i, op in enumerate(ops):
            for a in op.args:
                if isinstance(a, int):
                    last[a] = max(last[a], i)
        for r in final:
            last[r] = end
        occupied = {}      # row -> [(start, stop)]
        rows = {}

        def fits(row, start, stop):
            return all(stop <= s or t <= start for s, t in occupied.get(row, ()))

        def take(reg, row):
            rows[reg] = row
            occupied.setdefault(row, []).append((reg, last[reg]))

        for j, r in enumerate(final):
            take(r, ("out", j))
        copies = {op.args[0]: rows[op.result] for op in ops if op.kind == "copy"}
        noise_own = self.draw not in _DRAWS_WITH_OUT
        scratch = 0
        for op in ops:
            r = op.result
            if r in rows:
                continue
            start, stop = r, last[r]
            if op.kind == "draw" and noise_own:
                take(r, ("noise", 0))
                continue
            prefer = [copies[r]] if r in copies else []
            if op.kind != "draw":
                prefer += [rows[a] for a in op.args if isinstance(a, int) and last[a] == r]
            prefer += [("out", j) for j in range(len(final))]
            prefer += [("tmp", i) for i in range(scratch)]
            if noise_own:
                prefer.append(("noise", 0))
            for row in prefer:
                if fits(row, start, stop):
                    take(r, row)
                    break
            else:
                take(r, ("tmp", scratch))
                scratch += 1
        scratch_names = tuple(self.names.get(f"{scratch_prefix}{i}") for i in range(scratch))
        noise_name = self.names.get("noise") if noise_own else None

        def name(row):
            kind, i = row
            return {"out": out_names, "tmp": scratch_names}[kind][i] if kind != "noise" \
                else noise_name

        named_rows = {r: name(row) for r, row in rows.items()}
        return _Program(self.const_defs, ops, named_rows, scratch, noise_own, tuple(out_names),
                        scratch_names)


def _print_ops(program, draw_line, dtype_name, target_notes):
    """Source lines for the ops of a compiled program."""
    lines = []
    rows = program.rows
    final = {}
    for j, note in enumerate(target_notes):
        final[program.out_names[j]] = note

    def operand(a):
        return rows[a] if isinstance(a, int) else a

    for op in program.ops:
        dest = rows[op.result]
        if op.kind == "draw":
            code = draw_line(dest)
        elif op.kind == "ufunc":
            code = f"{op.text}({', '.join(map(operand, op.args))}, out={dest})"
        elif op.kind == "assign":
            text = re.sub(r"\b_r(\d+)\b", lambda m: operand(op.args[int(m.group(1))]), op.text)
            code = f"{dest}[...] = {text}"
        elif op.kind == "fill":
            code = f"{dest}[...] = {op.text}"
        else:
            src = operand(op.args[0])
            if src == dest:
                continue
            code = f"numpy.copyto({dest}, {src})"
        lines.append((code, op.note, op.result))
    # mark the op that finishes each output row
    done = {}
    for i, (code, note, r) in enumerate(lines):
        dest = rows[r]
        if dest in final:
            done[dest] = i
    out = []
    for i, (code, note, r) in enumerate(lines):
        dest = rows[r]
        if done.get(dest) == i:
            note = f"{final[dest]}"
        out.append((code, note))
    return out


def _format_lines(pairs, indent="    ", width=100):
    """Code lines with their comments aligned where they fit; a statement too long for one
    line gets its comment above and its right-hand side wrapped inside parentheses."""
    short = [len(c) for c, _ in pairs if len(indent) + len(c) <= 60]
    col = max(short, default=0) + 2
    lines = []
    for code, note in pairs:
        if len(indent) + len(code) > width:
            if note:
                lines.append(f"{indent}# {note}")
            lines += _wrap_statement(code, indent, width)
            continue
        if not note:
            lines.append(indent + code)
            continue
        line = f"{indent}{code.ljust(col) if len(code) < col else code + '  '}# {note}"
        if len(line) > width:
            line = f"{indent}{code}  # {note}"
        if len(line) > width:
            lines += [f"{indent}# {note}", indent + code]
            continue
        lines.append(line)
    return lines


def keyword_parameters(p) -> tuple:
    """The keyword arguments of a generated scalar-family function: the family's symbols in the
    order of its parameters, then the other symbols of f by name."""
    fam = p.family
    order = [str(t) for t in fam.theta]
    fam_syms = sorted(fam.symbols, key=lambda s: order.index(str(s)) if str(s) in order
                      else len(order))
    others = sorted(p.f.free_symbols - {Z} - set(fam_syms), key=lambda s: s.name)
    return tuple(fam_syms) + tuple(others)


def scalar_preamble(fam, params, printer) -> tuple:
    """(lines, theta) opening a generated function of scalar parameters: each parameter as a
    float, the family's constraints checked with a ValueError naming them, and the family's
    parameters theta that are expressions of the user's printed once as ``_theta{i}``; theta
    maps each family parameter to the name that holds its value."""
    body = [f"    {s.name} = float({s.name})" for s in params]
    for c in fam.constraints:
        expr = fam._sub(c.expr)
        body.append(f"    if not {printer.doprint(expr)} > 0:")
        body.append(f"        raise ValueError({(fam.name + ' needs ' + c.text)!r})")
    theta = {}
    for i, (param, t) in enumerate(zip(fam.params, fam.theta)):
        if t == param:
            theta[param.name] = param.name
        else:
            body.append(f"    _theta{i} = {printer.doprint(stable(t))}")
            theta[param.name] = f"_theta{i}"
    return body, theta


def _wrap_statement(code, indent, width):
    """``lhs = rhs`` as ``lhs = (`` wrapped rhs ``)``: Python joins lines inside brackets, so
    breaking at any space between tokens keeps the meaning (printed code has no strings)."""
    lhs, sep, rhs = code.partition(" = ")
    if not sep:
        return [indent + code]
    body = textwrap.wrap(rhs, width=width - len(indent) - 4, break_long_words=False,
                         break_on_hyphens=False)
    return [f"{indent}{lhs} = (", *(f"{indent}    {b}" for b in body), f"{indent})"]


# ------------------------------------------------------------------ closed forms


def _candidates(expr):
    """Equivalent forms of a closed form, from which the most accurate is printed."""
    out = [expr]
    if sp.count_ops(expr) > 300:
        return out
    try:
        out.append(sp.factor(expr))
    except (sp.PolynomialError, NotImplementedError, TypeError, ValueError):
        pass
    num, den = sp.fraction(sp.together(expr))
    expanded = sp.expand(num)
    if sp.count_ops(expanded) <= 400:
        for s in sorted(expr.free_symbols, key=lambda s: s.name):
            try:
                out.append(sp.collect(expanded, s, func=sp.factor) / den)
            except (sp.PolynomialError, NotImplementedError, TypeError, ValueError):
                pass
    try:  # exp(8*exp(2*s))*exp(-8*exp(2*s)) overflows unless the exponentials are combined
        expanded = sp.expand(expr)
        if sp.count_ops(expanded) <= 400:
            out.append(sp.powsimp(expanded, combine="exp"))
    except (sp.PolynomialError, NotImplementedError, TypeError, ValueError):
        pass
    unique = []
    for c in out:
        if c not in unique:
            unique.append(c)
    return unique


def _sample_points(problem, symbols, count=12):
    """Deterministic parameter values in the family's domain, for comparing forms."""
    rnd = random.Random(20240611)
    points = []
    for _ in range(count * 8):
        values = {}
        for s in symbols:
            if s.is_positive:
                values[s] = sp.Rational(repr(round(10 ** rnd.uniform(-0.7, 0.9), 6)))
            else:
                values[s] = sp.Rational(repr(round(rnd.uniform(-4, 4), 6)))
        try:
            problem.family.check_values(values)
        except (DeriveError, TypeError):
            continue
        points.append(values)
        if len(points) == count:
            break
    return points


def _float_function(text, symbols):
    """The printed form as a Python function of the symbols (our own printed code, not user
    text), evaluated as the generated module would."""
    import numpy
    import scipy.special  # noqa: F401 (the printed forms may use it)
    namespace = {"numpy": numpy, "scipy": __import__("scipy")}
    args = ", ".join(s.name for s in symbols)
    return eval(compile(f"lambda {args}: {text}", "<closed form>", "eval"), namespace)


def _exact_function(expr, symbols):
    """expr as a function evaluated in 50-digit mpmath arithmetic, or None (complex, or not
    finite, at a point). Exact enough to rank forms whose float64 errors differ by powers of 10.
    """
    fn = sp.lambdify(symbols, expr, modules="mpmath")

    def value(point):
        with mpmath.workdps(50):
            try:
                x = fn(*(mpmath.mpf(point[s].p) / point[s].q for s in symbols))
            except (ValueError, ZeroDivisionError, TypeError, OverflowError):
                return None
            if isinstance(x, mpmath.mpc):
                if abs(x.imag) > mpmath.mpf(10) ** -40 * (1 + abs(x.real)):
                    return None
                x = x.real
            return x if mpmath.isfinite(x) else None
    return value


def best_form(expr, problem, conditions=()):
    """The form of ``expr`` whose float64 value is closest to the exact one at sample points
    (ties: the shortest). Long variance expressions cancel catastrophically when expanded, e.g.
    mu**2 - 2*mu*x + x**2 + 2*sigma**2 rather than (mu - x)**2 + 2*sigma**2."""
    forms = _candidates(expr)
    if len(forms) == 1:
        return expr
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    points = [v for v in _sample_points(problem, symbols)
              if all(holds(c, v) is not False for c in conditions)]
    exact_at = _exact_function(expr, symbols)
    exact = [(v, x) for v in points for x in [exact_at(v)] if x is not None]
    if not exact:
        return expr
    printer = _Printer()

    def error(form):
        import numpy
        fn = _float_function(printer.doprint(_fold_numbers(form)), symbols)
        worst = 0.0
        for v, x in exact:
            try:
                with numpy.errstate(all="ignore"):
                    got = float(fn(*(numpy.float64(float(v[s])) for s in symbols)))
            except Exception:  # noqa: BLE001 - a form that fails to evaluate is not chosen
                return float("inf")
            err = abs(mpmath.mpf(got) - x) / max(abs(x), mpmath.mpf(10) ** -300)
            worst = max(worst, float(err)) if got == got else float("inf")
        return worst

    scored = []
    for form in forms:
        e = error(form)
        bucket = -400 if e == 0 else round(float(mpmath.log10(e)) * 2) if e != float("inf") else 999
        scored.append((bucket, sp.count_ops(form), sp.default_sort_key(form), form))
    return min(scored, key=lambda s: s[:3])[3]


# ------------------------------------------------------------------ the module


@dataclass
class _Context:
    """What every generated function shares: names, parameters, printer."""

    analysis: object
    dtype: str
    printer: _Printer
    names: _Names
    params: tuple            # symbols in signature order
    family_params: tuple     # the symbols q depends on
    wrt: tuple
    rng: str
    n: str
    shape: str
    out: str

    def local(self):
        """Names for one function's own variables (rows, constants, common subexpressions)."""
        return _Names(self.names.taken)


def _signature(ctx, *, sampler=False, samples=True):
    head = [ctx.rng, ctx.n] if samples else []
    kw = []
    for s in ctx.params:
        if sampler and s not in ctx.family_params:
            kw.append(f"{s.name}=None")
        else:
            kw.append(s.name)
    return ", ".join(head + ["*"] + kw)


def _prepare_lines(ctx, symbols, *, samples=True, float64=False):
    names = ", ".join(s.name for s in symbols)
    tup = f"({names},)" if len(symbols) == 1 else f"({names})"
    opts = []
    if float64:
        opts.append("numpy.float64")
    if not samples:
        opts.append("samples=False")
    extra = "".join(f", {o}" for o in opts)
    lines = [f"{tup}, {ctx.shape} = _parameters({tup}{extra})"]
    checks = _constraint_symbols(ctx)
    if checks and set(checks) <= set(symbols):
        lines.append(f"_check({', '.join(s.name for s in checks)})")
    return lines


def _constraints(ctx):
    fam = ctx.analysis.problem.family
    out = []
    for c in fam.constraints:
        expr = fam._sub(c.expr)
        free = {s: sp.Dummy(real=True) for s in expr.free_symbols if s in fam.params}
        if expr.xreplace(free).is_positive:
            continue  # e.g. sigma = exp(s): positive whatever the user passes
        out.append((expr, c.text))
    return out


def _constraint_symbols(ctx):
    syms = set()
    for expr, _ in _constraints(ctx):
        syms |= expr.free_symbols
    return tuple(s for s in ctx.params if s in syms)


def _draw_line(ctx, base):
    method = base.numpy_draw.split("(")[0]
    size = f"(*{ctx.shape}, {ctx.n})"
    if method in _DRAWS_WITH_OUT:
        dtype = ", dtype=DTYPE" if ctx.dtype == "float32" else ""
        return lambda dest: f"{ctx.rng}.{method}(out={dest}{dtype})"
    cast = ".astype(DTYPE)" if ctx.dtype == "float32" else ""
    return lambda dest: f"{dest} = {ctx.rng}.{method}(size={size}){cast}"


def _compile_rows(ctx, names, targets, noise, out_names):
    """The compiled program computing ``targets`` (expressions of the noise) into the output
    rows, and the source lines of its constants."""
    variables = {noise}
    prepared = [_fold_numbers(_accurate(stable(t), variables)) for t in targets]
    prepared = _arrange(prepared, variables)
    replacements, reduced = sp.cse(prepared, symbols=names.numbered("x"), order="canonical")
    replacements, reduced = _strip_constants(replacements, reduced, variables)
    draw = ctx.analysis.problem.family.base.numpy_draw.split("(")[0]
    kernel = _Kernel(ctx.printer, noise, names, draw, names.numbered("c"))
    program = kernel.compile(replacements, reduced, out_names, "t")
    used = _used_constants(program)
    const_lines = [(f"{name} = {ctx.printer.doprint(expr)}", "")
                   for name, expr in program.constants if name in used]
    return program, const_lines


def _strip_constants(replacements, reduced, noise):
    """Move a constant factor C out of a common subexpression x = C*R when every use of x
    already multiplies by a constant: the uses absorb C for free and x costs one pass less."""
    replacements, reduced = list(replacements), list(reduced)
    variables = set(noise)
    for i, (x, expr) in enumerate(replacements):
        if not expr.has(*variables):
            continue
        variables.add(x)
        c, rest = _split(expr, variables)
        later = [e for _, e in replacements[i + 1:]] + reduced
        if c == 1 or not rest.has(*variables) or not _all_scaled(x, later, variables):
            continue
        replacements[i] = (x, rest)
        scale = {x: c * x}
        replacements[i + 1:] = [(y, e.xreplace(scale)) for y, e in replacements[i + 1:]]
        reduced = [e.xreplace(scale) for e in reduced]
    return replacements, reduced


def _all_scaled(x, exprs, variables):
    """Whether every occurrence of x is a factor of a product with a constant factor != 1."""
    for e in exprs:
        if e == x:
            return False
        for node in sp.preorder_traversal(e):
            if x in node.args:
                if not node.is_Mul or _split(node, variables)[0] == 1:
                    return False
    return True


def _used_constants(program):
    """Names of constants that the ops (or other used constants) refer to."""
    text = " ".join(op.text + " " + " ".join(a for a in op.args if isinstance(a, str))
                    for op in program.ops)
    used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    for name, expr in reversed(program.constants):
        if name in used:
            used |= {s.name for s in expr.free_symbols}
    return used


def _kernel_function(ctx, names, fname, doc, targets, noise, out_names, notes, *,
                     sampler=False):
    """def fname(rng, n, *, params): draw, compute rows, return per-sample array."""
    program, const_lines = _compile_rows(ctx, names, targets, noise, out_names)
    base = ctx.analysis.problem.family.base
    draw = _draw_line(ctx, base)
    ops = _print_ops(program, draw, ctx.dtype, notes)
    k = len(targets)
    body = _prepare_lines(ctx, ctx.family_params if sampler else ctx.params)
    body += [c for c, _ in const_lines]
    rows = out_names + program.scratch_names
    unpack = ", ".join(rows) + ("," if len(rows) == 1 else "")
    if program.scratch:   # one allocation: output rows, then scratch rows
        buffer = names.get("buffer")
        body.append(f"{buffer} = numpy.empty(({len(rows)}, *{ctx.shape}, {ctx.n}), DTYPE)")
        body.append(f"{ctx.out} = {buffer}[:{k}]")
        body.append(f"({unpack}) = {buffer}")
    else:
        body.append(f"{ctx.out} = numpy.empty(({k}, *{ctx.shape}, {ctx.n}), DTYPE)")
        body.append(f"({unpack}) = {ctx.out}")
    lines = [f"def {fname}({_signature(ctx, sampler=sampler)}):"]
    lines += _docstring(doc)
    lines += ["    " + b for b in body]
    lines += _format_lines(ops)
    if sampler:
        lines.append(f"    return _per_sample({ctx.out})[..., 0]")
    else:
        lines.append(f"    return _per_sample({ctx.out})")
    return lines


def _docstring(text, indent="    "):
    body = textwrap.indent(text.strip("\n"), indent)
    lines = body.splitlines()
    lines[0] = indent + '"""' + lines[0].lstrip()
    if len(lines) == 1:
        return [lines[0] + '"""']
    return [line.rstrip() for line in lines] + [indent + '"""']


def _wrap(text, indent, width=96):
    return textwrap.fill(text, width=width, initial_indent=indent,
                         subsequent_indent=indent + "    ", break_long_words=False,
                         break_on_hyphens=False)


def _closed_function(ctx, fname, doc, entries, *, fill, result_lines=None):
    """def fname(*, params): closed forms into out[..., j]; entries: [(expr | None, conds)]."""
    exprs = []
    for e, conds in entries:
        exprs.append(e)
    present = [e for e in exprs if e is not None]
    symbols = ctx.local().numbered("x")
    prepared = [_fold_numbers(stable(e)) for e in present]
    replacements, reduced = sp.cse(prepared, symbols=symbols, order="canonical")
    body = _prepare_lines(ctx, ctx.params, samples=False, float64=True)
    for sym, e in replacements:
        body.append(f"{sym.name} = {ctx.printer.doprint(e)}")
    body.append(f"{ctx.out} = numpy.empty((*{ctx.shape}, {len(entries)}))")
    it = iter(reduced)
    needs_errstate = any(conds for e, conds in entries if e is not None)
    assigns = []
    for j, (e, conds) in enumerate(entries):
        label = f"d/d{ctx.wrt[j]}"
        if e is None:
            assigns.append((f"{ctx.out}[..., {j}] = numpy.nan", f"{label}: no closed form"))
            continue
        r = next(it)
        text = ctx.printer.doprint(r)
        if conds:
            cond = ctx.printer.doprint(sp.And(*conds))
            text = f"numpy.where({cond}, {text}, {fill})"
        assigns.append((f"{ctx.out}[..., {j}] = {text}", label))
    lines = [f"def {fname}({_signature(ctx, samples=False)}):"]
    lines += _docstring(doc)
    lines += ["    " + b for b in body]
    if needs_errstate:
        lines.append("    with numpy.errstate(all=\"ignore\"):  # values outside the conditions "
                     "are replaced")
        lines += _format_lines(assigns, indent="        ")
    else:
        lines += _format_lines(assigns)
    lines.append(f"    return {ctx.out}")
    return lines


_HELPERS = '''
def _parameters(values, dtype=None, samples=True):
    """The parameters as numbers of ``dtype`` (default DTYPE) and their broadcast shape S.

    Scalars stay scalars. Arrays are broadcast together; with ``samples`` each gets a trailing
    axis of length 1, so that it broadcasts against per-sample rows of shape (*S, n).
    """
    dtype = DTYPE if dtype is None else dtype
    shape = numpy.broadcast(*values).shape
    if not shape:
        return tuple(dtype(v) for v in values), shape
    arrays = numpy.broadcast_arrays(*(numpy.asarray(v, dtype) for v in values))
    if samples:
        return tuple(a[..., None] for a in arrays), shape
    return tuple(arrays), shape


def _holds(condition):
    """Whether a NumPy condition holds everywhere (fast for a scalar: .all() costs 2 us)."""
    return bool(condition) if condition.ndim == 0 else bool(condition.all())


def _per_sample(out):
    """The (k, *S, n) buffer as an (n, *S, k) view: out.T for scalar parameters, which keeps
    unit stride along the samples (numeric.estimate reduces that layout without a copy)."""
    if out.ndim == 2:
        return out.T
    return out.transpose(out.ndim - 1, *range(1, out.ndim - 1), 0)
'''


def _check_function(ctx):
    syms = _constraint_symbols(ctx)
    if not syms:
        return []
    fam = ctx.analysis.problem.family
    lines = [f"def _check({', '.join(s.name for s in syms)}):",
             f'    """Raise ValueError where the parameters leave the domain of {fam}."""']
    for c in fam.constraints:
        expr = fam._sub(c.expr)
        if (expr, c.text) not in _constraints(ctx):
            continue
        cond = f"{ctx.printer.doprint(expr)} > 0"
        shown = c.text if expr == c.expr else f"{c.text}, where {sp.sstr(c.expr)} = {sp.sstr(expr)}"
        lines.append(f"    if not _holds({cond}):")
        lines.append(f"        raise ValueError({f'{fam} needs {shown}'!r})")
    return lines


_TITLES = {"score": "Score-function (log-derivative, REINFORCE) estimator of grad E_q[f]:",
           "pathwise": "Pathwise (reparameterization) estimator of grad E_q[f]:",
           "score_baseline": "Score-function estimator of grad E_q[f] with a constant baseline:",
           "score_delta": "Score-function estimator of grad E_q[f] with the delta-method "
                          "control variate:",
           "measure_valued": "Measure-valued derivative (coupled) of grad E_q[f]:"}


def _estimator_doc(ctx, kind, est):
    fam = ctx.analysis.problem.family
    k = len(ctx.wrt)
    lines = [_TITLES[kind], "", _wrap(est.formula, "    "), ""]
    for w, c in zip(ctx.wrt, est.components):
        lines.append(_wrap(f"d/d{w}: h = {sp.sstr(c)}", "    "))
    if kind.startswith("score"):
        lines += ["", _wrap(f"computed from the noise: z = {sp.sstr(fam.q_transform)}, "
                            f"{fam.base.text}.", "")]
    lines += ["", _wrap(f"Requires: {est.requires}.", "")]
    for note in est.notes:
        lines.append(_wrap(f"Note: {note}.", ""))
    lines += ["", f"Returns an (n, {k}) array, one estimate a row (column j for WRT[j]); with "
                  f"parameter", f"arrays of broadcast shape S, (n, *S, {k}). All noise is drawn "
                  f"in one call."]
    return "\n".join(lines)


def _header(ctx, command, version):
    a = ctx.analysis
    p, fam = a.problem, a.problem.family
    lines = [f"Monte Carlo gradient estimators of grad_({', '.join(map(str, p.wrt))}) "
             f"E_{{z ~ q}}[f(z)].", ""]
    lines.append(_wrap(f"q = {fam}, sampled as {fam.sampler_text}", ""))
    if fam.theta != fam.params:
        lines.append("    with " + ", ".join(f"{s} = {sp.sstr(t)}" for s, t in
                                               zip(fam.params, fam.theta) if s != t))
    lines.append(_wrap(f"f(z) = {sp.sstr(p.f)}", ""))
    lines += ["", f"WRT = {tuple(w.name for w in p.wrt)!r}: the columns of every gradient.",
              f"PARAMETERS = {tuple(s.name for s in ctx.params)!r}: keyword arguments of every "
              f"function.",
              "Arrays of parameters broadcast: with parameters of broadcast shape S, sample "
              "returns", "(n, *S) and the estimators (n, *S, len(WRT)); exact_gradient "
              "returns (*S, len(WRT)).",
              f"DTYPE = numpy.{ctx.dtype}: the precision of the samples and the estimates.", ""]
    if getattr(fam, "implicit", False):
        lines[-1:-1] = ["sample and the estimators take scalar parameters only (z is drawn by "
                        "NumPy's own", "sampler; dz/dtheta of a shape parameter is computed "
                        "numerically with scipy.special)."]
    if getattr(fam, "discrete", False):
        from ._discrete import MODULE_NOTE
        note = MODULE_NOTE + ("" if ctx.n == "n" else f" The number of samples is called "
                              f"{ctx.n} (n is a parameter of q).")
        lines[-4:-2] = textwrap.wrap(note, 92)  # instead of "Arrays of parameters broadcast"
    for kind, est in a.estimators.items():
        name = FUNCTION_NAMES[kind]
        if not est.applies:
            lines += [f"{name}: not generated.", _wrap(est.refused, "    "), ""]
            continue
        lines += [f"{name}({ctx.rng}, {ctx.n}, **params):", _wrap(est.formula, "    ")]
        for w, c in zip(p.wrt, est.components):
            lines.append(_wrap(f"d/d{w}: {sp.sstr(c)}", "    "))
        lines.append("")
    grad = a.gradient
    if any(g.expr is not None for g in grad.values()):
        lines.append("exact_gradient(**params):")
        for w, g in grad.items():
            text = sp.sstr(g.expr) if g.expr is not None else "(no closed form)"
            lines.append(_wrap(f"d/d{w} E_q[f] = {text}", "    "))
        lines.append("")
    else:
        lines += ["exact_gradient: not generated.", _wrap(next(iter(grad.values())).missing or
                                                           "no closed form", "    "), ""]
    var_lines = []
    for kind, vs in a.variances.items():
        if not vs or all(v.expr is None for v in vs):
            continue
        var_lines.append(f"    {FUNCTION_NAMES[kind]}:")
        for w, v in zip(p.wrt, vs):
            text = sp.sstr(v.expr) if v.expr is not None else (
                "infinite" if v.infinite else "(no closed form)")
            var_lines.append(_wrap(f"Var h_{w} = {text}", "        "))
    if var_lines:
        lines += ["variance(**params): per-sample variances of each estimator's columns:"]
        lines += var_lines + [""]
    sections = "4, 5 and 6" if "measure_valued" in a.estimators else "4 and 5"
    lines += ["Reference: Mohamed, Rosca, Figurnov, Mnih (2020), \"Monte Carlo Gradient "
              "Estimation in", f"Machine Learning\", JMLR 21(132), sections {sections}.", ""]
    by = f"Generated by mcgrad {version}" if version else "Generated by mcgrad"
    lines.append(f"{by}{' with:' if command else '.'}")
    if command:
        lines.append(f"    {command}")
    lines.append("Needs NumPy only (and scipy.special where imported below). Regenerate rather "
                 "than edit.")
    return "\n".join(lines)


def _context(analysis, dtype):
    p = analysis.problem
    fam = p.family
    eps = fam.base.symbol if fam.base is not None else Z  # implicit families: z itself
    fam_syms = sorted(fam.symbols, key=lambda s: _theta_order(fam, s))
    other = sorted(p.f.free_symbols - {Z} - set(fam_syms), key=lambda s: s.name)
    params = tuple(fam_syms) + tuple(other)
    for s in params:
        if s.name in RESERVED:
            raise DeriveError(f"the symbol {s.name} would shadow a name the generated module "
                              f"uses ({', '.join(sorted(RESERVED))}); rename it")
        if s.name == eps.name:
            raise DeriveError(f"the symbol {s.name} is the name of the base noise {fam.base.text}"
                              f"; rename it")
    names = _Names({s.name for s in params} | RESERVED | {eps.name})
    printer = _Printer()
    return _Context(analysis, dtype, printer, names, params, tuple(fam_syms),
                    tuple(w.name for w in p.wrt), names.get("rng"), names.get("n"),
                    names.get("shape"), names.get("out"))


def _theta_order(fam, s):
    for i, t in enumerate(fam.theta):
        if s in sp.sympify(t).free_symbols:
            return (i, s.name)
    return (len(fam.theta), s.name)


def _analysis(problem_or_analysis, budget=None):
    from ._analysis import Analysis, analyze
    from ._estimators import Problem
    if isinstance(problem_or_analysis, Analysis):
        return problem_or_analysis
    if isinstance(problem_or_analysis, Problem):
        return analyze(problem_or_analysis, budget=budget, steps=False)
    raise DeriveError(f"generate_module takes a Problem or an Analysis, not "
                      f"{type(problem_or_analysis).__name__}")


def _check_dtype(dtype):
    if dtype not in DTYPES:
        raise DeriveError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


def _estimator_lines(ctx, kind, est):
    fam = ctx.analysis.problem.family
    eps = fam.base.symbol
    if not est.applies:
        return [f"# {FUNCTION_NAMES[kind]} is not generated: the {kind} estimator does not "
                f"apply.", *("# " + line for line in textwrap.wrap(est.refused, 96))]
    names = ctx.local()
    out_names = tuple(names.get(f"h_{w}") for w in ctx.wrt)
    notes = [f"d/d{w}" for w in ctx.wrt]
    return _kernel_function(ctx, names, FUNCTION_NAMES[kind], _estimator_doc(ctx, kind, est),
                            list(est.in_base), eps, out_names, notes)


def _sample_lines(ctx):
    fam = ctx.analysis.problem.family
    others = [s.name for s in ctx.params if s not in ctx.family_params]
    doc = (_wrap(f"n draws of z ~ {fam}: {fam.sampler_text}.", "", 92) +
           "\n\nReturns shape (n,), or (n, *S) for parameter arrays of broadcast shape S.")
    if others:
        doc += (f"\n{', '.join(others)}: not used by q; accepted so that one dict of parameters "
                f"serves every function.")
    names = ctx.local()
    z = names.get("z")
    return _kernel_function(ctx, names, "sample", doc, [fam.q_transform], fam.base.symbol, (z,),
                            ["z"], sampler=True)


def _gradient_lines(ctx):
    grad = ctx.analysis.gradient
    if all(g.expr is None for g in grad.values()):
        reason = next(iter(grad.values())).missing or "no closed form"
        text = (f"exact_gradient is not generated: E_q[f] has no closed form here ({reason}). "
                f"numeric.estimate with many samples, or mcgrad check, gives it by quadrature.")
        return ["# " + line for line in textwrap.wrap(text, 96)]
    entries = []
    for w, g in grad.items():
        expr = best_form(g.expr, ctx.analysis.problem, g.conditions) if g.expr is not None \
            else None
        entries.append((expr, g.conditions))
    doc = ("d/dWRT[j] E_q[f] from its closed form, shape (len(WRT),), or (*S, len(WRT)) for\n"
           "parameter arrays of broadcast shape S. Computed in float64; nan where E_q[f] does "
           "not\nexist (a validity condition of the closed form fails).")
    return _closed_function(ctx, "exact_gradient", doc, entries, fill="numpy.nan")


def _variance_lines(ctx):
    a = ctx.analysis
    blocks, names = [], []
    for kind, vs in a.variances.items():
        if not vs or all(v.expr is None and not v.infinite for v in vs):
            continue
        entries = []
        for v in vs:
            if v.infinite:
                entries.append((sp.oo, ()))
            elif v.expr is None:
                entries.append((None, ()))
            else:
                entries.append((best_form(v.expr, a.problem, v.conditions), v.conditions))
        name = f"_variance_{FUNCTION_NAMES[kind]}"
        doc = (f"Per-sample variances of the columns of {FUNCTION_NAMES[kind]}, shape "
               f"(*S, len(WRT)).")
        lines = _closed_function(ctx, name, doc, entries, fill="numpy.inf")
        blocks.append(lines)
        names.append(FUNCTION_NAMES[kind])
    missing = [FUNCTION_NAMES[k] for k, vs in a.variances.items()
               if vs and FUNCTION_NAMES[k] not in names]
    if not blocks:
        return ["# variance is not generated: no closed form of the per-sample variances was "
                "found", "# (mcgrad check gives them by quadrature at given values)."]
    out = []
    for b in blocks:
        out += b + ["", ""]
    doc = ["Per-sample variances Var h_j of each estimator, from their closed forms.", "",
           "Returns {estimator name: array of shape (len(WRT),), or (*S, len(WRT)) for "
           "parameter", "arrays of broadcast shape S}, in float64, the order of WRT: the "
           "variance of one", "row of the estimator, so the standard error of a mean of n rows "
           "is sqrt(variance / n).", "inf where the variance is infinite; nan where a "
           "component has no closed form."]
    if missing:
        doc.append(f"Not included (no closed form): {', '.join(missing)}.")
    sig = _signature(ctx, samples=False)
    kwargs = ", ".join(f"{s.name}={s.name}" for s in ctx.params)
    out.append(f"def variance({sig}):")
    out += _docstring("\n".join(doc))
    out.append("    return {")
    for n_ in names:
        out.append(f"        {n_!r}: _variance_{n_}({kwargs}),")
    out.append("    }")
    return out


def _baseline_lines(ctx, budget):
    """score_function_baseline and optimal_baseline, or a comment saying why they are absent."""
    from ._baselines import optimal_baseline, optimal_score_baseline
    p = ctx.analysis.problem
    est = optimal_score_baseline(p, budget=budget)
    if not est.applies:
        return ["# score_function_baseline and optimal_baseline are not generated:",
                *("# " + line for line in textwrap.wrap(est.refused, 96))]
    opt = optimal_baseline(p, budget=budget)
    entries = [(best_form(ex.expr, p, ex.conditions), ex.conditions) for ex in opt.values()]
    doc = ("The optimal constant baseline b*_j = E[h_j s_j]/E[s_j**2] of score_function_baseline,"
           "\nshape (len(WRT),), or (*S, len(WRT)); float64, nan where a condition fails.")
    lines = (_discrete.estimator_lines(ctx, est.kind, est) if p.family.discrete else
             _estimator_lines(ctx, est.kind, est))
    return lines + ["", ""] + _closed_function(ctx, "optimal_baseline", doc, entries,
                                               fill="numpy.nan")


def _with_measure_valued(analysis, budget):
    """The analysis with the coupled measure-valued estimator and its exact per-sample
    variances (closed forms from derive/_mvd.py) added, for the module's header, function and
    variance()."""
    from dataclasses import replace
    from ._mvd import measure_valued, moments
    est = measure_valued(analysis.problem, coupled=True)
    variances = dict(analysis.variances)
    variances["measure_valued"] = tuple(v for _, v in moments(est, budget=budget))
    return replace(analysis, estimators={**analysis.estimators, "measure_valued": est},
                   variances=variances)


def _measure_valued_lines(ctx, est):
    """def measure_valued(rng, n, *, params), the body derive/_mvd.py gives
    :func:`derive.numpy_estimator`, or a comment with the reason it does not apply."""
    from . import _mvd
    if not est.applies:
        return ["# measure_valued is not generated: the measure-valued estimator does not apply.",
                *("# " + line for line in textwrap.wrap(est.refused, 96))]
    lines = [_TITLES["measure_valued"], "", _wrap(est.formula, "    "), ""]
    lines += [_wrap(f"d/d{w}: h = {sp.sstr(c)}", "    ") for w, c in zip(ctx.wrt, est.components)]
    lines += ["", _wrap("noise: " + "; ".join(_mvd.LAWS[s] for s in est.noise) + ", all drawn "
                        "from standard normals in one call (w = |(g1, g2)|, m = sign(g1)|(g1, "
                        "g2, g3)|, u*m = g1).", "")]
    lines += ["", _wrap(f"Requires: {est.requires}.", "")]
    lines += [_wrap(f"Note: {n}.", "") for n in est.notes]
    lines += ["", f"Returns an ({ctx.n}, {len(ctx.wrt)}) array, one estimate a row (column j "
                  f"for WRT[j]). Scalar", "parameters only."]
    body = ["    " + line for line in _prepare_lines(ctx, ctx.params, samples=False)]
    body += [f"    if {ctx.shape}:",
             "        raise ValueError('measure_valued takes scalar parameters only')"]
    return ([f"def measure_valued({_signature(ctx)}):", *_docstring("\n".join(lines)), *body,
             *_mvd.body_lines(est, ctx.printer, ctx.rng, ctx.n)])


def _estimator_part(ctx, kind, est, implicit, discrete):
    if kind == "measure_valued":  # several noise variables per sample: derive/_mvd.py
        return _measure_valued_lines(ctx, est)
    if discrete:
        return _discrete.estimator_lines(ctx, kind, est)
    if implicit:
        return _implicit.estimator_lines(ctx, kind, est)
    return _estimator_lines(ctx, kind, est)


def generate_module(problem_or_analysis, *, dtype="float64", command=None, version=None,
                    budget=None, baseline=False, mvd=False) -> str:
    """Source of a standalone Python module for a gradient problem: sampler, estimators, exact
    gradient and variances.

    The module defines ``WRT``, ``PARAMETERS``, ``DTYPE``, ``sample(rng, n, **params)``,
    ``score_function(rng, n, **params)`` and ``pathwise(rng, n, **params)`` (per-sample
    gradients, shape ``(n, len(WRT))``; an estimator that does not apply is left out with a
    comment saying why), ``exact_gradient(**params)`` and ``variance(**params)`` where closed
    forms exist. It needs NumPy only, and ``scipy.special`` where a special function requires
    it. The same inputs give byte-identical source.

    Args:
        problem_or_analysis: a :class:`Problem` (analysed here, without derivation steps) or an
            :class:`Analysis`.
        dtype: "float64" or "float32" (draws and per-sample arithmetic in float32: half the
            memory traffic; closed forms stay float64).
        command: the command line that generated the module, for its header.
        version: the generating package's version, for its header.
        budget: seconds for SymPy's integrate when analysing a Problem (None: the default).
        baseline: also write ``score_function_baseline(rng, n, **params)``, the score-function
            estimator with the optimal constant baseline, and ``optimal_baseline(**params)``
            (b*_w per column), where b* has a closed form (:func:`derive.optimal_baseline`).
        mvd: also write ``measure_valued(rng, n, **params)``, the coupled measure-valued
            derivative (normal family only; :func:`derive.measure_valued`), and its exact
            per-sample variances in ``variance``.

    Discrete families (derive/_discrete.py) get ``sample`` and ``score_function`` from the
    source :func:`derive.numpy_estimator` runs (scalar parameters, float64 only), no
    ``pathwise`` (a comment says why: z is discrete), and the enumeration or summation closed
    forms in ``exact_gradient`` and ``variance``.
    """
    _check_dtype(dtype)
    fam = getattr(getattr(problem_or_analysis, "problem", problem_or_analysis), "family", None)
    discrete = getattr(fam, "discrete", False)  # z drawn by NumPy's integer samplers
    if discrete and dtype != "float64":
        raise DeriveError(f"{fam.name}: {_discrete.FLOAT64_ONLY}")
    if mvd and getattr(fam, "name", None) != "normal":
        from ._mvd import REFUSED_FAMILY
        raise DeriveError("--mvd: " + REFUSED_FAMILY.format(name=getattr(fam, "name", "?")))
    implicit = getattr(fam, "implicit", False)  # z drawn directly: derive/_implicit.py
    if implicit and dtype != "float64":
        raise DeriveError(f"the implicitly reparameterized families ({fam.name}) are generated "
                          f"in float64 only")
    analysis = _analysis(problem_or_analysis, budget)
    p = analysis.problem
    try:
        if mvd:
            analysis = _with_measure_valued(analysis, budget)
        ctx = _context(analysis, dtype)
        sample = (_discrete.sample_lines if discrete else
                  _implicit.sample_lines if implicit else _sample_lines)
        parts = [_check_function(ctx), sample(ctx)]
        for kind, est in analysis.estimators.items():
            parts.append(_estimator_part(ctx, kind, est, implicit, discrete))
        parts.append(_gradient_lines(ctx))
        parts.append(_variance_lines(ctx))
        if baseline and implicit:
            parts.append(["# score_function_baseline and optimal_baseline are not generated for "
                          "the implicit families", "# yet; mcgrad check --baseline computes them."])
        elif baseline:
            parts.append(_baseline_lines(ctx, budget))
    except DeriveError as err:
        raise err.within(f"while generating code for {p}") from None
    head = _header(ctx, command, version)
    imports = ctx.printer.imports()
    if "import numpy" not in imports:
        imports.insert(0, "import numpy")
    if implicit and "import scipy.special" not in imports:  # the helpers of derive/_implicit.py
        imports.append("import scipy.special")
    source = ['"""' + head + '\n"""', "", *imports, "",
              f"WRT = {tuple(w.name for w in p.wrt)!r}",
              f"PARAMETERS = {tuple(s.name for s in ctx.params)!r}",
              f"DTYPE = numpy.{dtype}", "", "", _HELPERS.strip("\n")]
    if implicit:
        source += ["", "", _implicit.MODULE_HELPERS.strip("\n")]
    if discrete and "_whole(" in fam.draw:  # the binomial's number of trials
        source += ["", "", _discrete.MODULE_HELPERS.strip("\n")]
    for part in parts:
        if part:
            source += ["", "", *part]
    text = "\n".join(source).rstrip() + "\n"
    return text


def estimator_source(est, *, dtype="float64") -> tuple:
    """(source, function name, parameter names) of a module defining the one estimator ``est``
    (and the helpers it needs), for :func:`derive.numpy_estimator`."""
    _check_dtype(dtype)
    if not est.applies:
        raise DeriveError(f"the {est.kind} estimator does not apply: {est.refused}")

    class _Only:
        problem = est.problem
        estimators = {est.kind: est}
        gradient = {}
        variances = {}

    ctx = _context(_Only, dtype)
    lines = [*_check_function(ctx), "", *_estimator_lines(ctx, est.kind, est)]
    imports = ctx.printer.imports()
    if "import numpy" not in imports:
        imports.insert(0, "import numpy")
    source = "\n".join([*imports, f"DTYPE = numpy.{dtype}", _HELPERS, *lines]) + "\n"
    return source, FUNCTION_NAMES[est.kind], tuple(s.name for s in ctx.params)
