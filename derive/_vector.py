r"""Vector latents: diagonal and full-covariance Gaussians, decoders, vectorized estimators.

.. math::

    \nabla_\phi \, \mathbb E_{q_\phi(z)}[f(z)], \qquad z = \mu + S\varepsilon, \quad
    \varepsilon \sim N(0, I_d),

with ``S = diag(sigma)`` (``mvnormal_diag``) or ``S = L`` lower triangular with a positive diagonal
(``mvnormal``, the Cholesky factor of the covariance :math:`\Sigma = L L^\top`).

The scalar parameters, in ``WRT`` order: ``mu[0] .. mu[d-1]``, then ``sigma[0] .. sigma[d-1]`` or
the lower triangle of L row by row, ``L[0,0], L[1,0], L[1,1], L[2,0], ...`` (numpy.tril_indices).

Integrands (:func:`vector_problem`):

* ``gaussian_decoder``: :math:`\log N(x \mid Wz + c, s^2 I_D)` with data W (D, d), c (D,), x (D,)
  and s > 0;
* ``bernoulli_decoder``: :math:`\sum_k x_k \log\sigma(a_k) + (1 - x_k)\log\sigma(-a_k)`,
  :math:`a = Wz + c`;
* any expression of the components written ``z[0], z[1], ...`` (0-based; parsed by the whitelist
  parser, never evaluated) and of scalar data symbols such as ``x``.

Everything is in matrix form, so nothing expands into d² scalar terms: with the per-sample
:math:`g = \partial f / \partial z` (n, d), the pathwise rows are :math:`\partial\mu = g`,
:math:`\partial\sigma_i = g_i \varepsilon_i`, :math:`\partial L_{ij} = g_i \varepsilon_j`
(i >= j); the score-function rows are :math:`f \cdot (u, \mathrm{tril}(u\varepsilon^\top) -
\mathrm{diag}(1/L_{ii}))` with :math:`u = L^{-\top}\varepsilon = \Sigma^{-1}(z - \mu)`. The
decoders' g is :math:`W^\top(x - Wz - c)/s^2` and :math:`W^\top(x - \sigma(Wz + c))`.
Exact gradients of integrands of degree <= 2 come from the Gaussian moment rules,
:math:`\mathbb E[z^\top Q z] = \mathrm{tr}(Q\Sigma) + \mu^\top Q \mu`:
:math:`\partial\mu = b + 2Q\mu`, :math:`\partial S = \mathrm{part}(2 Q S)` for
f = c0 + b^T z + z^T Q z; other expressions by :func:`normal_expectation` (z = mu + S eps, the
Normal rules one component of eps at a time), and so the per-sample variances E[h^2] - (E h)^2.
:func:`verify_matrix_forms` checks every matrix formula against
SymPy's differentiation of the scalar expansion (and the moment rules against the expectation
of the expanded polynomial) at small d.

References: Mohamed, Rosca, Figurnov, Mnih, "Monte Carlo Gradient Estimation in Machine
Learning", JMLR 21 (2020); Kingma and Welling, "Auto-Encoding Variational Bayes" (2014).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import sympy as sp

from ._codegen import _Printer, stable
from ._errors import DeriveError
from ._numbers import evaluate
from ._parse import ALLOWED_FUNCTIONS, CONSTANTS, parse_expression
from ._symbols import Z

__all__ = ["DECODERS", "MAX_DIM", "VECTOR_FAMILIES", "VectorFamily", "VectorProblem",
           "matrix_derivation", "parse_vector_name", "vector_estimator", "vector_exact",
           "vector_family", "vector_module", "vector_problem", "verify_matrix_forms"]

VECTOR_FAMILIES = ("mvnormal_diag", "mvnormal", "dirichlet")
DECODERS = ("gaussian_decoder", "bernoulli_decoder")
MAX_DIM = 512
MAX_EXPRESSION_DIM = 64  # expressions of components are differentiated one component at a time
_RESERVED = frozenset({"rng", "n", "mu", "sigma", "L", "z", "eps", "out", "numpy", "scipy", "g",
                       "f", "u", "Li", "DTYPE", "WRT", "PARAMETERS", "D", "I", "J", "S", "B",
                       "b", "Q"})  # names of the generated code
_GENERATED = re.compile(r"^[zt]_?\d+$")
_NAME = re.compile(r"(?<![A-Za-z0-9_.])[A-Za-z][A-Za-z0-9_]*")
_SCALAR_NAME = re.compile(r"^(mu|sigma)\[(\d+)\]$|^L\[(\d+),\s*(\d+)\]$")
_ALPHA_NAME = re.compile(r"^alpha\[(\d+)\]$")

_NOT_VECTOR = ("{name!r} is not a vector family; the vector families are "
               f"{', '.join(VECTOR_FAMILIES)}, and a scalar family with --dim D is the product of "
               "D independent components (mean-field), e.g. gamma --dim 3")
_BAD_DIM = ("the dimension must be a whole number from 1 to {most}, got {d!r}; e.g. --dim 8")


# --------------------------------------------------------------------------- families

@dataclass(frozen=True, eq=False)
class VectorFamily:
    """q(z) = N(mu, S S^T) in d dimensions, z = mu + S eps; S = diag(sigma) or lower L."""

    name: str
    d: int

    @property
    def diagonal(self) -> bool:
        return self.name == "mvnormal_diag"

    @property
    def wrt(self) -> tuple:
        """The scalar parameters' names in column order of every estimator's output."""
        mu = tuple(f"mu[{i}]" for i in range(self.d))
        if self.diagonal:
            return mu + tuple(f"sigma[{i}]" for i in range(self.d))
        return mu + tuple(f"L[{i},{j}]" for i in range(self.d) for j in range(i + 1))

    @property
    def k(self) -> int:
        return len(self.wrt)

    @property
    def parameter_arrays(self) -> tuple:
        return ("mu", "sigma") if self.diagonal else ("mu", "L")

    @property
    def sampler_text(self) -> str:
        if self.diagonal:
            return "z = mu + sigma * eps, eps ~ N(0, I_d) (elementwise)"
        return "z = mu + L eps, eps ~ N(0, I_d), L lower triangular with L[i,i] > 0"

    def __str__(self):
        return f"{self.name}(d={self.d})"

    # symbolic views (small d: verification and derivation steps)
    def symbols(self):
        """(mu, S, params): a d x 1 Matrix of mu[i], the d x d scale matrix S of symbols, and the
        scalar parameter symbols in WRT order."""
        mu = sp.Matrix([sp.Symbol(f"mu[{i}]", real=True) for i in range(self.d)])
        if self.diagonal:
            sig = [sp.Symbol(f"sigma[{i}]", positive=True) for i in range(self.d)]
            return mu, sp.diag(*sig), tuple(mu) + tuple(sig)
        S = sp.zeros(self.d, self.d)
        for i in range(self.d):
            for j in range(i + 1):
                S[i, j] = sp.Symbol(f"L[{i},{j}]", positive=(i == j), real=True)
        return mu, S, tuple(mu) + tuple(S[i, j] for i in range(self.d) for j in range(i + 1))

    def scale_positions(self):
        """(i, j) of each scale parameter of S, in WRT order."""
        if self.diagonal:
            return [(i, i) for i in range(self.d)]
        return [(i, j) for i in range(self.d) for j in range(i + 1)]


def vector_family(name: str, d) -> VectorFamily:
    """``mvnormal_diag`` or ``mvnormal`` in ``d`` dimensions (1 <= d <= MAX_DIM), or
    ``dirichlet`` with K = d components (2 <= K <= 64)."""
    if name == "dirichlet":
        from ._dirichlet import dirichlet_family
        return dirichlet_family(d)
    if name not in VECTOR_FAMILIES:
        from ._meanfield import MEANFIELD_FAMILIES, meanfield_family
        if name in MEANFIELD_FAMILIES or _is_discrete(name):
            return meanfield_family(name, d)  # independent components of a scalar family
        raise DeriveError(_NOT_VECTOR.format(name=name))
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM:
        raise DeriveError(_BAD_DIM.format(most=MAX_DIM, d=d))
    return VectorFamily(name, d)


def _is_discrete(name) -> bool:
    from ._discrete import CATALOG
    return name in CATALOG or str(name).startswith("categorical")


def is_meanfield(fam) -> bool:
    """True for a mean-field product of a scalar family (derive._meanfield)."""
    return type(fam).__name__ == "MeanFieldFamily"


def parse_vector_name(name: str, fam: VectorFamily):
    """("mu" | "sigma" | "L", index or (i, j)) for a scalar parameter name such as ``mu[3]`` or
    ``L[1,0]`` (``alpha[2]`` for the Dirichlet); DeriveError naming the valid forms otherwise."""
    if is_meanfield(fam):
        from ._meanfield import parse_meanfield_name
        return parse_meanfield_name(name, fam)
    if fam.name == "dirichlet":
        m = _ALPHA_NAME.match(name.strip())
        if m is None or int(m.group(1)) >= fam.d:
            raise DeriveError(f"{name!r} is not a parameter of {fam}: the parameters are "
                              f"alpha[0] .. alpha[{fam.d - 1}]")
        return "alpha", int(m.group(1))
    m = _SCALAR_NAME.match(name.strip())
    ok = m is not None
    if ok and m.group(1):
        kind, index = m.group(1), int(m.group(2))
        ok = index < fam.d and (kind == "mu" or fam.diagonal)
    elif ok:
        kind, index = "L", (int(m.group(3)), int(m.group(4)))
        ok = not fam.diagonal and index[1] <= index[0] < fam.d
    if not ok:
        last = f"sigma[{fam.d - 1}]" if fam.diagonal else f"L[{fam.d - 1},{fam.d - 1}]"
        raise DeriveError(f"{name!r} is not a parameter of {fam}: the parameters are mu[0] .. "
                          f"mu[{fam.d - 1}] and {fam.wrt[fam.d]} .. {last}"
                          + ("" if fam.diagonal else " (lower triangle, i >= j)"))
    return kind, index


# --------------------------------------------------------------------------- problems

@dataclass(frozen=True, eq=False)
class VectorProblem:
    """A vector family and an integrand: a decoder (``kind`` in DECODERS) or an expression
    ``f`` of the component symbols ``z`` (``kind == "expression"``)."""

    family: VectorFamily
    kind: str
    text: str
    f: sp.Expr | None = None
    z: tuple = ()
    data: tuple = ()  # the scalar data symbols of an expression, by name order
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def data_names(self) -> tuple:
        if self.kind == "gaussian_decoder":
            return ("W", "c", "x", "s")
        if self.kind == "bernoulli_decoder":
            return ("W", "c", "x")
        return tuple(s.name for s in self.data)

    @property
    def parameters(self) -> tuple:
        """Keyword arguments of the generated functions: the family's arrays, then the data."""
        return self.family.parameter_arrays + self.data_names

    def __str__(self):
        return f"E[{self.text}] under {self.family}"


