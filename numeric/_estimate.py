r"""Streaming Monte Carlo estimates: mean, variance and standard error of per-sample estimators."""

import operator
from dataclasses import dataclass

import numpy as np

from ._errors import NumericError
from ._stats import Moments, chunk_moments, merge

DEFAULT_CHUNK_SIZE = 65536

_NOT_INTEGER = (
    "{name} must be an integer, got {value!r} of type {kind}; write e.g. {name}=1_000_000 or "
    "{name}=int(1e6) (a float such as 1e6 is refused because it silently rounds above 2**53)"
)
_TOO_SMALL = "{name} must be at least {least}, got {value}; {why}"
_BAD_SEED = (
    "seed must be a non-negative integer, got {value!r}; pass an explicit seed such as seed=0 so "
    "that the estimate replays exactly"
)
_BAD_MOMENTS = (
    "moments must be 2 (mean and variance) or 4 (also the standard error of the variance and the "
    "heavy-tail diagnostic), got {value!r}"
)
_NOT_CALLABLE = (
    "fn must be a per-sample estimator fn(rng, m, **params) returning an (m, k) array, got "
    "{value!r} of type {kind}"
)
_BAD_DTYPE = (
    "the estimator returned an array of dtype {dtype} on chunk {chunk}; it must return real "
    "numbers (float or integer). If it returns complex values, estimate the real and imaginary "
    "parts as separate columns"
)
_BAD_SHAPE = (
    "the estimator returned shape {shape} for m={m} samples on chunk {chunk}; it must return "
    "shape ({m},) or ({m}, k) with k >= 1, one row per sample. Draw the noise with the size m "
    "that estimate passes, e.g. eps = rng.standard_normal(m)"
)
_CHANGED_K = (
    "the estimator returned {got} columns on chunk {chunk} but {k} on earlier chunks; the number "
    "of gradient components k must not depend on the chunk"
)
_NON_FINITE = (
    "the estimator returned {value} at sample {sample} (row {row} of chunk {chunk}, column "
    "{column}); non-finite per-sample values are never averaged away. Usually the estimator was "
    "evaluated outside its domain (log or power of a non-positive number, division by a density "
    "that vanishes at the support boundary) or overflowed (exp of a large argument); check the "
    "parameters {params} and rewrite the estimator in a stable form (log-space, expm1, log1p)"
)
_OVERFLOW = (
    "the per-sample values of chunk {chunk}, column {column}, are finite but their {what} "
    "overflowed float64 (largest |value| {largest:.3g}); rescale the estimator, e.g. estimate "
    "f / c and multiply the result by c"
)
_TOTAL_OVERFLOW = (
    "the running {what} overflowed float64 after {n} samples; rescale the estimator, e.g. "
    "estimate f / c and multiply the result by c"
)


@dataclass(frozen=True, eq=False)
class Estimate:
    r"""Monte Carlo estimate of :math:`\mathbb E[g]` from samples :math:`g_1, \dots, g_n` in R^k.

    All arrays have length ``k`` and are read-only.

    Attributes:
        mean: :math:`\bar g = \frac1n \sum_i g_i`.
        variance: per-sample unbiased variance :math:`s^2 = \frac{1}{n-1} \sum_i (g_i - \bar g)^2`.
        stderr: standard error of the mean, :math:`\sqrt{s^2 / n}`.
        n: number of samples.
        seed: the seed of the generator, so that the estimate replays.
        variance_stderr: (only with ``moments=4``) standard error of :math:`s^2`,
            :math:`\sqrt{\bigl(m_4 - s^4 \tfrac{n-3}{n-1}\bigr) / n}` with
            :math:`m_4 = \frac1n \sum_i (g_i - \bar g)^4`; this is the plug-in form of
            :math:`\operatorname{Var}(s^2) = \frac1n\bigl(\mu_4 - \sigma^4 \frac{n-3}{n-1}\bigr)`.
            It is trustworthy only when the fourth moment is finite.
        largest_share: (only with ``moments=4``) the share of :math:`\sum_i (g_i - \bar g)^2`
            contributed by the single most extreme sample, :math:`\max_i (g_i - \bar g)^2 /
            \sum_i (g_i - \bar g)^2`. It tends to 0 when the variance is finite and stays of
            order 1 when it is infinite; see :func:`numeric.variance_is_stable`.
    """

    mean: np.ndarray
    variance: np.ndarray
    stderr: np.ndarray
    n: int
    seed: int
    variance_stderr: np.ndarray | None = None
    largest_share: np.ndarray | None = None

    def __post_init__(self):
        arrays = (self.mean, self.variance, self.stderr, self.variance_stderr, self.largest_share)
        for value in arrays:
            if value is not None:
                value.setflags(write=False)


