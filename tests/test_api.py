"""The public surface: each package's __all__ lists exactly its public names."""

import types

import pytest

import derive
import numeric


@pytest.mark.parametrize("package", [derive, numeric], ids=lambda m: m.__name__)
def test_all_lists_exactly_the_public_names(package):
    public = {name for name, value in vars(package).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert len(package.__all__) == len(set(package.__all__)), "a name is listed twice"
    assert set(package.__all__) == public


def test_derive_never_imports_numeric_and_numeric_never_imports_sympy():
    import subprocess
    import sys
    derive_alone = "import sys, derive; assert 'numeric' not in sys.modules"
    numeric_alone = ("import sys, numeric; bad = [m for m in sys.modules if m.split('.')[0] in "
                     "('sympy', 'derive')]; assert not bad, bad")
    for snippet in (derive_alone, numeric_alone):
        result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