def component_symbols(d: int, *, positive: bool = False) -> tuple:
    if positive:  # the simplex: log(z[k]) is real
        return tuple(sp.Symbol(f"z{k}", positive=True) for k in range(d))
    return tuple(sp.Symbol(f"z{k}", real=True) for k in range(d))


def parse_components(fam, text: str, reserved) -> tuple:
    """(f, z, data) for an expression of ``z[0] .. z[d-1]`` and scalar data symbols, parsed by
    the whitelist parser (never evaluated); names of the generated code (``reserved``), the
    family's arrays and generated-looking names are refused with the fix."""
    z = component_symbols(fam.d, positive=fam.name == "dirichlet")
    symbols = {}
    for name in _NAME.findall(text):
        if name in ALLOWED_FUNCTIONS or name in CONSTANTS or name == "z" or name in symbols:
            continue
        if name in reserved or name in fam.parameter_arrays or _GENERATED.match(name):
            raise DeriveError(f"the name {name!r} is reserved in an integrand of {fam} (the "
                              f"sample is z[0] .. z[{fam.d - 1}], the family's arrays "
                              f"{', '.join(fam.parameter_arrays)}); "
                              f"rename your symbol, e.g. {name}_")
        symbols[name] = sp.Symbol(name, real=True)
    f = parse_expression(text, symbols, what="f", vectors={"z": z})
    data = tuple(sorted((s for s in f.free_symbols if s not in z), key=lambda s: s.name))
    return f, z, data


def vector_problem(fam: VectorFamily, f_text: str) -> VectorProblem:
    """Parse the integrand: a decoder name, or an expression of ``z[0] .. z[d-1]``."""
    if not isinstance(f_text, str):
        raise DeriveError(f"f must be text such as 'gaussian_decoder' or 'z[0]*z[1]', not "
                          f"{type(f_text).__name__}")
    if is_meanfield(fam):
        from ._meanfield import meanfield_problem
        return meanfield_problem(fam, f_text)
    text = f_text.strip()
    if text in DECODERS:
        return VectorProblem(fam, text, text)
    if fam.d > MAX_EXPRESSION_DIM:
        raise DeriveError(f"an expression of components is limited to d <= {MAX_EXPRESSION_DIM} "
                          f"(got d = {fam.d}); for a VAE decoder use --f gaussian_decoder or "
                          f"--f bernoulli_decoder, which scale with d")
    f, z, data = parse_components(fam, text, _RESERVED)
    return VectorProblem(fam, "expression", text, f, z, data)


def _jumps(f) -> bool:
    return f.has(sp.Piecewise, sp.Heaviside, sp.sign, sp.floor, sp.ceiling, sp.frac)


def refusal(problem: VectorProblem, kind: str):
    """Why the estimator ``kind`` does not apply, or None."""
    if is_meanfield(problem.family):
        from ._meanfield import refusal as meanfield_refusal
        return meanfield_refusal(problem, kind)
    if kind == "pathwise" and problem.kind == "expression" and _jumps(problem.f):
        return ("f is discontinuous in z (indicator, sign, floor or Heaviside): the pathwise "
                "estimator misses the jump's contribution; use the score function")
    return None


# --------------------------------------------------------------------------- matrix forms

