"""Benchmark numeric.estimate against the bare cost of drawing the same normals.

Run on demand (pytest does not collect it):

    python benchmarks/bench_estimate.py            # 1e7-sample timings, then 1e9-sample memory
    python benchmarks/bench_estimate.py --quick    # memory check with 1e8 samples instead

Estimand: the gradient in (mu, sigma) of E_{z ~ N(mu, sigma^2)}[f(z)], f(z) = log N(x | z, 1) - 1e6.
The -1e6 offset makes the score-function estimator's values about 1e6 times its mean, a test of
the two-pass variance.

  pathwise (z = mu + sigma*eps):  columns (x - z), (x - z)*eps           target <= 1.3x baseline
  score function:                 f*(z-mu)/sigma^2, f*((z-mu)^2/sigma^3 - 1/sigma)  target <= 1.4x

Baseline: draw the same number of standard normals in chunks of the same size from the same
kind of generator, in the same process. Times are the best of 5 runs.
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before NumPy is imported; numeric itself never calls BLAS

import argparse  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numeric  # noqa: E402

X, MU, SIGMA, OFFSET = 0.7, 0.3, 1.2, -1e6
LOG_NORM = -0.5 * math.log(2.0 * math.pi)


class _Buffers:
    """Noise and output buffers reused across chunks (the first chunk is the largest)."""

    def __init__(self):
        self.eps = self.out = None

    def get(self, m):
        if self.eps is None or self.eps.shape[0] < m:
            self.eps, self.out = np.empty(m), np.empty((2, m))
        return self.eps[:m], self.out[:, :m]


class Pathwise:
    """Columns d/dmu f = (x - z) and d/dsigma f = (x - z) * eps, with z = mu + sigma * eps.

    Returns ``out.T`` for a ``(2, m)`` buffer: a column-major ``(m, 2)`` array, which estimate
    reduces without copying. Reusing the buffers saves a page-faulting allocation per chunk;
    estimate consumes each chunk before asking for the next, so this is safe.
    """

    def __init__(self):
        self.buffers = _Buffers()

    def __call__(self, rng, m, *, x, mu, sigma):
        eps, out = self.buffers.get(m)
        rng.standard_normal(out=eps)
        residual, scaled = out
        np.multiply(eps, -sigma, out=residual)
        residual += x - mu                           # x - z
        np.multiply(residual, eps, out=scaled)       # (x - z) eps
        return out.T


class ScoreFunction:
    """Columns f * eps / sigma and f * (eps^2 - 1) / sigma, with z - mu = sigma * eps."""

    def __init__(self):
        self.buffers = _Buffers()

    def __call__(self, rng, m, *, x, mu, sigma):
        eps, out = self.buffers.get(m)
        rng.standard_normal(out=eps)
        g, h = out
        np.multiply(eps, -sigma, out=g)
        g += x - mu                                  # x - z
        np.multiply(g, g, out=g)                     # (x - z)^2
        g *= -0.5 / sigma
        g += (LOG_NORM + OFFSET) / sigma             # f / sigma
        np.multiply(g, eps, out=h)                   # f eps / sigma
        h *= eps                                     # f eps^2 / sigma
        h -= g                                       # f (eps^2 - 1) / sigma
        g *= eps                                     # f eps / sigma
        return out.T


def pathwise_naive(rng, m, *, x, mu, sigma):
    """The same pathwise estimator written plainly: temporaries and a row-major (m, 2) result."""
    eps = rng.standard_normal(m)
    residual = x - (mu + sigma * eps)
    return np.stack([residual, residual * eps], axis=1)


def score_function_naive(rng, m, *, x, mu, sigma):
    """The same score-function estimator written plainly."""
    eps = rng.standard_normal(m)
    z = mu + sigma * eps
    f = LOG_NORM - 0.5 * (x - z) ** 2 + OFFSET
    return np.stack([f * (z - mu) / sigma**2, f * ((z - mu) ** 2 / sigma**3 - 1 / sigma)], axis=1)


def exact_gradients():
    """d/dmu and d/dsigma of E[f] = log-normaliser + OFFSET - ((x - mu)^2 + sigma^2) / 2."""
    return np.array([X - MU, -SIGMA])


def baseline(n, chunk_size, seed=0):
    """Draw n standard normals in chunks into one buffer, from the same kind of generator."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    buffer = np.empty(chunk_size)
    for start in range(0, n, chunk_size):
        rng.standard_normal(out=buffer[: min(chunk_size, n - start)])


