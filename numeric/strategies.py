"""Hypothesis strategies for Monte Carlo gradient tests: seeds, valid parameters, integrands.

>>> from hypothesis import given
>>> from numeric import strategies as mst
>>> from numeric.testing import assert_unbiased
>>> def pathwise(rng, m, *, mu, sigma):        # d/dmu E[z**2] = 2 mu, z = mu + sigma eps
...     return 2.0 * (mu + sigma * rng.standard_normal(m))
>>> @given(mst.seeds(), mst.normal_params())
... def test_pathwise(seed, params):
...     assert_unbiased(pathwise, reference=2.0 * params["mu"], seed=seed, **params)
>>> test_pathwise()

Every strategy takes keyword-only options and checks them when called (not when drawing),
raising :class:`hypothesis.errors.InvalidArgument` with the fix. A parameter option accepts a value
(``sigma=1.0``) or a strategy (``sigma=st.floats(0.5, 2)``); a strategy whose draws leave the
domain raises InvalidArgument when drawn.

Families and domains (from ``numeric._catalog``, which ``tests/test_strategies.py`` checks against
``derive.CATALOG``); the default ranges keep both estimators' variances finite and float64 safe:

=============  ===============================  ======================================
family         parameters (domain)              default strategy ranges
=============  ===============================  ======================================
normal         mu real, sigma > 0               mu in [-3, 3], sigma in [0.2, 3]
lognormal      mu real, sigma > 0               mu in [-1, 1], sigma in [0.1, 1]
laplace        mu real, b > 0                   mu in [-3, 3], b in [0.2, 3]
logistic       mu real, s > 0                   mu in [-3, 3], s in [0.2, 3]
gumbel         mu real, beta > 0                mu in [-3, 3], beta in [0.2, 3]
cauchy         mu real, gamma > 0               mu in [-3, 3], gamma in [0.2, 3]
exponential    lam > 0                          lam in [0.2, 5]
weibull        lam > 0, k > 0                   lam in [0.2, 3], k in [0.5, 5]
uniform        a < b                            a in [-3, 3], b - a in [0.1, 4]
kumaraswamy    a > 0, b > 0                     a, b in [0.5, 5]
=============  ===============================  ======================================
"""

import keyword
import re
from typing import NamedTuple

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.strategies import SearchStrategy

from . import _catalog

__all__ = [
    "FAMILIES",
    "INTEGRAND_KINDS",
    "ProblemCase",
    "cauchy_params",
    "exponential_params",
    "family_params",
    "gumbel_params",
    "integrands",
    "kumaraswamy_params",
    "laplace_params",
    "logistic_params",
    "lognormal_params",
    "normal_params",
    "problems",
    "seeds",
    "uniform_params",
    "weibull_params",
]

FAMILIES = tuple(_catalog.FAMILIES)
"""The family names, in ``derive.CATALOG``'s order."""

INTEGRAND_KINDS = ("polynomial", "exp", "trig", "softplus", "sigmoid", "loglik")
"""Kinds of :func:`integrands`: polynomials in z; exp (exp(c*z) where its expectation is finite,
else a decaying exp(-c*z) or exp(-c*z**2)); sin/cos; softplus(c*z + d); sigmoid(c*z + d); and the
Gaussian log-likelihood of an observation x given mean c*z."""

