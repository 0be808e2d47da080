r"""Streaming central moments: per-chunk two-pass moments merged with Chan's and Pébay's formulas.

A :class:`Moments` summarises ``count`` rows of a ``(rows, k)`` sample column by column:

.. math::

    \bar x = \frac1n \sum_i x_i, \qquad M_p = \sum_i (x_i - \bar x)^p \quad (p = 2, 3, 4).

Each chunk is summarised by two passes (mean, then powers of the deviations), which is exact up
to rounding even when :math:`|\bar x| \gg \sigma`, and chunks are merged pairwise, which is
stable when one side is much larger than the other (the running total against one new chunk).

Reductions use ``np.add.reduce`` along contiguous rows of a ``(k, m)`` array: pairwise summation,
SIMD, and no BLAS (a multithreaded BLAS call per chunk made streaming loops 20x slower).

References:
    Chan, Golub and LeVeque (1979), "Updating formulae and a pairwise algorithm for computing
    sample variances". Pébay (2008), "Formulas for robust, one-pass parallel computation of
    covariances and arbitrary-order statistical moments", Sandia report SAND2008-6212.
"""

from typing import NamedTuple

import numpy as np


class Moments(NamedTuple):
    """Count, mean and summed central powers of ``count`` rows, one entry per column.

    ``m3``, ``m4``, ``low`` and ``high`` (column minimum and maximum) are ``None`` unless the
    fourth-order moments were requested.
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray
    m3: np.ndarray | None = None
    m4: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def chunk_moments(rows: np.ndarray, scratch: np.ndarray, square: np.ndarray | None) -> Moments:
    """Two-pass moments of ``rows`` (shape ``(k, m)``, contiguous along ``m``, float64).

    ``scratch`` (and ``square``, needed only for fourth-order moments) are ``(k, m)`` float64
    buffers that are overwritten, so that a streaming loop allocates nothing of size ``m``.
    """
    m = rows.shape[1]
    mean = np.add.reduce(rows, axis=1) / m
    np.subtract(rows, mean[:, None], out=scratch)
    if square is None:
        np.multiply(scratch, scratch, out=scratch)
        return Moments(m, mean, np.add.reduce(scratch, axis=1))
    return _chunk_moments4(rows, mean, scratch, square)


def _chunk_moments4(rows, mean, deviation, square) -> Moments:
    """Second to fourth central sums and the column extremes, given ``deviation = rows - mean``."""
    np.multiply(deviation, deviation, out=square)
    m2 = np.add.reduce(square, axis=1)
    np.multiply(deviation, square, out=deviation)
    m3 = np.add.reduce(deviation, axis=1)
    np.multiply(square, square, out=square)
    m4 = np.add.reduce(square, axis=1)
    low, high = np.minimum.reduce(rows, axis=1), np.maximum.reduce(rows, axis=1)
    return Moments(rows.shape[1], mean, m2, m3, m4, low, high)


def merge(a: Moments, b: Moments) -> Moments:
    r"""Moments of the union of two disjoint samples (Chan et al.; Pébay for orders 3 and 4).

    With :math:`n = n_a + n_b` and :math:`\delta = \bar x_b - \bar x_a`:

    .. math::

        \bar x = \bar x_a + \delta \frac{n_b}{n}, \qquad
        M_2 = M_{2,a} + M_{2,b} + \delta^2 \frac{n_a n_b}{n}.
    """
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / n)
    if a.m3 is None:
        return Moments(n, mean, m2)
    m3, m4 = _merge_m3_m4(a, b, delta)
    return Moments(n, mean, m2, m3, m4, np.minimum(a.low, b.low), np.maximum(a.high, b.high))


def _merge_m3_m4(a: Moments, b: Moments, delta: np.ndarray):
    r"""Pébay's (2008) pairwise update of the third and fourth central sums.

    .. math::

        M_3 = M_{3,a} + M_{3,b} + \delta^3 \frac{n_a n_b (n_a - n_b)}{n^2}
              + 3\delta \frac{n_a M_{2,b} - n_b M_{2,a}}{n},

        M_4 = M_{4,a} + M_{4,b} + \delta^4 \frac{n_a n_b (n_a^2 - n_a n_b + n_b^2)}{n^3}
              + 6\delta^2 \frac{n_a^2 M_{2,b} + n_b^2 M_{2,a}}{n^2}
              + 4\delta \frac{n_a M_{3,b} - n_b M_{3,a}}{n}.
    """
    na, nb = float(a.count), float(b.count)
    n = na + nb
    d2 = delta * delta
    m3 = (a.m3 + b.m3 + d2 * delta * (na * nb * (na - nb) / (n * n))
          + 3.0 * delta * (na * b.m2 - nb * a.m2) / n)
    m4 = (a.m4 + b.m4 + d2 * d2 * (na * nb * (na * na - na * nb + nb * nb) / (n * n * n))
          + 6.0 * d2 * (na * na * b.m2 + nb * nb * a.m2) / (n * n)
          + 4.0 * delta * (na * b.m3 - nb * a.m3) / n)
    return m3, m4