def baseline_allocating(n, chunk_size, seed=0):
    """The same, allocating a fresh array per chunk (as rng.standard_normal(m) does)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    for start in range(0, n, chunk_size):
        rng.standard_normal(min(chunk_size, n - start))


def timed(thunk):
    """(wall seconds, CPU seconds of this process) of one call.

    The CPU time is the fairer figure when other processes share the cores: it excludes the time
    this process waits for a core (everything here is single-threaded).
    """
    wall, cpu = time.perf_counter(), time.process_time()
    thunk()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_estimators(n, chunk_size, runs=5):
    """Best-of-``runs`` (wall, CPU) seconds for the baselines and the estimators, interleaved."""
    params = dict(x=X, mu=MU, sigma=SIGMA)

    def run(fn, **options):
        return lambda: numeric.estimate(fn(), n, seed=0, chunk_size=chunk_size, **options, **params)

    cases = {
        "baseline": lambda: baseline(n, chunk_size),
        "baseline alloc": lambda: baseline_allocating(n, chunk_size),
        "pathwise": run(Pathwise),
        "score": run(ScoreFunction),
        "pathwise m4": run(Pathwise, moments=4),
        "score m4": run(ScoreFunction, moments=4),
        "pathwise naive": run(lambda: pathwise_naive),
        "score naive": run(lambda: score_function_naive),
    }
    best = {name: (math.inf, math.inf) for name in cases}
    for _ in range(runs):
        for name, thunk in cases.items():
            wall, cpu = timed(thunk)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def check_values(n):
    """Both estimators agree with the exact gradient at false-failure rate 1e-6."""
    params = dict(x=X, mu=MU, sigma=SIGMA)
    for name, fn in (("pathwise", Pathwise()), ("score", ScoreFunction()),
                     ("pathwise naive", pathwise_naive), ("score naive", score_function_naive)):
        est = numeric.estimate(fn, n, seed=1, **params)
        ok = numeric.agrees(est.mean, est.stderr, exact_gradients())
        print(f"  {name:15s} mean {est.mean} stderr {est.stderr} agrees {list(ok)}")


MEMORY_CHILD = """
import os, resource, sys, time
os.environ["OPENBLAS_NUM_THREADS"] = "1"
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
import bench_estimate as b, numeric
start = time.perf_counter()
est = numeric.estimate(b.Pathwise(), {n}, seed=2, chunk_size={chunk}, x=b.X, mu=b.MU, sigma=b.SIGMA)
seconds = time.perf_counter() - start
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, seconds, *est.mean, *est.stderr)
"""


def measure_memory(n, chunk_size):
    """Peak RSS (MB) and seconds of a fresh process estimating with n samples."""
    here = Path(__file__).resolve().parent
    code = MEMORY_CHILD.format(root=str(here.parent), here=str(here), n=n, chunk=chunk_size)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rss, seconds, *rest = map(float, out.stdout.split())
    return rss, seconds, rest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="memory check with 1e8 samples")
    parser.add_argument("--n", type=int, default=10_000_000, help="samples for the timings")
    parser.add_argument("--chunk-size", type=int, default=numeric.DEFAULT_CHUNK_SIZE)
    parser.add_argument("--runs", type=int, default=5, help="best of this many runs")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    print(f"numpy {np.__version__}, chunk_size {args.chunk_size}, n {args.n:.0e}")
    print("values at n=1e6 against the exact gradient (x - mu, -sigma), rate 1e-6:")
    check_values(1_000_000)
    best = time_estimators(args.n, args.chunk_size, args.runs)
    print(f"timings, best of {args.runs}; ratios to the baseline (in-place normal draws):")
    wall0, cpu0 = best["baseline"]
    header = ("", "wall ms", "ratio", "cpu ms", "ratio", "cpu ns/sample")
    print("  {:14s} {:>8s} {:>6s} {:>8s} {:>6s} {:>14s}".format(*header))
    for name, (wall, cpu) in best.items():
        print(f"  {name:14s} {wall * 1e3:8.1f} {wall / wall0:6.2f} {cpu * 1e3:8.1f}"
              f" {cpu / cpu0:6.2f} {cpu / args.n * 1e9:14.2f}")
    for name, target in (("pathwise", 1.3), ("score", 1.4)):
        wall, cpu = best[name]
        print(f"{name} ratio: wall {wall / wall0:.2f}, cpu {cpu / cpu0:.2f} (target <= {target})")

    if not args.skip_memory:
        n = 10**8 if args.quick else 10**9
        rss, seconds, rest = measure_memory(n, args.chunk_size)
        print(f"memory: n={n:.0e} peak RSS {rss:.1f} MB (target < 256 MB), {seconds:.1f} s, "
              f"mean {rest[:2]}, stderr {rest[2:]}")


if __name__ == "__main__":
    main()