_BOUNDED = ("exp", "trig", "sigmoid")
_KINDS_FOR = {name: INTEGRAND_KINDS for name in FAMILIES}
_KINDS_FOR["cauchy"] = _BOUNDED  # no moment of order >= 1: only bounded integrands
_EXP_FORM = {  # an exponential integrand whose expectation is finite for every valid parameter
    "normal": "grow", "uniform": "grow", "kumaraswamy": "grow",
    "lognormal": "decay", "exponential": "decay", "weibull": "decay",
    "laplace": "bump", "logistic": "bump", "gumbel": "bump", "cauchy": "bump",
}
_RESERVED = {"z", "pi", "E", "eps", "epsilon", "exp", "log", "sin", "cos", "tan", "sqrt", "abs",
             "softplus", "sigmoid", "logsigmoid", "relu", "gamma", "erf", "sign", "tanh"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_COEFFICIENTS = ("0.5", "1", "2", "1.5", "3")


class ProblemCase(NamedTuple):
    """A drawn problem: ``family`` name, valid ``params`` {name: float}, integrand ``f`` text."""

    family: str
    params: dict
    f: str


def seeds(*, min_value: int = 0, max_value: int = 2**32 - 1) -> SearchStrategy[int]:
    """Seeds for :func:`numeric.estimate` and :mod:`numeric.testing`: integers in
    ``[min_value, max_value]`` (non-negative). Hypothesis shrinks a failing seed towards
    ``min_value``, and the failure message of an assertion names the seed that replays it."""
    for name, value in (("min_value", min_value), ("max_value", max_value)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"seeds({name}={value!r}): seeds are non-negative integers; "
                                  f"write e.g. seeds(min_value=0, max_value=2**32 - 1)")
    if min_value > max_value:
        raise InvalidArgument(f"seeds(min_value={min_value}, max_value={max_value}): min_value "
                              f"must not exceed max_value")
    return st.integers(min_value, max_value)


def family_params(family: str, /, **params) -> SearchStrategy[dict]:
    """Valid parameters of ``family`` as ``{name: float}`` dicts.

    Each parameter defaults to the range in the module table; pass ``name=value`` to fix one or
    ``name=strategy`` to draw it your way. Fixed values are checked at once; drawn values are
    checked as they are drawn (InvalidArgument naming the domain). For Uniform(a, b), an
    unspecified end is drawn relative to the other so that a < b.

    >>> family_params("normal", sigma=1.0).example()["sigma"]  # doctest: +SKIP
    1.0
    """
    spec = _family(family, "family_params")
    names = [p.name for p in spec]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise InvalidArgument(f"family_params({family!r}): {family} has no parameter "
                              f"{', '.join(unknown)}; its parameters are {', '.join(names)}")
    parts = {p.name: _parameter(family, p, params.get(p.name)) for p in spec}
    pairs = []
    for lo, hi in _catalog.ORDERED.get(family, ()):
        _check_order(family, lo, hi, params)
        if params.get(hi) is None:
            pairs.append((lo, hi, _relative(parts.pop(lo), +1)))
        elif params.get(lo) is None:
            pairs.append((hi, lo, _relative(parts.pop(hi), -1)))
            parts.pop(lo)
        else:
            continue
        parts.pop(hi, None)
    strategy = st.tuples(st.fixed_dictionaries(parts), *(pair for _, _, pair in pairs)).map(
        lambda drawn: _assemble(names, drawn[0], pairs, drawn[1:]))
    ordered = _catalog.ORDERED.get(family, ())
    if ordered:
        strategy = strategy.filter(lambda d: all(d[lo] < d[hi] for lo, hi in ordered))
    return strategy


def normal_params(*, mu=None, sigma=None) -> SearchStrategy[dict]:
    """``{"mu", "sigma"}`` of Normal(mu, sigma): mu real, sigma > 0."""
    return family_params("normal", **_given(mu=mu, sigma=sigma))


def lognormal_params(*, mu=None, sigma=None) -> SearchStrategy[dict]:
    """``{"mu", "sigma"}`` of LogNormal(mu, sigma): mu real, sigma > 0."""
    return family_params("lognormal", **_given(mu=mu, sigma=sigma))


def laplace_params(*, mu=None, b=None) -> SearchStrategy[dict]:
    """``{"mu", "b"}`` of Laplace(mu, b): mu real, b > 0."""
    return family_params("laplace", **_given(mu=mu, b=b))


def logistic_params(*, mu=None, s=None) -> SearchStrategy[dict]:
    """``{"mu", "s"}`` of Logistic(mu, s): mu real, s > 0."""
    return family_params("logistic", **_given(mu=mu, s=s))


def gumbel_params(*, mu=None, beta=None) -> SearchStrategy[dict]:
    """``{"mu", "beta"}`` of Gumbel(mu, beta): mu real, beta > 0."""
    return family_params("gumbel", **_given(mu=mu, beta=beta))


def cauchy_params(*, mu=None, gamma=None) -> SearchStrategy[dict]:
    """``{"mu", "gamma"}`` of Cauchy(mu, gamma): mu real, gamma > 0."""
    return family_params("cauchy", **_given(mu=mu, gamma=gamma))


def exponential_params(*, lam=None) -> SearchStrategy[dict]:
    """``{"lam"}`` of Exponential(lam), lam the rate: lam > 0."""
    return family_params("exponential", **_given(lam=lam))


def weibull_params(*, lam=None, k=None) -> SearchStrategy[dict]:
    """``{"lam", "k"}`` of Weibull(lam, k), lam the scale, k the shape: lam > 0, k > 0."""
    return family_params("weibull", **_given(lam=lam, k=k))


def uniform_params(*, a=None, b=None) -> SearchStrategy[dict]:
    """``{"a", "b"}`` of Uniform(a, b): a < b."""
    return family_params("uniform", **_given(a=a, b=b))


def kumaraswamy_params(*, a=None, b=None) -> SearchStrategy[dict]:
    """``{"a", "b"}`` of Kumaraswamy(a, b) on (0, 1): a > 0, b > 0."""
    return family_params("kumaraswamy", **_given(a=a, b=b))


def integrands(*, family=None, kinds=None, symbols=(), max_degree: int = 4) -> SearchStrategy[str]:
    """Integrands f(z) as text for ``mcgrad``/``derive.parse``, e.g. ``"2*z**3 - z + 1"``,
    ``"cos(2*z + 1)"``, ``"softplus(0.5*z - 1)"``, ``"-(1.5 - 2*z)**2/(2*0.5**2) - log(0.5) -
    log(2*pi)/2"``.

    Args:
        family: a family name (or a strategy of names); only integrands whose expectation (and
            whose estimators' variance) is finite under it are drawn: polynomials and unbounded
            functions are left out for Cauchy, exp(c*z) becomes a decaying form where it would
            diverge. None: any integrand finite under Normal.
        kinds: a subset of ``INTEGRAND_KINDS`` (default: all valid for the family).
        symbols: names of data symbols the integrand may use (e.g. ``("x",)``): the observation
            of the log-likelihood and a shift of polynomials. They need values (--param x=...).
        max_degree: the highest polynomial degree, 1 to 8.
    """
    if isinstance(family, SearchStrategy):
        options = dict(kinds=kinds, symbols=symbols, max_degree=max_degree)
        integrands(family="normal", **{**options, "kinds": None})  # check the other options now
        return family.flatmap(lambda name: integrands(family=name, **options))
    name = "normal" if family is None else family
    _family(name, "integrands")
    kinds = _kinds(name, kinds, "integrands")
    symbols = _symbol_names(symbols)
    if isinstance(max_degree, bool) or not isinstance(max_degree, int) or \
            not 1 <= max_degree <= 8:
        raise InvalidArgument(f"integrands(max_degree={max_degree!r}): give an integer from 1 "
                              f"to 8")
    makers = {"polynomial": lambda: _polynomial(max_degree, symbols),
              "exp": lambda: _exponential(_EXP_FORM[name]), "trig": _trig,
              "softplus": lambda: _affine_of("softplus"), "sigmoid": lambda: _affine_of("sigmoid"),
              "loglik": lambda: _loglik(symbols)}
    return st.one_of(*(makers[k]() for k in kinds))


def problems(*, families=None, kinds=None, symbols=(), max_degree: int = 4
             ) -> SearchStrategy[ProblemCase]:
    """Whole problems: a family, valid parameters and an integrand, as :class:`ProblemCase`.

    ``families``: names to draw from (default: all ten); ``kinds``, ``symbols`` and
    ``max_degree`` as in :func:`integrands` (families for which none of ``kinds`` is valid are
    refused). Values for ``symbols`` are not drawn: add them yourself.

    High-degree polynomials are finite-variance but heavy-tailed for score-function estimators
    (z**3 under Exponential: the estimator's kurtosis is about 10**4), which the heavy-tail check
    of :mod:`numeric.testing` may flag below a few million samples; ``max_degree=2`` avoids them.
    """
    names = FAMILIES if families is None else families
    if isinstance(names, str):
        names = (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise InvalidArgument(f"problems(families={families!r}): give a sequence of family "
                              f"names such as ('normal', 'gumbel')") from None
    if not names:
        raise InvalidArgument("problems(families=()): name at least one family")
    for name in names:
        _family(name, "problems")
        _kinds(name, kinds, "problems", restrict=True)
    integrands(symbols=symbols, max_degree=max_degree)  # check these options now
    return st.sampled_from(names).flatmap(lambda name: st.builds(
        ProblemCase, st.just(name), family_params(name),
        integrands(family=name, kinds=_kinds(name, kinds, "problems", restrict=True),
                   symbols=symbols, max_degree=max_degree)))


# -- parameters ------------------------------------------------------------------------------


def _given(**options):
    return {k: v for k, v in options.items() if v is not None}


def _family(name, where):
    if not isinstance(name, str) or name not in _catalog.FAMILIES:
        raise InvalidArgument(f"{where}: unknown family {name!r}; choose one of "
                              f"{', '.join(FAMILIES)}")
    return _catalog.FAMILIES[name]


def _parameter(family, p, given):
    if given is None:
        low, high = p.default
        return st.floats(low, high, allow_nan=False, allow_infinity=False).map(_round)
    if isinstance(given, SearchStrategy):
        return given.map(lambda value: _drawn(family, p, value))
    return st.just(_value(family, p, given))


def _round(value: float) -> float:
    """Four decimals: readable in failure messages, exact for the symbolic layer, in range."""
    return round(value, 4) + 0.0  # + 0.0 turns -0.0 into 0.0


def _value(family, p, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{family}: {p.name}={value!r} is not a number; pass a float or a "
                              f"strategy such as st.floats({p.default[0]}, {p.default[1]})")
    if not p.contains(float(value)):
        raise InvalidArgument(f"{family}: {p.name}={value!r} is outside the domain {p.domain}; "
                              f"choose a value with {p.domain}")
    return float(value)


def _drawn(family, p, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not p.contains(float(value)):
        raise InvalidArgument(f"{family}: the strategy for {p.name} drew {value!r}, outside the "
                              f"domain {p.domain}; restrict it, e.g. st.floats({p.default[0]}, "
                              f"{p.default[1]})")
    return float(value)


def _check_order(family, lo, hi, params):
    a, b = params.get(lo), params.get(hi)
    if a is None or b is None or isinstance(a, SearchStrategy) or isinstance(b, SearchStrategy):
        return
    if not a < b:
        raise InvalidArgument(f"{family} needs {lo} < {hi}, but {lo}={a!r}, {hi}={b!r}; swap "
                              f"them or leave one out to have it drawn")


def _relative(anchor, sign):
    """(anchor, anchor + sign * width): the other end of Uniform(a, b) drawn from the given one."""
    low, high = _catalog.UNIFORM_WIDTH
    width = st.floats(low, high, allow_nan=False, allow_infinity=False).map(_round)
    return st.tuples(anchor, width).map(lambda t: (t[0], t[0] + sign * t[1]))


def _assemble(names, drawn, pairs, values):
    """The parameters in the family's order from the independent draws and the drawn pairs."""
    out = dict(drawn)
    for (anchor, other, _), (a, b) in zip(pairs, values):
        out[anchor], out[other] = a, b
    return {name: out[name] for name in names}


# -- integrands ------------------------------------------------------------------------------


def _kinds(family, kinds, where, restrict=False):
    valid = _KINDS_FOR[family]
    if kinds is None:
        return valid
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in INTEGRAND_KINDS]
    if unknown or not kinds:
        raise InvalidArgument(f"{where}: unknown integrand kinds {unknown or kinds!r}; choose "
                              f"from {', '.join(INTEGRAND_KINDS)}")
    usable = tuple(k for k in kinds if k in valid)
    if (restrict and not usable) or (not restrict and len(usable) < len(kinds)):
        bad = [k for k in kinds if k not in valid]
        raise InvalidArgument(f"{where}: {', '.join(bad)} integrands have no finite expectation "
                              f"under {family} for every parameter; kinds valid for {family}: "
                              f"{', '.join(valid)}" + ("; leave the family out" if restrict
                                                       else ""))
    return usable


def _symbol_names(symbols):
    if isinstance(symbols, str):
        symbols = (symbols,)
    symbols = tuple(symbols)
    for s in symbols:
        if not isinstance(s, str) or not _NAME.match(s) or keyword.iskeyword(s) or \
                s in _RESERVED or s in {p.name for ps in _catalog.FAMILIES.values() for p in ps}:
            raise InvalidArgument(f"integrands(symbols={symbols!r}): {s!r} cannot name a data "
                                  f"symbol; use an identifier that is not z, a function, a "
                                  f"constant or a family parameter, e.g. 'x'")
    return symbols


def _coefficient():
    return st.sampled_from(_COEFFICIENTS)


def _times_z(c, power=""):
    """``c*z`` (``z`` when c is 1), with ``power`` such as ``**2`` on z."""
    return f"z{power}" if c == "1" else f"{c}*z{power}"


def _polynomial(max_degree, symbols):
    def text(degree, coefficients, shift):
        z = f"(z - {shift})" if shift else "z"
        terms = []
        for power, c in zip(range(degree, -1, -1), coefficients):
            if c == 0:
                continue
            base = "" if power == 0 else (z if power == 1 else f"{z}**{power}")
            magnitude = abs(c)
            body = str(magnitude) if not base else (base if magnitude == 1 else
                                                    f"{magnitude}*{base}")
            sign = "-" if c < 0 else "+"
            terms.append((sign, body))
        first_sign, first = terms[0]
        out = ("-" if first_sign == "-" else "") + first
        return out + "".join(f" {s} {b}" for s, b in terms[1:])

    return st.integers(1, max_degree).flatmap(lambda d: st.builds(
        text, st.just(d),
        st.tuples(st.integers(-3, 3).filter(bool), *[st.integers(-3, 3)] * d),
        st.sampled_from(("",) + symbols)))


def _exponential(form):
    if form == "grow":
        return st.builds(lambda sign, c: f"exp({sign}{_times_z(c)})", st.sampled_from(("", "-")),
                         st.sampled_from(("0.5", "1")))
    if form == "decay":
        return st.builds(lambda c: f"exp(-{_times_z(c)})", _coefficient())
    return st.builds(lambda c: f"exp(-{_times_z(c, '**2')})", _coefficient())


def _trig():
    return st.builds(lambda fn, c, d: f"{fn}({_times_z(c)}{d})", st.sampled_from(("sin", "cos")),
                     _coefficient(), st.sampled_from(("", " + 1", " - 0.5")))


def _affine_of(fn):
    return st.builds(lambda sign, c, d: f"{fn}({sign}{_times_z(c)}{d})", st.sampled_from(("", "-")),
                     _coefficient(), st.sampled_from(("", " + 1", " - 1")))


def _loglik(symbols):
    observations = st.sampled_from(symbols) if symbols else st.sampled_from(("0", "1.5", "-1"))
    def text(x, c, s):
        if s == "1":
            return f"-({x} - {_times_z(c)})**2/2 - log(2*pi)/2"
        return f"-({x} - {_times_z(c)})**2/(2*{s}**2) - log({s}) - log(2*pi)/2"

    return st.builds(text, observations, _coefficient(), st.sampled_from(("0.5", "1", "2")))