def matrix_derivation(problem: VectorProblem) -> dict:
    """The per-sample quantities in matrix form, derived with SymPy's matrix calculus where the
    integrand is a decoder (sizes symbolic: nothing depends on d), componentwise for an
    expression. Keys: ``f``, ``g`` (df/dz), ``pathwise``, ``score``, ``exact`` (text)."""
    fam = problem.family
    if is_meanfield(fam):
        return _meanfield_derivation(problem)
    d_, D_ = sp.Symbol("d", integer=True, positive=True), sp.Symbol("D", integer=True,
                                                                   positive=True)
    out = {}
    if problem.kind in DECODERS:
        W, z = sp.MatrixSymbol("W", D_, d_), sp.MatrixSymbol("z", d_, 1)
        c, x = sp.MatrixSymbol("c", D_, 1), sp.MatrixSymbol("x", D_, 1)
        s = sp.Symbol("s", positive=True)
        if problem.kind == "gaussian_decoder":
            r = x - W * z - c
            quad = -sp.trace(r.T * r) / (2 * s**2)  # a 1 x 1 matrix expression, kept whole
            out["f"] = quad - D_ * sp.log(2 * sp.pi * s**2) / 2
            out["g"] = sp.diff(quad, z)  # s**(-2)*W.T*(-W*z - c + x)
            out["exact"] = ("E f = -D/2 log(2 pi s^2) - (|x - c - W mu|^2 + tr(W S S^T W^T))/(2 s^2);"
                            " d/dmu = W^T(x - c - W mu)/s^2, d/dS = part(-W^T W S/s^2)")
        else:
            out["f"] = "sum_k x_k a_k - softplus(a_k), a = W z + c"
            out["g"] = "W^T (x - sigmoid(W z + c))"
            out["exact"] = "no closed form (E of log-sigmoid of a Gaussian)"
    else:
        out["f"] = problem.f
        out["g"] = [sp.diff(problem.f, zk) for zk in problem.z]
        quad = quadratic_form(problem)
        out["exact"] = ("moment rules: d/dmu = b + 2 Q mu, d/dS = part(2 Q S)" if quad else
                        "Gaussian moments of the expanded polynomial" if problem.f.is_polynomial(
                            *problem.z) else "iterated Normal rules in eps_0, eps_1, ... (exp, "
                        "trig through exp; null with the reason where a rule is missing)")
    if fam.name == "dirichlet":
        from ._dirichlet import derivation
        return {**out, **derivation(problem)}
    scale = "sigma_i" if fam.diagonal else "L_ij (i >= j)"
    out["pathwise"] = f"d/dmu = g, d/d{scale} = g_i eps_{'i' if fam.diagonal else 'j'}"
    out["score"] = ("f * (eps/sigma, (eps^2 - 1)/sigma)" if fam.diagonal else
                    "f * (u, tril(u eps^T) - diag(1/L_ii)), u = L^-T eps")
    return out


def _meanfield_derivation(problem) -> dict:
    """The per-sample rows of a mean-field product: column (theta, i) is f times the scalar
    family's score in theta at z_i (score), df/dz_i times dz_i/dtheta (pathwise)."""
    from ._meanfield import _dz
    scalar = problem.family.scalar()
    z = sp.Symbol("z_i")
    score = ", ".join(f"d/d{p}[i] = f * ({sp.sstr(sp.diff(scalar.log_density, p).xreplace({Z: z}))})"
                      for p in scalar.params)
    law = "z_i" if problem.family.implicit else "eps_i"
    path = ", ".join(f"d/d{p}[i] = df/dz_i * ({sp.sstr(_dz(scalar, p).xreplace({Z: z}))})"
                     for p in scalar.params)
    return {"f": problem.f, "g": [sp.diff(problem.f, zk) for zk in problem.z],
            "score": score + " (theta at component i)",
            "pathwise": f"{path} (in {law}; theta at component i"
                        f"{', implicit: dz/dtheta = -(dF/dtheta)/q' if problem.family.implicit else ''})",
            "exact": "sums of products of the scalar engine's expectations, one component at a "
                     "time (independent components); null with the reason where a factor has none"}


def quadratic_form(problem: VectorProblem):
    """(c0, b, Q) with f = c0 + b^T z + z^T Q z (Q symmetric) for an expression of degree <= 2
    in z, else None."""
    if "quad" in problem._cache:
        return problem._cache["quad"]
    f, z = problem.f, problem.z
    result = None
    if f.is_polynomial(*z) and sp.Poly(f, *z).total_degree() <= 2:
        zero = {zk: 0 for zk in z}
        grad = [sp.diff(f, zk) for zk in z]
        b = sp.Matrix([gk.xreplace(zero) for gk in grad])
        Q = sp.Matrix(len(z), len(z), lambda i, j: sp.diff(grad[i], z[j]) / 2)
        result = (f.xreplace(zero), b, Q)
    problem._cache["quad"] = result
    return result


def _scalar_f(problem: VectorProblem, D: int):
    """f as a scalar SymPy expression of the components (decoders with explicit symbol
    matrices W, c, x of size D), for verification at small d."""
    d = problem.family.d
    if problem.kind == "expression":
        return problem.f, problem.z, {}
    z = component_symbols(d)
    W = sp.Matrix(D, d, lambda i, j: sp.Symbol(f"W{i}_{j}", real=True))
    c = sp.Matrix([sp.Symbol(f"c{i}", real=True) for i in range(D)])
    x = sp.Matrix([sp.Symbol(f"x{i}", real=True) for i in range(D)])
    a = W * sp.Matrix(z) + c
    if problem.kind == "gaussian_decoder":
        s = sp.Symbol("s", positive=True)
        f = sum(-(x[k] - a[k])**2 / (2 * s**2) for k in range(D)) - D * sp.log(2 * sp.pi * s**2) / 2
        data = {"W": W, "c": c, "x": x, "s": s}
    else:
        f = sum(x[k] * sp.log(1 / (1 + sp.exp(-a[k]))) + (1 - x[k]) * sp.log(1 / (1 + sp.exp(a[k])))
                for k in range(D))
        data = {"W": W, "c": c, "x": x}
    return f, z, data


def _matrix_g(problem, z, data):
    """g = df/dz by the matrix formula (explicit matrices)."""
    zc = sp.Matrix(z)
    if problem.kind == "gaussian_decoder":
        W, c, x, s = data["W"], data["c"], data["x"], data["s"]
        return W.T * (x - W * zc - c) / s**2
    if problem.kind == "bernoulli_decoder":
        W, c, x = data["W"], data["c"], data["x"]
        a = W * zc + c
        return W.T * (x - a.applyfunc(lambda t: 1 / (1 + sp.exp(-t))))
    return sp.Matrix([sp.diff(problem.f, zk) for zk in z])


def _zero(expr) -> bool:
    expr = sp.expand(expr)
    return expr == 0 or sp.simplify(expr) == 0


