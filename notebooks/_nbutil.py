"""Small helpers shared by the notebooks (not part of the mcgrad package).

``FAST`` is true when the environment variable ``MCGRAD_NB_FAST=1`` is set (the test suite sets
it): the notebooks then use fewer Monte Carlo samples and coarser grids. ``show(fig)`` renders a
matplotlib figure (Agg backend) into the notebook's output as a PNG without writing any file.
"""

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from IPython.display import Image, display  # noqa: E402

FAST = os.environ.get("MCGRAD_NB_FAST", "") == "1"


def size(full, fast):
    """``fast`` under MCGRAD_NB_FAST=1, else ``full``."""
    return fast if FAST else full


def show(fig, dpi=110):
    """Display ``fig`` as an inline PNG and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="png"))
