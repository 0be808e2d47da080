"""The one exception of :mod:`numeric`."""


class NumericError(ValueError):
    """A numerical estimate cannot go on: the message says what is wrong and how to fix it.

    Raised for bad arguments (``n=1.5``, ``chunk_size=0``), for an estimator that returns an
    array of the wrong shape or type, and for non-finite per-sample values. It subclasses
    ``ValueError`` so that callers who only know the standard library can still catch it.
    """