def verify_matrix_forms(problem: VectorProblem, *, D: int = 2) -> dict:
    """Check the matrix formulas against SymPy's differentiation of the scalar expansion.

    At the family's (small) d: the pathwise rows g_i, g_i eps_j against d/dphi f(mu + S eps);
    the score rows against d/dphi log q(z) at z = mu + S eps; for a quadratic f, the moment-rule
    gradient against d/dphi of the expectation of the polynomial expanded in eps (each monomial
    replaced by its Gaussian moment, no integration). Returns {"pathwise": bool, "score": bool,
    "exact": bool | None}.
    """
    fam = problem.family
    mu, S, params = fam.symbols()
    f, z, data = _scalar_f(problem, D)
    eps = sp.Matrix([sp.Symbol(f"eps{i}", real=True) for i in range(fam.d)])
    zval = mu + S * eps
    at = dict(zip(z, zval))
    positions = fam.scale_positions()
    # pathwise
    g = _matrix_g(problem, z, data).xreplace(at)
    f_eps = f.xreplace(at)
    rows = list(g) + [g[i] * eps[j] for i, j in positions]
    pathwise = all(_zero(sp.diff(f_eps, p) - r) for p, r in zip(params, rows))
    # score: log q at z (independent of z's parametrization)
    zs = sp.Matrix(z)
    r = zs - mu
    Sinv = S.inv()
    logq = -(r.T * Sinv.T * Sinv * r)[0, 0] / 2 - sum(sp.log(S[i, i]) for i in range(fam.d))
    u = Sinv.T * eps
    srows = list(u) + [u[i] * eps[j] - (1 / S[i, i] if i == j else 0) for i, j in positions]
    score = all(_zero(sp.diff(logq, p).xreplace(at) - r_) for p, r_ in zip(params, srows))
    exact = None
    if problem.kind == "gaussian_decoder" or (problem.kind == "expression"
                                              and quadratic_form(problem) is not None):
        if problem.kind == "gaussian_decoder":
            W, c, x, s = data["W"], data["c"], data["x"], data["s"]
            b, Q = W.T * (x - c) / s**2, -W.T * W / (2 * s**2)
        else:
            _, b, Q = quadratic_form(problem)
        rule = list(b + 2 * Q * mu) + [(2 * Q * S)[i, j] for i, j in positions]
        mean = gaussian_moments(sp.expand(f_eps), list(eps))
        exact = all(_zero(sp.diff(mean, p) - r_) for p, r_ in zip(params, rule))
    return {"pathwise": pathwise, "score": score, "exact": exact}


def gaussian_moments(poly: sp.Expr, eps: list) -> sp.Expr:
    """E[poly] for independent standard normal ``eps``: each monomial prod eps_i^k_i replaced
    by prod (k_i - 1)!! (0 for odd k_i). ``poly`` must be polynomial in eps."""
    p = sp.Poly(poly, *eps)
    total = sp.Integer(0)
    for powers, coeff in p.terms():
        m = sp.Integer(1)
        for k in powers:
            if k % 2:
                m = 0
                break
            m *= sp.factorial2(k - 1) if k else 1
        total += coeff * m
    return total


# --------------------------------------------------------------------------- iterated Normal rules

EXACT_SECONDS = 10.0
"""Wall-clock budget of the exact values of one vector problem, shared by the gradient, then the
pathwise variances, then the score-function variances; what is not finished is null with the
reason, never a guess."""

_TRIG_EXP = (sp.sin, sp.cos, sp.tan, sp.sinh, sp.cosh, sp.tanh)


class NoExact(Exception):
    """No closed form by the iterated Normal rules; ``args[0]`` says why."""


def _eps_symbols(d):
    return [sp.Symbol(f"eps{i}", real=True) for i in range(d)]


def normal_expectation(h, eps, conditions: list, cache: dict | None = None) -> sp.Expr:
    r"""E[h(eps)] for independent standard normal ``eps`` (symbols), in closed form.

    h is written through exp (trigonometric and hyperbolic functions), expanded, and each term
    split into factors depending on disjoint sets of components; independence makes the
    expectation of the term the product of the factors' expectations. A factor depending on one
    component goes to the scalar engine's Normal term rule (``derive._expectation._gaussian``:
    polynomials times exp of quadratics), with the other components as constants; a factor
    coupling several components is integrated over one of them and the result recursed over the
    rest. The rules' convergence conditions are appended to ``conditions`` (they are decided at
    the parameter values). Raises :class:`NoExact` with the reason where a rule is missing or the
    expectation is infinite.
    """
    cache = {} if cache is None else cache
    eps = tuple(eps)
    if not h.has(*eps):
        return h
    if h.has(*_TRIG_EXP):
        h = h.rewrite(sp.exp)
    total = []
    for term in sp.Add.make_args(sp.expand(h)):
        value = sp.Integer(1)
        for factor, used in _independent_factors(term, eps):
            value *= _factor_expectation(factor, used, eps, conditions, cache)
        total.append(value)
    return sp.Add(*total)


def _independent_factors(term, eps):
    """[(factor, components used)]: the term as a product of factors with disjoint components."""
    groups, constant = [], sp.Integer(1)
    for factor in sp.Mul.make_args(term):
        used = frozenset(e for e in eps if factor.has(e))
        if not used:
            constant *= factor
            continue
        for g in [g for g in groups if g[0] & used]:
            groups.remove(g)
            used, factor = used | g[0], factor * g[1]
        groups.append((used, factor))
    return [(constant, frozenset())] + [(f, u) for u, f in groups]


def _normal_rule(factor, e):
    """E over e ~ N(0, 1) of a factor (other symbols constant): the scalar engine's Normal term
    rule (c * e**n * exp(a e + b e**2)) applied term by term. Not ``by_rules``: that one takes
    the real part at the end (right for the real integrands of the scalar engine, wrong for the
    complex terms exp(i w e) that trig-through-exp gives here: E[e exp(i w e)] is imaginary)."""
    from ._expectation import _gaussian, _split, _terms
    from ._symbols import EPS
    value, conditions = sp.Integer(0), []
    for term in _terms(factor.xreplace({e: EPS}), EPS):
        v, conds = _gaussian(_split(term, EPS))
        value += v
        conditions += [c for c in conds if c is not sp.true]
    return value, conditions


def _factor_expectation(factor, used, eps, conditions, cache):
    from ._expectation import MomentError, _NoRule
    if not used:
        return factor
    if factor in cache:
        value, conds = cache[factor]
        conditions.extend(conds)
        return value
    first = next(e for e in eps if e in used)
    rest = tuple(e for e in eps if e in used and e != first)
    try:
        value, conds = _normal_rule(factor, first)
    except _NoRule:
        raise NoExact(f"no closed form: the Normal rules do not cover E over {first} of "
                      f"{_short(factor)} (polynomials times exp of quadratics, trig through exp)")\
            from None
    except MomentError as err:
        raise NoExact(f"no exact value: a term of the expansion is infinite ({err})") from None
    if any(c.has(*eps) for c in conds):
        raise NoExact(f"no closed form: E over {first} of {_short(factor)} converges only for "
                      f"some values of the other components")
    if rest:
        inner = []
        value = normal_expectation(value, rest, inner, cache)
        conds += inner
    cache[factor] = (value, conds)
    conditions.extend(conds)
    return value


def _short(expr, most=80):
    text = sp.sstr(expr)
    return text if len(text) <= most else text[:most - 3] + "..."


def _moments_or_rules(h, eps, conditions, cache):
    """E[h]: Gaussian moments when h is a polynomial in eps (fast), the iterated rules otherwise."""
    if h.is_polynomial(*eps):
        return gaussian_moments(sp.expand(h), list(eps))
    return normal_expectation(h, eps, conditions, cache)


