"""Hypothesis profiles and shared fixtures.

Profiles (select with HYPOTHESIS_PROFILE=name): ``dev`` (default: random, modest), ``ci``
(derandomized, so CI runs are reproducible; set by .ci/run), ``thorough`` (the heavy
statistical sweeps; also enables tests marked slow).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=15, **_COMMON)
settings.register_profile("ci", max_examples=15, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=300, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: heavy statistical sweeps (HYPOTHESIS_PROFILE=thorough)")


def pytest_collection_modifyitems(config, items):
    if PROFILE == "thorough":
        return
    skip = pytest.mark.skip(reason="heavy sweep: run with HYPOTHESIS_PROFILE=thorough")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    """A fixed-seed generator for tests that are not driven by Hypothesis."""
    return np.random.default_rng(20201124)


BLOCK_SYMPY = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "sympy" or name.startswith("sympy.") or name == "mpmath":
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
"""


@pytest.fixture
def block_sympy():
    """Python source to put first in a subprocess: any import of sympy or mpmath then fails,
    so generated modules are shown to run without them."""
    return BLOCK_SYMPY