def estimate(fn, n, /, *, seed, chunk_size=DEFAULT_CHUNK_SIZE, moments=2, **params) -> Estimate:
    r"""Estimate :math:`\mathbb E[g]` and its standard error from ``n`` samples of an estimator.

    .. math::

        \bar g = \frac1n \sum_{i=1}^n g_i, \qquad
        s^2 = \frac{1}{n-1} \sum_{i=1}^n (g_i - \bar g)^2, \qquad
        \mathrm{SE} = \sqrt{s^2 / n}.

    The samples are drawn in chunks of at most ``chunk_size`` rows, each summarised by two passes
    (mean, then squared deviations) and merged into a running total with Chan et al.'s pairwise
    formula (Pébay's for third and fourth moments), so memory is a few arrays of
    ``chunk_size * k`` floats whatever ``n`` is (about 40 MB peak RSS for ``n = 10**9``, ``k = 2``).
    Reductions never call BLAS.

    Args:
        fn: per-sample estimator ``fn(rng, m, **params)`` returning an array of shape ``(m, k)``,
            one gradient estimate per row, or ``(m,)`` meaning ``k = 1``; ``rng`` is a
            :class:`numpy.random.Generator`. Returning a column-major array (e.g.
            ``out = np.empty((k, m)); ...; return out.T``) avoids one copy per chunk.
        n: number of samples, a Python ``int`` of at least 2 (``10**9`` and more are fine).
            Positional-only, as is ``fn``, so that estimators may take parameters named ``n``.
        seed: non-negative integer. One generator
            ``Generator(PCG64(SeedSequence(seed)))`` is consumed sequentially by all chunks.
        chunk_size: rows per call of ``fn``; the last chunk is smaller.
        moments: 2 (default) or 4. With 4, also stream the third and fourth central moments
            and the column extremes, to fill ``variance_stderr`` and ``largest_share``. This
            about doubles the cost of the statistics (a 2-column pathwise estimate of normal
            noise takes 1.5x the time of drawing the noise instead of 1.25x), so it is off by
            default.
        **params: passed on to ``fn`` (not ``seed``, ``chunk_size`` or ``moments``).

    Returns:
        An :class:`Estimate`.

    Raises:
        NumericError: for bad arguments, an estimator returning the wrong shape or dtype, or a
            non-finite per-sample value (the message names the sample and chunk).

    Chunk-size invariance contract:
        NumPy generators fill arrays in order, so an estimator that draws all its noise in ONE
        array call per invocation (``rng.standard_normal(m)``, ``rng.standard_normal((m, 2))``,
        ``rng.gamma(a, size=m)``) sees the same stream for any ``chunk_size``, and the estimate
        differs between chunk sizes only by rounding (about 1e-15 relative). An estimator making
        two calls (``rng.normal(size=m)`` then ``rng.uniform(size=m)``) interleaves them per chunk
        and gives a different, equally valid, estimate for each ``chunk_size``.

    Example:
        >>> import numpy as np, numeric
        >>> def pathwise(rng, m, *, mu, sigma):   # d/dmu E[z^2], z = mu + sigma * eps
        ...     return 2.0 * (mu + sigma * rng.standard_normal(m))
        >>> est = numeric.estimate(pathwise, 100_000, seed=0, mu=1.5, sigma=2.0)
        >>> bool(abs(est.mean[0] - 3.0) < 5 * est.stderr[0])
        True
    """
    n, seed = _check_count(n, "n", 2, "a variance needs two samples"), _check_seed(seed)
    chunk_size = _check_count(chunk_size, "chunk_size", 1, "each chunk needs a sample")
    _check_fn(fn)
    _check_moments(moments)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    total = _stream(fn, rng, n, chunk_size, moments == 4, params)
    return _summarise(total, seed)


def _stream(fn, rng, n, chunk_size, fourth, params) -> Moments:
    """Merge the moments of consecutive chunks of ``fn``'s samples."""
    total, work = None, None
    for chunk, start in enumerate(range(0, n, chunk_size)):
        m = min(chunk_size, n - start)
        rows = _rows(_call(fn, rng, m, params, chunk, start), m, chunk, work)
        if work is None:
            work = _Workspace(rows.shape[0], chunk_size, fourth)
        rows = work.contiguous(rows)
        with np.errstate(all="ignore"):  # non-finite results are reported by the checks
            moments = chunk_moments(rows, *work.views(m))
            _check_finite(moments, rows, chunk, start, params)
            total = moments if total is None else merge(total, moments)
    return total


class _Workspace:
    """Reusable ``(k, chunk_size)`` float64 buffers, allocated once, on the first chunk."""

    def __init__(self, k, chunk_size, fourth):
        self.k, self.chunk_size = k, chunk_size
        self.scratch = np.empty((k, chunk_size))
        self.square = np.empty((k, chunk_size)) if fourth else None
        self.stage = None

    def views(self, m):
        """The scratch buffers cut to ``m`` columns."""
        return self.scratch[:, :m], None if self.square is None else self.square[:, :m]

    def contiguous(self, rows):
        """``rows`` as float64 with unit stride along samples, copied into a buffer if needed."""
        if rows.dtype == np.float64 and (rows.strides[1] == 8 or rows.shape[1] == 1):
            return rows
        if self.stage is None:
            self.stage = np.empty((self.k, self.chunk_size))
        staged = self.stage[:, : rows.shape[1]]
        np.copyto(staged, rows, casting="same_kind")
        return staged


