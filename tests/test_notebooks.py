"""Execute every notebook in notebooks/ top to bottom (issue 7).

Runs with MCGRAD_NB_FAST=1 so the notebooks shrink their sample sizes and grids, with
matplotlib's Agg backend, in a temporary working directory copy so nothing is written next to
the committed notebooks. Skipped when the optional ``notebooks`` extra is not installed:
``pip install -e ".[notebooks]"``.
"""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
_MISSING = [m for m in ("nbclient", "nbformat", "ipykernel", "matplotlib")
            if importlib.util.find_spec(m) is None]

pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"notebook extra not installed (missing {', '.join(_MISSING)}); "
           'pip install -e ".[notebooks]"')


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # Run from a temporary copy of notebooks/ so any stray output stays in tmp_path.
    for helper in NOTEBOOK_DIR.glob("*.py"):
        shutil.copy(helper, tmp_path / helper.name)
    monkeypatch.setenv("MCGRAD_NB_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mplconfig"))
    repo = str(NOTEBOOK_DIR.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (repo, os.environ.get("PYTHONPATH")) if p))

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
    assert images >= 1, f"{path.name} produced no plot"