def _conditions_hold(conditions, at) -> str | None:
    """None when every convergence condition holds at the values, else the failing one."""
    for c in dict.fromkeys(conditions):
        if c is sp.true:
            continue
        v = c.xreplace(at) if hasattr(c, "xreplace") else c
        if v is not sp.true:
            try:
                v = sp.simplify(v)
            except Exception:  # noqa: BLE001 - SymPy's simplify raises many kinds
                pass
        if v is not sp.true:
            return sp.sstr(c)
    return None


def _rational(v):
    """A float as the Rational of its shortest decimal form (0.3 -> 3/10)."""
    return sp.Rational(repr(float(v)))


def _numeric_scale(fam, mu, S):
    """(mu, S) as exact Rational matrices from floats."""
    d = fam.d
    mur = sp.Matrix([_rational(v) for v in mu])
    Sr = sp.zeros(d, d)
    for i, j in fam.scale_positions():
        Sr[i, j] = _rational(S[i][j])
    return mur, Sr


def _score_rows(fam, S, eps):
    """The score d/dphi log q at z = mu + S eps, one expression of eps per column (WRT order)."""
    e = sp.Matrix(eps)
    if fam.diagonal:
        return [eps[i] / S[i, i] for i in range(fam.d)] + \
               [(eps[i]**2 - 1) / S[i, i] for i in range(fam.d)]
    u = S.inv().T * e
    return list(u) + [u[i] * eps[j] - (1 / S[i, i] if i == j else 0)
                      for i, j in fam.scale_positions()]


def _pathwise_rows(fam, g, eps):
    """The g_i of each pathwise column (g_i for mu_i, g_i eps_j for S_ij: eps_j is applied by the
    caller, since g_i may be a list of additive pieces)."""
    return list(g) + [g[i] for i, _ in fam.scale_positions()]


def _second_moments(rows, eps, deadline_reason, deadline):
    """E[row**2] for each row (mpmath numbers), before ``deadline``; NoExact otherwise.

    Each row is a list of additive pieces (one per term of f or of df/dz_i, times the score or
    eps_j); E[(sum_a t_a)^2] = sum_a E[t_a^2] + 2 sum_{a<b} E[t_a t_b], and each product splits
    into independent groups of factors (by the components they use) before anything is expanded,
    so the expectations of groups that do not touch the row's own components are shared by all
    rows (a sum of d terms costs about d^2 small expectations, not one expansion of d^2 terms).
    """
    from ._budget import OutOfTime, time_budget
    out, cache = [], {}
    try:
        with time_budget(deadline - time.monotonic()):
            for pieces in rows:
                conds, total = [], []
                for a, ta in enumerate(pieces):
                    for b in range(a, len(pieces)):
                        m = _product_expectation(sp.Mul.make_args(ta) + sp.Mul.make_args(
                            pieces[b]), eps, conds, cache)
                        total.append(m if a == b else 2 * m)
                bad = _conditions_hold(conds, {})
                if bad:
                    raise NoExact(f"E[h^2] is infinite (the condition {bad} fails)")
                out.append(evaluate(sp.Add(*total), {}))
    except OutOfTime:
        raise NoExact(f"no exact value: {deadline_reason} did not finish within the "
                      f"{EXACT_SECONDS:g} s budget at d = {len(eps)}") from None
    return out


def _first_moments(rows, eps, deadline):
    """E[row] for each row given as additive pieces (mpmath numbers), before ``deadline``."""
    from ._budget import OutOfTime, time_budget
    out, cache = [], {}
    try:
        with time_budget(deadline - time.monotonic()):
            for pieces in rows:
                conds = []
                m = sp.Add(*[_product_expectation(sp.Mul.make_args(t), eps, conds, cache)
                             for t in pieces])
                bad = _conditions_hold(conds, {})
                if bad:
                    raise NoExact(f"the gradient is infinite at these values (the condition "
                                  f"{bad} fails)")
                out.append(evaluate(m, {}))
    except OutOfTime:
        raise NoExact(f"no exact value: E[df/dphi] in closed form did not finish within "
                      f"{EXACT_SECONDS:g} s at d = {len(eps)}") from None
    return out


def _product_expectation(factors, eps, conditions, cache):
    """E[prod factors]: the product over groups of factors with disjoint components."""
    groups, constant = [], sp.Integer(1)
    for factor in factors:
        used = frozenset(e for e in eps if factor.has(e))
        if not used:
            constant *= factor
            continue
        members = [factor]
        for g in [g for g in groups if g[0] & used]:
            groups.remove(g)
            used, members = used | g[0], members + g[1]
        groups.append((used, members))
    value = constant
    for used, members in groups:
        key = sp.Mul(*members)
        if key not in cache:
            conds = []
            mine = tuple(e for e in eps if e in used)
            cache[key] = (_moments_or_rules(key, mine, conds, cache), conds)
        v, conds = cache[key]
        conditions.extend(conds)
        value *= v
    return value


def _variances(second, mean):
    """Per-sample variances E[h^2] - (E h)^2 as floats (30-digit arithmetic, clipped at 0)."""
    return tuple(max(0.0, float(m2 - m * m)) for m2, m in zip(second, mean))


# --------------------------------------------------------------------------- exact values

@dataclass(frozen=True)
class VectorExact:
    """Exact gradient (and pathwise per-sample variances) at given values; ``gradient`` is None
    with ``missing`` the reason where there is no exact value."""

    gradient: tuple | None
    method: str
    missing: str | None = None
    pathwise_variance: tuple | None = None
    score_variance: tuple | None = None
    variance_missing: dict = field(default_factory=dict)  # {kind: reason} where None above

    def variance(self, kind):
        """The exact per-sample variances of estimator ``kind`` ("score" | "pathwise"), or None."""
        return self.score_variance if kind == "score" else self.pathwise_variance


def _dot(a, b):
    return math.fsum(p * q for p, q in zip(a, b))


def _moment_numbers(fam, b, Q, mu, S):
    """Gradient and pathwise variances of E[c0 + b^T z + z^T Q z] (floats, Q symmetric)."""
    d = fam.d
    a = [b[i] + 2 * _dot(Q[i], mu) for i in range(d)]
    cols = [[S[r][j] for r in range(d)] for j in range(d)]
    B = [[2 * _dot(Q[i], cols[j]) for j in range(d)] for i in range(d)]  # 2 Q S
    pos = fam.scale_positions()
    grad = tuple(a) + tuple(B[i][j] for i, j in pos)
    rowsq = [math.fsum(v * v for v in B[i]) for i in range(d)]
    var = tuple(rowsq) + tuple(a[i] ** 2 + rowsq[i] + B[i][j] ** 2 for i, j in pos)
    return grad, var


def _as_matrix(fam, values):
    """(mu list, S as list of rows) from values {"mu": seq, "sigma": seq | "L": rows}."""
    d = fam.d
    mu = [float(v) for v in values["mu"]]
    if fam.diagonal:
        sig = [float(v) for v in values["sigma"]]
        return mu, [[sig[i] if i == j else 0.0 for j in range(d)] for i in range(d)]
    L = values["L"]
    return mu, [[float(L[i][j]) if j <= i else 0.0 for j in range(d)] for i in range(d)]


