"""Tests of numeric.strategies and numeric._catalog (no statistical assertions here)."""

import inspect
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import derive
import numeric._catalog as catalog
from mcgrad._check import setup
from numeric import strategies as mst


def test_the_catalog_matches_derive_parameter_names_and_order():
    assert list(catalog.FAMILIES) == list(derive.CATALOG)
    for name, params in catalog.FAMILIES.items():
        assert tuple(p.name for p in params) == derive.family(name).param_names, name


def test_the_catalog_domains_match_derive_constraints():
    """A value just inside each domain passes derive's check_values; just outside fails."""
    for name, params in catalog.FAMILIES.items():
        fam = derive.family(name)
        inside = {p: 1.0 for p in fam.params}
        if name == "uniform":
            inside = {fam.param("a"): 0.0, fam.param("b"): 1.0}
        fam.check_values(inside)
        for p in params:
            if p.low is not None:
                with pytest.raises(derive.DeriveError):
                    fam.check_values({**inside, fam.param(p.name): p.low})
                assert not p.contains(p.low) and p.contains(p.low + 1e-3)
    with pytest.raises(derive.DeriveError):
        derive.family("uniform").check_values(
            {derive.family("uniform").param("a"): 1, derive.family("uniform").param("b"): 1})


def test_all_lists_exactly_the_public_names():
    public = {n for n, v in vars(mst).items() if not n.startswith("_")
              and (inspect.isfunction(v) or inspect.isclass(v))
              and getattr(v, "__module__", "") == mst.__name__}
    constants = {n for n in vars(mst) if n.isupper() and not n.startswith("_")}
    assert set(mst.__all__) == public | constants
    for name in mst.__all__:
        if callable(getattr(mst, name)) and name != "ProblemCase":
            assert getattr(mst, name).__doc__, name


@pytest.mark.parametrize("family", list(catalog.FAMILIES))
def test_every_family_has_a_named_strategy_with_its_parameters_as_keywords(family):
    fn = getattr(mst, f"{family}_params")
    names = [p.name for p in catalog.FAMILIES[family]]
    signature = inspect.signature(fn)
    assert list(signature.parameters) == names
    assert all(p.kind is p.KEYWORD_ONLY for p in signature.parameters.values())


@given(mst.problems())
def test_drawn_problems_are_valid_for_derive(case):
    """Every drawn problem parses, is a function of z and satisfies the family's constraints."""
    s = setup(case.family, case.f, params={k: repr(v) for k, v in case.params.items()})
    assert s.problem.f.has(derive.Z)


@given(mst.integrands(symbols=("x",)))
def test_integrands_with_data_symbols_parse(f):
    fam = derive.family("normal")
    expr = derive.parse(f, fam)
    assert expr.free_symbols <= {derive.Z, derive.user_symbol("x")}


@given(mst.integrands(family="cauchy"))
def test_cauchy_integrands_are_bounded(f):
    assert not any(k in f for k in ("softplus", "**2/", "z**3")) and "(" in f


@given(mst.uniform_params(a=st.floats(-1, 1)), mst.uniform_params(b=2.0))
def test_uniform_draws_keep_a_below_b(first, second):
    assert first["a"] < first["b"] and second["a"] < second["b"] == 2.0


@given(mst.normal_params(mu=0.5), mst.weibull_params(k=st.just(2)))
def test_fixed_values_and_strategies_are_used_as_given(normal, weibull):
    assert normal["mu"] == 0.5 and 0.2 <= normal["sigma"] <= 3.0
    assert weibull["k"] == 2.0 and isinstance(weibull["k"], float)


@given(mst.family_params("lognormal"), mst.seeds(max_value=10))
def test_defaults_lie_in_the_documented_ranges(params, seed):
    assert -1 <= params["mu"] <= 1 and 0.1 <= params["sigma"] <= 1
    assert 0 <= seed <= 10 and all(math.isfinite(v) for v in params.values())


@pytest.mark.parametrize("make, message", [
    (lambda: mst.seeds(min_value=-1), "non-negative integers"),
    (lambda: mst.seeds(max_value=1.5), "non-negative integers"),
    (lambda: mst.seeds(min_value=5, max_value=2), "must not exceed"),
    (lambda: mst.family_params("gauss"), "unknown family 'gauss'"),
    (lambda: mst.family_params("normal", tau=1.0), "no parameter tau"),
    (lambda: mst.normal_params(sigma=0.0), "outside the domain sigma > 0"),
    (lambda: mst.normal_params(mu=float("inf")), "outside the domain mu real"),
    (lambda: mst.normal_params(mu="1"), "is not a number"),
    (lambda: mst.uniform_params(a=2.0, b=1.0), "needs a < b"),
    (lambda: mst.integrands(family="cauchy", kinds=("polynomial",)), "no finite expectation"),
    (lambda: mst.integrands(kinds=("bessel",)), "unknown integrand kinds"),
    (lambda: mst.integrands(symbols=("mu",)), "cannot name a data symbol"),
    (lambda: mst.integrands(symbols=("exp",)), "cannot name a data symbol"),
    (lambda: mst.integrands(max_degree=0), "from 1 to 8"),
    (lambda: mst.problems(families=()), "at least one family"),
    (lambda: mst.problems(families=["normal", "cauchy"], kinds=["polynomial"]),
     "leave the family out"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_raise_invalid_argument_when_called(make, message):
    with pytest.raises(InvalidArgument, match=message):
        make()


def test_a_strategy_drawing_outside_the_domain_is_reported_when_drawn():
    @given(mst.normal_params(sigma=st.just(-1.0)))
    def draws(params):
        pass

    with pytest.raises(InvalidArgument, match="the strategy for sigma drew -1.0"):
        draws()