def _call(fn, rng, m, params, chunk, start):
    """``fn(rng, m, **params)``, with a note naming the chunk on any exception."""
    try:
        return fn(rng, m, **params)
    except Exception as error:
        error.add_note(
            f"while evaluating the estimator {getattr(fn, '__name__', fn)!s} on chunk {chunk} "
            f"(samples {start} to {start + m - 1}) in numeric.estimate"
        )
        raise


def _rows(values, m, chunk, work) -> np.ndarray:
    """The estimator's ``(m, k)`` or ``(m,)`` output as a ``(k, m)`` view, validated."""
    x = np.asarray(values)
    if x.dtype.kind not in "iuf":
        raise NumericError(_BAD_DTYPE.format(dtype=x.dtype, chunk=chunk))
    if x.shape == (m,):
        x = x[:, None]
    elif x.ndim != 2 or x.shape[0] != m or x.shape[1] < 1:
        raise NumericError(_BAD_SHAPE.format(shape=x.shape, m=m, chunk=chunk))
    if work is not None and x.shape[1] != work.k:
        raise NumericError(_CHANGED_K.format(got=x.shape[1], k=work.k, chunk=chunk))
    return x.T


def _check_finite(moments: Moments, rows, chunk, start, params):
    """Raise if a chunk holds a non-finite value or its powers overflowed.

    A nan or inf anywhere in the chunk, or an overflowing sum, makes the highest central sum
    non-finite (an infinite mean turns every deviation into inf or nan), so the fast path costs one
    check of ``k`` numbers; the chunk is searched only when something is wrong.
    """
    highest = moments.m2 if moments.m4 is None else moments.m4
    if np.isfinite(highest).all():
        return
    bad = ~np.isfinite(rows)
    if bad.any():
        row = int(np.argmax(bad.any(axis=0)))
        column = int(np.argmax(bad[:, row]))
        raise NumericError(_NON_FINITE.format(
            value=rows[column, row], sample=start + row, row=row, chunk=chunk, column=column,
            params=params or "{}"))
    column = int(np.argmax(~np.isfinite(highest) | ~np.isfinite(moments.mean)))
    what = "sum" if not np.isfinite(moments.mean[column]) else "powers of deviations"
    raise NumericError(_OVERFLOW.format(
        chunk=chunk, column=column, what=what, largest=float(np.abs(rows[column]).max())))


def _summarise(total: Moments, seed) -> Estimate:
    """Mean, unbiased variance and standard errors from streamed moments."""
    n = total.count
    variance = total.m2 / (n - 1)
    _check_total(total, variance)
    stderr = np.sqrt(variance / n)
    if total.m4 is None:
        return Estimate(total.mean, variance, stderr, n, seed)
    return Estimate(total.mean, variance, stderr, n, seed,
                    variance_stderr=_variance_stderr(total, variance),
                    largest_share=_largest_share(total))


def _check_total(total: Moments, variance):
    """Raise if the merged moments overflowed although every chunk was finite."""
    for what, value in (("mean", total.mean), ("variance", variance), ("fourth moment", total.m4)):
        if value is not None and not np.isfinite(value).all():
            raise NumericError(_TOTAL_OVERFLOW.format(what=what, n=total.count))


def _variance_stderr(total: Moments, variance):
    r"""Plug-in :math:`\sqrt{(m_4 - s^4 (n-3)/(n-1)) / n}`, clipped at 0 against rounding."""
    n = total.count
    var_of_var = (total.m4 / n - variance * variance * ((n - 3) / (n - 1))) / n
    return np.sqrt(np.maximum(var_of_var, 0.0))


def _largest_share(total: Moments):
    r""":math:`\max_i (g_i - \bar g)^2 / \sum_i (g_i - \bar g)^2`, from the column extremes."""
    far = np.maximum(total.high - total.mean, total.mean - total.low)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total.m2 > 0, far * far / total.m2, 0.0)
    return np.clip(share, 0.0, 1.0)


def _check_count(value, name, least, why) -> int:
    """``value`` as a Python int of at least ``least``; refuses floats and bools."""
    if isinstance(value, bool):
        raise NumericError(_NOT_INTEGER.format(name=name, value=value, kind="bool"))
    try:
        count = operator.index(value)
    except TypeError:
        raise NumericError(
            _NOT_INTEGER.format(name=name, value=value, kind=type(value).__name__)) from None
    if count < least:
        raise NumericError(_TOO_SMALL.format(name=name, least=least, value=count, why=why))
    return count


def _check_seed(seed) -> int:
    """``seed`` as a non-negative Python int."""
    if isinstance(seed, bool):
        raise NumericError(_BAD_SEED.format(value=seed))
    try:
        seed = operator.index(seed)
    except TypeError:
        raise NumericError(_BAD_SEED.format(value=seed)) from None
    if seed < 0:
        raise NumericError(_BAD_SEED.format(value=seed))
    return seed


def _check_fn(fn):
    if not callable(fn):
        raise NumericError(_NOT_CALLABLE.format(value=fn, kind=type(fn).__name__))


def _check_moments(moments):
    if isinstance(moments, bool) or moments not in (2, 4):
        raise NumericError(_BAD_MOMENTS.format(value=moments))