def vector_exact(problem: VectorProblem, values: dict) -> VectorExact:
    """The exact gradient and per-sample variances at ``values`` (family arrays and data by name,
    plain Python numbers or nested lists), each None with the reason where there is none.

    Gradient: moment rules for degree <= 2 (any d); Gaussian moments of the polynomial expanded
    in eps for higher degrees; the iterated Normal rules (:func:`normal_expectation`) for other
    expressions (exp, trig, products of them with polynomials). Variances E[h^2] - (E h)^2 of each
    column h: moment rules for the pathwise rows of degree <= 2, the same two routes as the
    gradient otherwise, at the values (exact rationals), within EXACT_SECONDS.
    """
    fam = problem.family
    if fam.name == "dirichlet":
        from ._dirichlet import exact
        return exact(problem, values, decoder_quadratic=_decoder_quadratic(problem, values))
    if is_meanfield(fam):
        from ._meanfield import meanfield_exact
        return meanfield_exact(problem, values)
    deadline = time.monotonic() + EXACT_SECONDS
    mu, S = _as_matrix(fam, values)
    if problem.kind == "gaussian_decoder":
        W = [[float(v) for v in row] for row in values["W"]]
        c, x, s = [float(v) for v in values["c"]], [float(v) for v in values["x"]], float(values["s"])
        D = len(W)
        cols = [[W[k][j] for k in range(D)] for j in range(fam.d)]
        resid = [x[k] - c[k] for k in range(D)]
        b = [_dot(cols[j], resid) / s**2 for j in range(fam.d)]
        Q = [[-_dot(cols[i], cols[j]) / (2 * s**2) for j in range(fam.d)] for i in range(fam.d)]
        grad, var = _moment_numbers(fam, b, Q, mu, S)
        return VectorExact(grad, "moment rules (closed form)", None, var, None,
                           {"score": DECODER_SCORE_REASON})
    if problem.kind == "bernoulli_decoder":
        why = ("no closed form: E[log sigmoid(a^T z + c)] under a Gaussian has none; compare the "
               "two estimators with each other")
        return VectorExact(None, "none", why, variance_missing={"score": why, "pathwise": why})
    data = {s: values[s.name] for s in problem.data}
    quad = quadratic_form(problem)
    path_var, missing = None, {}
    if quad is not None:
        _, b, Q = quad
        num = lambda e: float(evaluate(e, data)) if e.free_symbols else float(e)  # noqa: E731
        bn = [num(v) for v in b]
        Qn = [[num(Q[i, j]) for j in range(fam.d)] for i in range(fam.d)]
        grad, path_var = _moment_numbers(fam, bn, Qn, mu, S)
        method, mean = "moment rules (closed form)", grad
    rows = _expression_rows(problem, data, mu, S)
    if quad is None:
        try:
            if refusal(problem, "pathwise") or problem.f.is_polynomial(*problem.z):
                mean, method = _expression_gradient(problem, data, mu, S, deadline)
            else:  # E[d/dphi f(mu + S eps)] at the values: cheaper than E[f] in symbols
                mean = _first_moments(rows["pathwise"], rows["eps"], deadline)
                method = "iterated Normal rules (closed form)"
        except NoExact as err:
            why = "no exact gradient, so no exact variance"
            return VectorExact(None, "none", str(err), variance_missing={"score": why,
                                                                          "pathwise": why})
        grad = tuple(float(m) for m in mean)
    if path_var is None:
        if refusal(problem, "pathwise"):
            missing["pathwise"] = refusal(problem, "pathwise")
        else:
            try:
                path_var = _variances(_second_moments(rows["pathwise"], rows["eps"],
                                                      "E[(df/dphi)^2]", deadline), mean)
            except NoExact as err:
                missing["pathwise"] = str(err)
    score_var = None
    try:
        score_var = _variances(_second_moments(rows["score"], rows["eps"], "E[(f s)^2]",
                                               deadline), mean)
    except NoExact as err:
        missing["score"] = str(err)
    return VectorExact(grad, method, None, path_var, score_var, missing)


def _decoder_quadratic(problem, values):
    """(c0, b, Q) as floats with log N(x | W z + c, s^2 I) = c0 + b^T z + z^T Q z, or None."""
    if problem.kind != "gaussian_decoder":
        return None
    W = [[float(v) for v in row] for row in values["W"]]
    c, x, s = [float(v) for v in values["c"]], [float(v) for v in values["x"]], float(values["s"])
    d = problem.family.d
    cols = [[row[j] for row in W] for j in range(d)]
    resid = [xk - ck for xk, ck in zip(x, c)]
    b = [_dot(cols[j], resid) / s**2 for j in range(d)]
    Q = [[-_dot(cols[i], cols[j]) / (2 * s**2) for j in range(d)] for i in range(d)]
    c0 = -_dot(resid, resid) / (2 * s**2) - 0.5 * len(x) * math.log(2 * math.pi * s**2)
    return c0, b, Q


DECODER_SCORE_REASON = ("the decoder's exact score-function variance (E[f^2 s^2], Gaussian moments "
                        "of order 8 of a dense quadratic form) is computed in matrix form with "
                        "NumPy by mcgrad._check_vector.decoder_score_variance, not here")


def _at(fam, problem, data, mu, S):
    """Exact Rational values of the symbolic parameters and data."""
    musym, Ssym, params = fam.symbols()
    at = {musym[i]: _rational(mu[i]) for i in range(fam.d)}
    at.update({Ssym[i, j]: _rational(S[i][j]) for i, j in fam.scale_positions()})
    at.update({k: _rational(v) for k, v in data.items()})
    return musym, Ssym, params, at


def _expression_gradient(problem, data, mu, S, deadline):
    """(gradient as mpmath numbers, method): E[f] in closed form in the symbolic parameters,
    differentiated and evaluated at the values. Raises NoExact with the reason."""
    from ._budget import OutOfTime, time_budget
    fam = problem.family
    musym, Ssym, params, at = _at(fam, problem, data, mu, S)
    eps = _eps_symbols(fam.d)
    h = problem.f.xreplace(dict(zip(problem.z, musym + Ssym * sp.Matrix(eps))))
    poly = h.is_polynomial(*eps)
    conditions = []
    try:
        with time_budget(deadline - time.monotonic()):
            mean = _moments_or_rules(h, eps, conditions, {})
            bad = _conditions_hold(conditions, at)
            if bad:
                raise NoExact(f"E[f] is infinite at these values (the condition {bad} fails)")
            grad = [evaluate(sp.diff(mean, p), at) for p in params]
    except OutOfTime:
        raise NoExact(f"no exact value: E[f] in closed form did not finish within "
                      f"{EXACT_SECONDS:g} s at d = {fam.d}") from None
    return grad, ("Gaussian moments (closed form)" if poly else
                  "iterated Normal rules (closed form)")


