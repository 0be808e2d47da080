r"""The Dirichlet family: implicit reparameterization through Gamma draws, exact moments.

.. math::

    z = g / \textstyle\sum_k g_k, \qquad g_k \sim \mathrm{Gamma}(\alpha_k, 1) \text{ independent},
    \qquad z \sim \mathrm{Dir}(\alpha_0, \dots, \alpha_{K-1}).

**Score function.** :math:`\partial_{\alpha_j} \log q(z) = \psi(A) - \psi(\alpha_j) + \log z_j`
with :math:`A = \sum_k \alpha_k`; the row is :math:`f(z)` times that, for every j. Requires
:math:`E[f^2 \log^2 z_j]` finite.

**Pathwise (implicit).** The Gamma draws have no explicit transform in their shape; the implicit
derivative (Figurnov, Mohamed, Mnih 2018) is :math:`\partial g_j / \partial\alpha_j =
-\partial_\alpha P(\alpha_j, g_j) / p(g_j; \alpha_j)` with P the regularized lower incomplete
gamma (the same numerical derivative as the ``gamma`` family, ``scipy.special`` in the generated
code), and the normalisation gives
:math:`\partial z_k / \partial \alpha_j = (\delta_{kj} - z_k)\, (\partial g_j/\partial\alpha_j) / S`,
:math:`S = \sum g`. With :math:`u = \partial f / \partial z` the row is

.. math::

    \partial_{\alpha_j} f(z) = \frac{\partial g_j / \partial \alpha_j}{S}
    \Big(u_j - \sum_k z_k u_k\Big).

Requires f differentiable on the open simplex.

**Exact values.** For f a sum of terms :math:`c \prod_k z_k^{a_k} (\log z_k)^{b_k}` (polynomials,
negative and fractional powers, logarithms), with :math:`M(t) = \frac{\Gamma(A)}{\Gamma(A +
\sum t)} \prod_k \frac{\Gamma(\alpha_k + t_k)}{\Gamma(\alpha_k)}`,
:math:`E[\prod z^{a} \log^{b} z] = \partial_t^{b} M(t)|_{t=a}`, finite iff
:math:`\alpha_k + a_k > 0` for every k. The exact gradient differentiates :math:`E[f]` in
:math:`\alpha` with SymPy (independent of both estimators); the per-sample variances of the
score rows use the same moments, evaluated numerically through the cumulants of
:math:`\log z` (:math:`\kappa_{k} = \psi(\alpha_k + a_k) - \psi(A + \sum a)`, higher orders by
polygamma). The pathwise variance involves :math:`(\partial g/\partial \alpha)^2`, which has no
closed form: it is estimated only. The Gaussian decoder (quadratic in z) uses the first and
second moments :math:`E z = \alpha / A`, :math:`E z z^\top = (\mathrm{diag}\,\alpha +
\alpha\alpha^\top) / (A (A + 1))`.

References: Figurnov, Mohamed, Mnih, "Implicit Reparameterization Gradients", NeurIPS 2018;
Mohamed, Rosca, Figurnov, Mnih, "Monte Carlo Gradient Estimation in Machine Learning", JMLR 21
(2020), section 5.3 and 6.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import sympy as sp
from sympy.utilities.iterables import multiset_partitions

from ._budget import OutOfTime, time_budget
from ._errors import DeriveError

MAX_K = 64
ALPHA_MIN = 0.05
"""Smaller concentrations draw Gamma variates that underflow to 0 in float64 (probability about
(2.2e-308)**alpha / Gamma(alpha + 1) per draw: 1e-15 at 0.05, 1e-6 at 0.02), where log z and the
implicit derivative are undefined; they are refused rather than turned into inf or nan."""
ALPHA_MIN_REASON = (f"every alpha must be >= {ALPHA_MIN} (smaller concentrations draw Gamma "
                    f"variates that underflow to 0 in float64, where log z and the implicit "
                    f"derivative are undefined)")
EXACT_SECONDS = 10.0
MAX_VARIANCE_TERMS = 400_000  # products of terms of f for the score variances
PATHWISE_VARIANCE_REASON = (
    "the implicit derivative dg/dalpha of the Gamma draws (the regularized incomplete gamma "
    "differentiated in its shape) has no closed form, so neither has E[(d/dalpha f)^2]; the "
    "pathwise variance is estimated only")
_BAD_K = "the Dirichlet dimension K must be a whole number from 2 to {most}, got {d!r}; e.g. --dim 3"


@dataclass(frozen=True, eq=False)
class DirichletFamily:
    """q(z) = Dir(alpha_0 .. alpha_{K-1}) on the simplex, z = g / sum g, g_k ~ Gamma(alpha_k)."""

    d: int
    name: str = "dirichlet"
    diagonal: bool = False

    @property
    def wrt(self) -> tuple:
        return tuple(f"alpha[{i}]" for i in range(self.d))

    @property
    def k(self) -> int:
        return self.d

    @property
    def parameter_arrays(self) -> tuple:
        return ("alpha",)

    @property
    def sampler_text(self) -> str:
        return ("z = g / sum(g), g_k ~ Gamma(alpha_k, 1) independent (implicit "
                "reparameterization through the Gamma draws)")

    def symbols(self):
        return tuple(sp.Symbol(f"alpha[{i}]", positive=True) for i in range(self.d))

    def __str__(self):
        return f"dirichlet(K={self.d})"


def check_alpha(alpha_values):
    """DeriveError unless every alpha >= ALPHA_MIN."""
    for i, a in enumerate(alpha_values):
        if not a >= ALPHA_MIN:
            raise DeriveError(f"alpha[{i}] = {a:g}: {ALPHA_MIN_REASON}")


def dirichlet_family(d) -> DirichletFamily:
    if isinstance(d, bool) or not isinstance(d, int) or not 2 <= d <= MAX_K:
        raise DeriveError(_BAD_K.format(most=MAX_K, d=d))
    return DirichletFamily(d)


# --------------------------------------------------------------------------- moments

class NoClosedForm(Exception):
    """E[f] under the Dirichlet is not a sum of terms c prod z^a log(z)^b."""


def _split_logs(expr, z):
    """log of a product of components (and positive numbers) as the sum of logs; the components
    are positive on the simplex, other symbols are left alone (they may be negative)."""
    zs = set(z)

    def split(arg):
        total = sp.Integer(0)
        for factor in sp.Mul.make_args(arg):
            base, power = factor.as_base_exp()
            if base in zs and power.is_number:
                total += power * sp.log(base)
            elif factor.is_number and factor.is_positive:
                total += sp.log(factor)
            else:
                return None
        return total

    def rewrite(e):
        out = split(e.args[0])
        return e if out is None else out

    return expr.replace(lambda e: isinstance(e, sp.log) and e.args[0].free_symbols & zs, rewrite)


def monomials(f, z) -> dict:
    """{(a, b): coefficient} with f = sum coefficient * prod z_k^a_k log(z_k)^b_k; the
    coefficients are free of z (numbers or data symbols). NoClosedForm otherwise."""
    index = {zk: k for k, zk in enumerate(z)}
    logs = {sp.log(zk): k for k, zk in enumerate(z)}
    K = len(z)
    out = {}
    for term in sp.Add.make_args(sp.expand(_split_logs(f, z))):
        coeff, dep = term.as_independent(*z, as_Add=False)
        a, b = [sp.Integer(0)] * K, [0] * K
        for factor in sp.Mul.make_args(dep):
            if factor == 1:
                continue
            base, power = factor.as_base_exp()
            if base in index and power.is_number and power.is_real:
                a[index[base]] += power
            elif base in logs and power.is_Integer and power > 0:
                b[logs[base]] += int(power)
            else:
                raise NoClosedForm(f"the factor {sp.sstr(factor)} is not a power or a power of "
                                   f"the log of a component")
        key = (tuple(a), tuple(b))
        out[key] = out.get(key, 0) + coeff
    return {k: v for k, v in out.items() if v != 0}


def _existence(a, alpha_values):
    """None if E[prod z^a ...] is finite at these alpha, else the reason."""
    for k, (ak, al) in enumerate(zip(a, alpha_values)):
        if ak < 0 and not al + ak > 0:
            return (f"E[z[{k}]**({sp.sstr(ak)})] is infinite under the Dirichlet at alpha[{k}] = "
                    f"{float(al):g}: it needs alpha[{k}] > {sp.sstr(-ak)}")
    return None


def symbolic_moment(a, b, alpha):
    """E[prod z^a log(z)^b] as a SymPy expression of the symbols ``alpha``: derivatives in t of
    the moment function M(t) at t = a."""
    K = len(alpha)
    t = sp.symbols(f"t0:{K}", real=True)
    A = sp.Add(*alpha)
    M = sp.gamma(A) / sp.gamma(A + sp.Add(*t))
    for k in range(K):
        M *= sp.gamma(alpha[k] + t[k]) / sp.gamma(alpha[k])
    for k in range(K):
        if b[k]:
            M = sp.diff(M, t[k], b[k])
    return M.xreplace(dict(zip(t, a)))


@lru_cache(maxsize=None)
def _partitions_of(n):
    """The set partitions of {0, ..., n-1} (SymPy's multiset_partitions of distinct items)."""
    return tuple(tuple(tuple(block) for block in p) for p in multiset_partitions(list(range(n))))


def numeric_moment(a, b, alpha, cache=None):
    """E[prod z^a log(z)^b] as an mpmath number at numeric ``alpha`` (mpf): M(a) times the
    moment of the log-components from their cumulants, sum over set partitions of the product of
    cumulants; the cumulant of order r of (log z_k1, ..., log z_kr) under the tilted Dirichlet is
    [all k equal] psi^(r-1)(alpha_k + a_k) - psi^(r-1)(A + sum a)."""
    key = (a, b)
    if cache is not None and key in cache:
        return cache[key]
    A = mpmath.fsum(alpha)
    tilt = [al + mpmath.mpf(ak) for al, ak in zip(alpha, a)]
    At = mpmath.fsum(tilt)
    logm = mpmath.loggamma(A) - mpmath.loggamma(At)
    for al, tl, ak in zip(alpha, tilt, a):
        if ak:
            logm += mpmath.loggamma(tl) - mpmath.loggamma(al)
    m = mpmath.exp(logm)
    labels = [k for k, bk in enumerate(b) for _ in range(bk)]
    if labels:
        total = mpmath.mpf(0)
        for part in _partitions_of(len(labels)):
            term = mpmath.mpf(1)
            for block in part:
                ks = {labels[i] for i in block}
                r = len(block) - 1
                cum = -mpmath.polygamma(r, At)
                if len(ks) == 1:
                    cum += mpmath.polygamma(r, tilt[labels[block[0]]])
                term *= cum
            total += term
        m *= total
    if cache is not None:
        cache[key] = m
    return m


# --------------------------------------------------------------------------- exact values

def exact(problem, values, *, decoder_quadratic=None):
    """VectorExact for a Dirichlet problem at ``values`` ({"alpha": list, data names: floats}).

    ``decoder_quadratic``: (c0, b, Q) as floats for the Gaussian decoder (f = c0 + b^T z +
    z^T Q z), given by the caller that has W, c, x, s."""
    from ._numbers import evaluate, exact_number
    from ._vector import VectorExact
    fam = problem.family
    alpha_values = [float(v) for v in values["alpha"]]
    check_alpha(alpha_values)
    if problem.kind == "bernoulli_decoder":
        why = ("no closed form: E[log sigmoid(a^T z + c)] under a Dirichlet has none; compare the "
               "two estimators with each other")
        return VectorExact(None, "none", why, variance_missing={"score": why, "pathwise": why})
    if problem.kind == "gaussian_decoder":
        c0, b, Q = decoder_quadratic
        grad = decoder_gradient(b, Q, alpha_values)
        terms = _quadratic_terms(c0, b, Q)
        return VectorExact(grad, "Dirichlet moments (closed form)", None, None,
                           *_score_variances_or_reason(terms, alpha_values, grad))
    alpha = fam.symbols()
    at = {s: exact_number(v) for s, v in zip(alpha, alpha_values)}
    data = {s: exact_number(values[s.name]) for s in problem.data}
    try:
        terms = monomials(problem.f.xreplace(data), problem.z)
    except NoClosedForm as err:
        why = f"no exact value: {err} (the Dirichlet moment rules take c*prod z^a log(z)^b)"
        return VectorExact(None, "none", why, variance_missing={"score": why, "pathwise": why})
    for a, _ in terms:
        bad = _existence(a, alpha_values)
        if bad:
            return VectorExact(None, "none", bad, variance_missing={"score": bad,
                                                                      "pathwise": bad})
    try:
        with time_budget(EXACT_SECONDS):
            mean = sp.Add(*(c * symbolic_moment(a, b, alpha) for (a, b), c in terms.items()))
            grad = tuple(float(evaluate(sp.diff(mean, al), at)) for al in alpha)
    except OutOfTime:
        why = f"no exact value: E[f] and its derivatives did not finish within {EXACT_SECONDS:g} s"
        return VectorExact(None, "none", why, variance_missing={"score": why, "pathwise": why})
    numeric_terms = {k: float(v) for k, v in terms.items()}
    score_var, missing = _score_variances_or_reason(numeric_terms, alpha_values, grad)
    return VectorExact(grad, "Dirichlet moments (closed form)", None, None, score_var, missing)


def _quadratic_terms(c0, b, Q):
    K = len(b)
    zero = (0,) * K
    terms = {}

    def add(a, v):
        if v:
            terms[(a, zero)] = terms.get((a, zero), 0.0) + v

    add(zero, c0)
    for i in range(K):
        add(tuple(1 if k == i else 0 for k in range(K)), b[i])
        for j in range(K):
            add(tuple((k == i) + (k == j) for k in range(K)), Q[i][j])
    return terms


def decoder_gradient(b, Q, alpha):
    """d/dalpha_j of E[c0 + b^T z + z^T Q z], z ~ Dir(alpha): with A = sum alpha, m = alpha/A,
    N = diag(alpha) + alpha alpha^T and D = A (A + 1), E f = c0 + b^T m + tr(Q N)/D, so
    d/dalpha_j = (b_j - b^T m)/A + (Q_jj + ((Q + Q^T) alpha)_j)/D - tr(Q N) (2A + 1)/D^2."""
    K = len(b)
    A = math.fsum(alpha)
    D = A * (A + 1)
    bm = math.fsum(b[k] * alpha[k] for k in range(K)) / A
    Qa = [math.fsum((Q[j][k] + Q[k][j]) * alpha[k] for k in range(K)) for j in range(K)]
    trQN = math.fsum(Q[k][k] * alpha[k] for k in range(K)) + math.fsum(
        Q[i][j] * alpha[i] * alpha[j] for i in range(K) for j in range(K))
    return tuple((b[j] - bm) / A + (Q[j][j] + Qa[j]) / D - trQN * (2 * A + 1) / D**2
                 for j in range(K))


def _score_variances_or_reason(terms, alpha_values, grad):
    """(variances, {}) or (None, {"score": reason}); pathwise always carries its reason."""
    missing = {"pathwise": PATHWISE_VARIANCE_REASON}
    try:
        variances = score_variances(terms, alpha_values, grad)
    except NoClosedForm as err:
        missing["score"] = str(err)
        return None, missing
    return variances, missing


def score_variances(terms, alpha_values, grad, *, deadline=None):
    """Per-sample variances of the score rows f * (psi(A) - psi(alpha_j) + log z_j):
    E[f^2 (c_j + log z_j)^2] - grad_j^2 over the products of the terms of f; vectorized floats
    where f has no log factors, the 30-digit cumulant moments otherwise."""
    deadline = time.monotonic() + EXACT_SECONDS if deadline is None else deadline
    items = list(terms.items())
    if len(items) ** 2 > MAX_VARIANCE_TERMS:
        raise NoClosedForm(f"the score variance needs E[f^2 ...] over {len(items)**2:,} products "
                           f"of terms; more than {MAX_VARIANCE_TERMS:,}, not computed")
    squared = {}
    for (a1, b1), c1 in items:
        for (a2, b2), c2 in items:
            key = (tuple(x + y for x, y in zip(a1, a2)), tuple(x + y for x, y in zip(b1, b2)))
            squared[key] = squared.get(key, 0) + c1 * c2
    for a, _ in squared:
        bad = _existence(a, alpha_values)
        if bad:
            raise NoClosedForm(f"the score variance does not exist: {bad}")
    if not any(any(b) for _, b in squared):
        return _score_variances_without_logs(squared, alpha_values, grad)
    return _score_variances_by_cumulants(squared, alpha_values, grad, deadline)


def _score_variances_by_cumulants(squared, alpha_values, grad, deadline):
    """The score variances from :func:`numeric_moment` at 30 digits (any log factors)."""
    with mpmath.workdps(30):
        alpha = [mpmath.mpf(v) for v in alpha_values]
        shift = mpmath.digamma(mpmath.fsum(alpha))
        cache, out = {}, []
        for j in range(len(alpha)):
            c = shift - mpmath.digamma(alpha[j])
            total = mpmath.mpf(0)
            for (a, b), coeff in squared.items():
                if time.monotonic() > deadline:
                    raise NoClosedForm(f"the score variances did not finish within "
                                       f"{EXACT_SECONDS:g} s")
                b1 = b[:j] + (b[j] + 1,) + b[j + 1:]
                b2 = b[:j] + (b[j] + 2,) + b[j + 1:]
                m0 = numeric_moment(a, b, alpha, cache)
                m1 = numeric_moment(a, b1, alpha, cache)
                m2 = numeric_moment(a, b2, alpha, cache)
                total += mpmath.mpf(coeff) * (c * c * m0 + 2 * c * m1 + m2)
            out.append(max(0.0, float(total - mpmath.mpf(grad[j]) ** 2)))
    return tuple(out)


def _score_variances_without_logs(squared, alpha_values, grad):
    """The score variances when f^2 = sum c_a z^a has no log factors (polynomials, powers, the
    Gaussian decoder), vectorized over the terms: E[z^a (c_j + log z_j)^2] = M(a) E'[(c_j +
    log z_j)^2] under the tilted Dirichlet(alpha + a), where log z_j has mean psi(alpha'_j) -
    psi(A') and variance psi1(alpha'_j) - psi1(A'). Floats (SciPy), summed with math.fsum."""
    import numpy as np
    from scipy.special import digamma, gammaln, polygamma
    a = np.array([[float(v) for v in key[0]] for key in squared])  # (T, K)
    coeff = np.array([float(v) for v in squared.values()])
    alpha = np.array(alpha_values, dtype=float)
    A = alpha.sum()
    tilt = alpha + a
    At = tilt.sum(axis=1)
    logm = gammaln(A) - gammaln(At) + (gammaln(tilt) - gammaln(alpha)).sum(axis=1)
    weight = coeff * np.exp(logm)
    shift = digamma(A) - digamma(alpha)  # (K,)
    mean_log = digamma(tilt) - digamma(At)[:, None]  # (T, K)
    var_log = polygamma(1, tilt) - polygamma(1, At)[:, None]
    second = (shift + mean_log) ** 2 + var_log  # E'[(c_j + log z_j)^2]
    return tuple(max(0.0, math.fsum(weight * second[:, j]) - grad[j] ** 2)
                 for j in range(len(alpha_values)))


# --------------------------------------------------------------------------- code

SAMPLE = '''

def _alpha(alpha):
    """alpha as a (D,) float64 array, every entry >= {alpha_min}."""
    alpha = numpy.broadcast_to(numpy.asarray(alpha, dtype=numpy.float64), (D,))
    if not numpy.all(alpha >= {alpha_min}):
        raise ValueError({reason!r})
    return alpha


def _draw(rng, n, alpha):
    """Gamma(alpha_k, 1) draws g (n, D) and their row sums S (n, 1), in float64 whatever DTYPE
    (small draws would underflow in float32)."""
    g = rng.standard_gamma(alpha, size=(n, D))
    return g, g.sum(axis=1, keepdims=True)


def sample(rng, n, *, alpha):
    """n draws of z ~ Dirichlet(alpha), shape (n, D): z = g / sum(g), g_k ~ Gamma(alpha_k, 1)."""
    g, S = _draw(rng, n, _alpha(alpha))
    return (g / S).astype(DTYPE, copy=False)
'''

ESTIMATORS = '''

def score_function(rng, n, *, {args}):
    """Score-function (log-derivative, REINFORCE) estimator of grad E_q[f]: (n, D) rows
    f(z) * (psi(A) - psi(alpha_j) + log z_j), A = sum(alpha); requires E[f^2 log(z_j)^2] finite,
    f need not be differentiable."""
    alpha = _alpha(alpha)
    g, S = _draw(rng, n, alpha)
    f = _f(g / S, {call_args})
    out = numpy.log(g)
    out -= numpy.log(S)
    out += scipy.special.digamma(alpha.sum()) - scipy.special.digamma(alpha)
    out *= f[:, None]
    return out.astype(DTYPE, copy=False)


def pathwise(rng, n, *, {args}):
    """Pathwise estimator of grad E_q[f] by implicit reparameterization (Figurnov et al. 2018):
    (n, D) rows (dg_j/dalpha_j / S) (u_j - sum_k z_k u_k), u = df/dz, S = sum(g), with
    dg/dalpha = -dP(alpha, g)/dalpha / p(g; alpha) numerically; requires f differentiable."""
{path_refused}    alpha = _alpha(alpha)
    g, S = _draw(rng, n, alpha)
    z = g / S
    u = _grad(z, {call_args})
    out = u - numpy.einsum("nk,nk->n", z, u)[:, None]
    out *= _gamma_dx_dalpha(numpy.broadcast_to(alpha, g.shape), g)
    out /= S
    return out.astype(DTYPE, copy=False)
'''

EXACT_DECODER = '''

def exact_gradient(*, {args}):
    """The exact gradient (D,) of E[log N(x | W z + c, s^2 I)] under Dirichlet(alpha) from the
    first two moments: with b = W^T (x - c)/s^2, Q = -W^T W/(2 s^2), A = sum(alpha),
    N = diag(alpha) + alpha alpha^T, Dn = A (A + 1):
    (b - b.alpha/A)/A + (diag(Q) + 2 Q alpha)/Dn - tr(Q N)(2A + 1)/Dn^2."""
    alpha = _alpha(alpha)
    b, Q = W.T @ (x - c) / s**2, -(W.T @ W) / (2 * s**2)
    A = alpha.sum()
    Dn = A * (A + 1)
    trQN = numpy.diag(Q) @ alpha + alpha @ Q @ alpha
    return (b - b @ alpha / A) / A + (numpy.diag(Q) + 2 * Q @ alpha) / Dn - trQN * (2 * A + 1) / Dn**2
'''


def module_body(problem, printer, fcode, call_args):
    """The Dirichlet part of a generated vector module (after the header and _f/_grad)."""
    from ._implicit import HELPERS
    from ._vector import refusal
    args = ", ".join(problem.parameters)
    refused = refusal(problem, "pathwise")
    path_refused = f"    raise ValueError({refused!r})\n" if refused else ""
    gamma_helpers = HELPERS[:HELPERS.index("\ndef _beta_dz(")]  # the Gamma shape derivative
    sample = SAMPLE.replace("{alpha_min}", repr(ALPHA_MIN)).replace("{reason!r}",
                                                                    repr(ALPHA_MIN_REASON))
    body = ("\n\n" + gamma_helpers.strip("\n") + "\n" + sample + fcode
            + ESTIMATORS.format(args=args, call_args=call_args, path_refused=path_refused))
    if problem.kind == "gaussian_decoder":
        body += EXACT_DECODER.format(args=args)
    return body


def derivation(problem) -> dict:
    """Text of the per-sample rows and the exact route for ``mcgrad derive``."""
    out = {"pathwise": "d/dalpha_j = (dg_j/dalpha_j / S) (u_j - sum_k z_k u_k), u = df/dz, "
                       "S = sum(g), dg/dalpha = -dP(alpha, g)/dalpha / p(g; alpha) (implicit)",
           "score": "f * (psi(A) - psi(alpha_j) + log z_j), A = sum(alpha)"}
    if problem.kind == "gaussian_decoder":
        out["exact"] = ("Dirichlet moments: E z = alpha/A, E z z^T = (diag alpha + alpha alpha^T)"
                        "/(A (A + 1)), differentiated in alpha")
    elif problem.kind == "bernoulli_decoder":
        out["exact"] = "no closed form (E of log-sigmoid under a Dirichlet)"
    else:
        out["exact"] = ("Dirichlet moments d^b/dt^b M(t) at t = a for each term c prod z^a "
                        "log(z)^b, differentiated in alpha; null with the reason otherwise")
    return out
