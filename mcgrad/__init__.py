"""mcgrad: the command line and the Python entry points that join derive and numeric."""

__version__ = "0.1.0"

from ._check import check, setup, verdict  # noqa: E402

__all__ = ["__version__", "check", "setup", "verdict"]