def _expression_rows(problem, data, mu, S):
    """Per-sample score and pathwise columns as expressions of eps at the values (Rationals)."""
    fam = problem.family
    eps = _eps_symbols(fam.d)
    mur, Sr = _numeric_scale(fam, mu, S)
    sub = dict(zip(problem.z, mur + Sr * sp.Matrix(eps)))
    sub.update({k: _rational(v) for k, v in data.items()})
    fz = [t.xreplace(sub) for t in sp.Add.make_args(problem.f)]
    g = [[t.xreplace(sub) for t in sp.Add.make_args(sp.diff(problem.f, zk))] for zk in problem.z]
    score = [[t * s for t in fz] for s in _score_rows(fam, Sr, eps)]
    pathwise = [[t * w for t in pieces] for pieces, w in
                zip(_pathwise_rows(fam, g, eps), [1] * fam.d + [eps[j] for _, j in
                                                                fam.scale_positions()])]
    return {"eps": eps, "score": score, "pathwise": pathwise}


# --------------------------------------------------------------------------- code generation

_HEAD = '''"""{title}

{sampler}
f = {ftext}
WRT names the {k} columns of every per-sample estimate: {wrt_text}.
Generated by mcgrad{version}{command}; needs NumPy{scipy}.
"""

import numpy
{imports}
DTYPE = numpy.{dtype}
D = {d}
WRT = {wrt_code}
PARAMETERS = {parameters!r}
'''

_SAMPLE = '''

def sample(rng, n, *, {fam_args}):
    """n draws of z ~ {family}, shape (n, {d})."""
    eps = rng.standard_normal((n, D), dtype=DTYPE)
    return {z_line}
'''

_GAUSS_F = '''

def _f(z, W, c, x, s):
    """log N(x | W z + c, s^2 I) per sample, (n,)."""
    r = z @ W.T
    r -= x - c
    return -0.5 * numpy.einsum("nk,nk->n", r, r) / s**2 - 0.5 * r.shape[1] * numpy.log(2 * numpy.pi * s**2)


def _grad(z, W, c, x, s):
    """The gradient of log N(x | W z + c, s^2 I) in z per sample, (n, d): W^T (x - W z - c)/s^2."""
    r = z @ W.T
    r -= x - c
    g = r @ W
    g *= -1 / s**2
    return g
'''

_BERN_F = '''

def _f(z, W, c, x):
    """sum_k x_k log sigmoid(a_k) + (1 - x_k) log sigmoid(-a_k), a = W z + c, per sample (n,)."""
    a = z @ W.T + c
    return a @ x - numpy.logaddexp(0, a).sum(axis=1)


def _grad(z, W, c, x):
    """Its gradient in z per sample, (n, d): W^T (x - sigmoid(W z + c))."""
    return (x - scipy.special.expit(z @ W.T + c)) @ W
'''

_EXPR_F = '''

def _f_and_grad(z, {data_args}):
    """f per sample (n,) and its gradient in z (n, d), componentwise."""
    n = z.shape[0]
{body}


def _f(z, {data_args}):
    return _f_and_grad(z, {data_call})[0]


def _grad(z, {data_args}):
    return _f_and_grad(z, {data_call})[1]
'''

_ESTIMATORS = '''

def score_function(rng, n, *, {args}):
    """Score-function (log-derivative, REINFORCE) estimator of grad E_q[f]: (n, {k}) rows
    f(z) * grad log q(z), z = mu + S eps; requires E[f^2] finite, f need not be differentiable.
    Rows: f * (u, {score_rest}), u = S^-T eps = Sigma^-1 (z - mu)."""
{check}    eps = rng.standard_normal((n, D), dtype=DTYPE)
    z = {z_line}
    f = _f(z, {call_args})
    out = numpy.empty(({k}, n), dtype=DTYPE)
{score_body}    out *= f
    return out.T


def pathwise(rng, n, *, {args}):
    """Pathwise (reparameterization) estimator of grad E_q[f]: (n, {k}) rows of
    d/dphi f(mu + S eps) = (g, {path_rest}), g = df/dz; requires f differentiable."""
{check}{path_refused}    eps = rng.standard_normal((n, D), dtype=DTYPE)
    z = {z_line}
    g = _grad(z, {call_args})
    out = numpy.empty(({k}, n), dtype=DTYPE)
    out[:D] = g.T
{path_body}    return out.T
'''

_EXACT_QUAD = '''

def exact_gradient(*, {args}):
    """The exact gradient ({k},) by the Gaussian moment rules for f = c0 + b^T z + z^T Q z:
    d/dmu = b + 2 Q mu, d/dS = part(2 Q S)."""
    b, Q = _b_Q({call_args})
    S = {S_line}
    B = 2 * Q @ S
    return numpy.concatenate([b + 2 * Q @ mu, {B_part}])
'''


def _wrt_code(fam):
    mu = "tuple(f'mu[{i}]' for i in range(D))"
    if fam.diagonal:
        return f"{mu} + tuple(f'sigma[{{i}}]' for i in range(D))"
    return f"{mu} + tuple(f'L[{{i}},{{j}}]' for i in range(D) for j in range(i + 1))"


def _expression_body(problem, printer):
    """Lines computing f and g = df/dz (as a (n, d) array) for an expression, with CSE."""
    z = problem.z
    names = {zk: sp.Symbol(f"z_{k}", real=True) for k, zk in enumerate(z)}
    jumps = _jumps(problem.f)  # the pathwise estimator is refused: no gradient (DiracDelta)
    exprs = [problem.f] + ([] if jumps else [sp.diff(problem.f, zk) for zk in z])
    exprs = [stable(e).xreplace(names) for e in exprs]
    reps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("t_"), optimizations=None)
    used = set().union(*(e.free_symbols for e in reduced), *(e.free_symbols for _, e in reps))
    lines = [f"    z_{k} = z[:, {k}]" for k, zk in enumerate(z) if names[zk] in used]
    lines += [f"    {sym} = {printer.doprint(e)}" for sym, e in reps]
    lines.append(f"    f = {printer.doprint(reduced[0])} + numpy.zeros(n, dtype=z.dtype)")
    if jumps:
        lines.append("    g = numpy.full_like(z, numpy.nan)  # f is discontinuous: no pathwise")
    else:
        lines.append("    g = numpy.empty_like(z)")
        lines += [f"    g[:, {k}] = {printer.doprint(e)}" for k, e in enumerate(reduced[1:])]
    lines.append("    return f, g")
    return "\n".join(lines)


def vector_module(problem: VectorProblem, *, dtype: str = "float64", command: str | None = None,
                  version: str | None = None) -> str:
    """A standalone NumPy module: WRT, PARAMETERS, sample, score_function, pathwise and (for a
    Gaussian decoder or an expression of degree <= 2) exact_gradient. Parameters are arrays:
    mu (d,), sigma (d,) or L (d, d) (upper triangle ignored), W (D, d), c (D,), x (D,)."""
    if dtype not in ("float64", "float32"):
        raise DeriveError(f"dtype must be float64 or float32, not {dtype!r}")
    fam = problem.family
    if fam.name == "dirichlet":
        return _dirichlet_module(problem, dtype, command, version)
    if is_meanfield(fam):
        from ._meanfield import meanfield_module
        return meanfield_module(problem, dtype=dtype, command=command, version=version)
    printer = _Printer()
    fam_args = ", ".join(fam.parameter_arrays)
    call_args = ", ".join(problem.data_names)
    args = ", ".join(problem.parameters)
    if fam.diagonal:
        z_line = "mu + eps * sigma"
        score_body = ("    u = eps / sigma\n    out[:D] = u.T\n"
                      "    out[D:] = ((eps * eps - 1) / sigma).T\n")
        path_body = "    out[D:] = (g * eps).T\n"
        score_rest, path_rest = "(eps^2 - 1)/sigma", "g * eps"
        check = ("    mu, sigma = numpy.asarray(mu, DTYPE), numpy.asarray(sigma, DTYPE)\n")
        S_line, B_part = "numpy.diag(sigma)", "numpy.diag(B)"
    else:
        z_line = "mu + eps @ L.T"
        score_body = ("    u = eps @ Li\n    out[:D] = u.T\n    I, J = numpy.tril_indices(D)\n"
                      "    numpy.multiply(u[:, I].T, eps[:, J].T, out=out[D:])\n"
                      "    out[D + numpy.flatnonzero(I == J)] -= (1 / numpy.diag(L))[:, None]\n")
        path_body = ("    I, J = numpy.tril_indices(D)\n"
                     "    numpy.multiply(g[:, I].T, eps[:, J].T, out=out[D:])\n")
        score_rest = "tril(u eps^T) - diag(1/L_ii)"
        path_rest = "tril(g eps^T)"
        check = ("    mu, L = numpy.asarray(mu, DTYPE), numpy.tril(numpy.asarray(L, DTYPE))\n"
                 "    Li = numpy.linalg.inv(L)\n")
        S_line, B_part = "numpy.tril(L)", "B[numpy.tril_indices(D)]"
    refused = refusal(problem, "pathwise")
    path_refused = (f"    raise ValueError({refused!r})\n" if refused else "")
    if problem.kind == "gaussian_decoder":
        fcode = _GAUSS_F
    elif problem.kind == "bernoulli_decoder":
        fcode = _BERN_F
    else:
        fcode = _EXPR_F.format(data_args=call_args or "*_", data_call=call_args,
                               body=_expression_body(problem, printer))
        if not call_args:
            call_args = ""
    body = (_SAMPLE.format(fam_args=fam_args, family=fam, d=fam.d, z_line=z_line) + fcode
            + _ESTIMATORS.format(args=args, k=fam.k, z_line=z_line, call_args=call_args,
                                 score_body=score_body, path_body=path_body, check=check,
                                 score_rest=score_rest, path_rest=path_rest,
                                 path_refused=path_refused))
    exact = problem.kind == "gaussian_decoder" or (problem.kind == "expression"
                                                  and quadratic_form(problem) is not None)
    if exact:
        body += _b_q_source(problem, printer) + _EXACT_QUAD.format(
            args=args, k=fam.k, call_args=call_args, S_line=S_line, B_part=B_part)
    scipy = "scipy.special" in body
    head = _HEAD.format(
        title=f"Gradient estimators of E_q[f] for q = {fam.name}, d = {fam.d}.",
        sampler=fam.sampler_text, ftext=problem.text, k=fam.k,
        wrt_text=f"{fam.wrt[0]} .. {fam.wrt[-1]}",
        version=f" {version}" if version else "", command=f" by: {command}" if command else "",
        scipy=" and scipy.special" if scipy else "", imports="import scipy.special\n" if scipy
        else "", dtype=dtype, d=fam.d, wrt_code=_wrt_code(fam), parameters=problem.parameters)
    return head + body


def _f_code(problem, printer):
    """(source of _f and _grad, the data arguments of their calls)."""
    call_args = ", ".join(problem.data_names)
    if problem.kind == "gaussian_decoder":
        return _GAUSS_F, call_args
    if problem.kind == "bernoulli_decoder":
        return _BERN_F, call_args
    return _EXPR_F.format(data_args=call_args or "*_", data_call=call_args,
                          body=_expression_body(problem, printer)), call_args


def _dirichlet_module(problem, dtype, command, version):
    from ._dirichlet import module_body
    fam = problem.family
    printer = _Printer()
    fcode, call_args = _f_code(problem, printer)
    head = _HEAD.format(
        title=f"Gradient estimators of E_q[f] for q = dirichlet, K = {fam.d}.",
        sampler=fam.sampler_text, ftext=problem.text, k=fam.k,
        wrt_text=f"{fam.wrt[0]} .. {fam.wrt[-1]}",
        version=f" {version}" if version else "", command=f" by: {command}" if command else "",
        scipy=" and scipy.special", imports="import scipy.special\n", dtype=dtype, d=fam.d,
        wrt_code="tuple(f'alpha[{i}]' for i in range(D))", parameters=problem.parameters)
    return head + module_body(problem, printer, fcode, call_args)


def _b_q_source(problem, printer):
    if problem.kind == "gaussian_decoder":
        return ('\n\ndef _b_Q(W, c, x, s):\n    """f = c0 + b^T z + z^T Q z: b = W^T (x - c)/s^2,'
                ' Q = -W^T W/(2 s^2)."""\n    return W.T @ (x - c) / s**2, -(W.T @ W) / (2 * s**2)\n')
    _, b, Q = quadratic_form(problem)
    args = ", ".join(problem.data_names) or "*_"
    bl = ", ".join(printer.doprint(v) for v in b)
    ql = ", ".join("[" + ", ".join(printer.doprint(v) for v in Q.row(i)) + "]"
                   for i in range(Q.rows))
    return (f'\n\ndef _b_Q({args}):\n    """f = c0 + b^T z + z^T Q z (Q symmetric)."""\n'
            f"    return (numpy.array([{bl}], dtype=DTYPE),\n"
            f"            numpy.array([{ql}], dtype=DTYPE))\n")


def vector_estimator(problem: VectorProblem, kind: str, *, dtype: str = "float64"):
    """``fn(rng, n, **params)`` returning (n, k) per-sample rows; ``fn.parameters`` names the
    keyword arguments, ``fn.wrt`` the columns and ``fn.source`` the generated module."""
    if kind not in ("score", "pathwise"):
        raise DeriveError(f"kind must be 'score' or 'pathwise', not {kind!r}")
    reason = refusal(problem, kind)
    if reason:
        raise DeriveError(f"the {kind} estimator does not apply: {reason}")
    source = problem._cache.get(("source", dtype))
    if source is None:
        source = problem._cache[("source", dtype)] = vector_module(problem, dtype=dtype)
    namespace = {"__name__": f"mcgrad_vector_{kind}"}
    exec(compile(source, f"<mcgrad {problem.family.name} module>", "exec"), namespace)
    fn = namespace["score_function" if kind == "score" else "pathwise"]
    fn.parameters, fn.wrt, fn.source = problem.parameters, namespace["WRT"], source
    fn.module = namespace
    return fn


def derivation_cost(name: str, d: int, f_text: str) -> dict:
    """Seconds to parse and derive (matrix forms and the generated module) and the module's
    size in bytes and lines, for the growth table."""
    start = time.perf_counter()
    p = vector_problem(vector_family(name, d), f_text)
    matrix_derivation(p)
    source = vector_module(p)
    return {"seconds": time.perf_counter() - start, "bytes": len(source.encode()),
            "lines": source.count("\n")}
