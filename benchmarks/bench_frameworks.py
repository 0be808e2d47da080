"""The same gradient estimate with the generated NumPy code, PyTorch autograd and JAX, on CPU.

Run on demand (pytest does not collect it); the frameworks are the optional ``bench`` extra:

    pip install torch==2.13.0 jax
    python benchmarks/bench_frameworks.py              # n = 1e6 and 1e7
    python benchmarks/bench_frameworks.py --n 1000000  # one size

A framework that is not installed is skipped. Estimand: the lecture's Gaussian log-likelihood,
grad_(mu, sigma) E_{z ~ N(mu, sigma^2)}[f(z)] with f(z) = -(x - z)**2/2 - 1e6, at mu = 0.3,
sigma = 1.2, x = 0.7. Each contender computes, from n per-sample gradients, the mean and the
per-sample variance of both columns, in float64:

  numpy (generated)  numeric.estimate(pathwise / score_function) of the `mcgrad codegen` module
  torch vmap         torch.func.vmap(grad(...)) per sample (z = loc + scale*eps written out:
                     Normal.rsample cannot run under vmap) and Normal.log_prob, mean and var
  torch rsample      Normal(mu, sigma).rsample() / .log_prob with the parameters expanded to
                     one copy per sample: one backward pass gives all per-sample gradients
  jax                jax.random.normal, jax.vmap(jax.grad(...)), mean and var, all under jax.jit
                     (timed after compilation; the compile time is reported apart)

Figures are wall-clock seconds, best of --runs, and ratios to the generated NumPy code timed in
the same process (> 1: slower than the generated code). PyTorch is timed with one thread (as the
NumPy code uses) and with its default thread count; XLA picks its own threads.
"""

import os

# NumPy's BLAS is never called by numeric; OMP/MKL threads are left to PyTorch's defaults
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numeric  # noqa: E402
from bench_codegen import PARAMS, generate, load  # noqa: E402

MU, SIGMA, X, OFFSET = PARAMS["mu"], PARAMS["sigma"], PARAMS["x"], -1e6
EXACT = np.array([X - MU, -SIGMA])


def wall(thunk, runs):
    """(best wall seconds, result of the last run)."""
    best, result = math.inf, None
    for _ in range(runs):
        start = time.perf_counter()
        result = thunk()
        best = min(best, time.perf_counter() - start)
    return best, result


# ----------------------------------------------------------------- numpy, generated


def numpy_contenders(module):
    def run(fn, n):
        est = numeric.estimate(fn, n, seed=0, **PARAMS)
        return est.mean, est.variance
    return {"pathwise": lambda n: run(module.pathwise, n),
            "score": lambda n: run(module.score_function, n)}


# ----------------------------------------------------------------- torch


def torch_contenders():
    """PyTorch two ways. vmap: torch.func.vmap(grad(...)) over the noise, z = loc + scale*eps
    written out (Normal.rsample cannot run inside vmap: "Cannot ask for different inplace
    randomness on an unbatched tensor"). rsample: Normal(mu_b, sigma_b).rsample() with the
    parameters expanded to one copy per sample, so that one backward pass of the sum gives
    every per-sample gradient. The score function uses Normal.log_prob either way."""
    try:
        import torch
        from torch.func import grad, vmap
    except ImportError:
        return None
    torch.set_default_dtype(torch.float64)
    Normal = torch.distributions.Normal

    def f(z):
        return -(X - z) ** 2 / 2 + OFFSET

    def pathwise_one(params, eps):
        return f(params[0] + params[1] * eps)

    def log_q(params, z):
        return Normal(params[0], params[1]).log_prob(z)

    params = torch.tensor([MU, SIGMA])

    def pathwise_vmap(n):
        torch.manual_seed(0)
        eps = Normal(0.0, 1.0).sample((n,))
        g = vmap(grad(pathwise_one), in_dims=(None, 0))(params, eps)
        return g.mean(0).numpy(), g.var(0).numpy()

    def score_vmap(n):
        torch.manual_seed(0)
        z = Normal(params[0], params[1]).sample((n,))
        g = vmap(grad(log_q), in_dims=(None, 0))(params, z) * f(z)[:, None]
        return g.mean(0).numpy(), g.var(0).numpy()

    def expanded(n):
        mu = torch.full((n,), MU, requires_grad=True)
        sigma = torch.full((n,), SIGMA, requires_grad=True)
        return mu, sigma

    def pathwise_rsample(n):
        torch.manual_seed(0)
        mu, sigma = expanded(n)
        f(Normal(mu, sigma).rsample()).sum().backward()
        g = torch.stack([mu.grad, sigma.grad], 1)
        return g.mean(0).numpy(), g.var(0).numpy()

    def score_log_prob(n):
        torch.manual_seed(0)
        mu, sigma = expanded(n)
        q = Normal(mu, sigma)
        z = q.sample()
        q.log_prob(z).sum().backward()
        g = torch.stack([mu.grad, sigma.grad], 1) * f(z)[:, None]
        return g.mean(0).numpy(), g.var(0).numpy()

    return torch, {"vmap": {"pathwise": pathwise_vmap, "score": score_vmap},
                   "rsample": {"pathwise": pathwise_rsample, "score": score_log_prob}}


# ----------------------------------------------------------------- jax


def jax_contenders():
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def f(z):
        return -(X - z) ** 2 / 2 + OFFSET

    def pathwise_one(params, eps):
        return f(params[0] + params[1] * eps)

    def log_q(params, z):
        return jax.scipy.stats.norm.logpdf(z, params[0], params[1])

    params = jnp.array([MU, SIGMA])
    compiled = {}

    def make(kind, n):
        def run(key):
            eps = jax.random.normal(key, (n,))
            if kind == "pathwise":
                g = jax.vmap(jax.grad(pathwise_one), in_axes=(None, 0))(params, eps)
            else:
                z = params[0] + params[1] * eps
                g = jax.vmap(jax.grad(log_q), in_axes=(None, 0))(params, z) * f(z)[:, None]
            return g.mean(0), g.var(0, ddof=1)
        return jax.jit(run)

    def contender(kind):
        def run(n):
            if (kind, n) not in compiled:
                start = time.perf_counter()
                fn = make(kind, n)
                jax.block_until_ready(fn(jax.random.key(1)))
                compiled[(kind, n)] = (fn, time.perf_counter() - start)
            mean, var = jax.block_until_ready(compiled[(kind, n)][0](jax.random.key(0)))
            return np.asarray(mean), np.asarray(var)
        return run

    return jax, compiled, {"pathwise": contender("pathwise"), "score": contender("score")}


def check(name, kind, n, result, exact_var):
    """Mean within 4.9 SE of the exact gradient (rate ~1e-6 per column), SE from the exact
    variance: every contender must compute the same thing."""
    mean, var = result
    se = np.sqrt(exact_var / n)
    ok = np.abs(mean - EXACT) <= numeric.z_for_rate(1e-6) * se
    if not ok.all():
        print(f"  WARNING: {name} {kind} mean {mean} disagrees with {EXACT} (SE {se})")
    return ok.all()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append",
                        help="samples (repeat; default 1e6 and 1e7)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sizes = args.n or [10**6, 10**7]

    module = load(generate())
    exact_var = module.variance(**PARAMS)
    contenders = {"numpy (generated)": numpy_contenders(module)}
    notes = []
    torch_bits = torch_contenders()
    if torch_bits is None:
        notes.append("torch: not installed, skipped (pip install torch==2.13.0)")
    else:
        torch, ways = torch_bits
        default_threads = torch.get_num_threads()
        cores = os.cpu_count() or 1  # importing NumPy with OPENBLAS_NUM_THREADS=1 first can
        # leave torch at one thread: ask for every core explicitly as the second contender

        def threads(k, fn):
            def run(n):
                torch.set_num_threads(k)
                try:
                    return fn(n)
                finally:
                    torch.set_num_threads(default_threads)
            return run
        for way, fns in ways.items():
            for k in sorted({1, cores}):
                contenders[f"torch {way}, {k} thr"] = {kind: threads(k, fn)
                                                       for kind, fn in fns.items()}
        notes.append(f"torch {torch.__version__}")
    jax_bits = jax_contenders()
    if jax_bits is None:
        notes.append("jax: not installed, skipped (pip install jax)")
    else:
        jax, compiled, fns = jax_bits
        contenders["jax (jit)"] = fns
        notes.append(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"numpy {np.__version__}; " + "; ".join(notes))
    print(f"wall seconds, best of {args.runs}; ratio = time / generated NumPy time\n")
    print(f"{'n':>6s} {'estimator':10s} {'contender':22s} {'seconds':>9s} {'ratio':>7s}  agrees")
    for n in sizes:
        for kind in ("pathwise", "score"):
            base = None
            for name, fns in contenders.items():
                seconds, result = wall(lambda: fns[kind](n), args.runs)
                base = seconds if base is None else base
                ok = check(name, kind, n, result, exact_var["pathwise" if kind == "pathwise"
                                                             else "score_function"])
                print(f"{n:6.0e} {kind:10s} {name:22s} {seconds:9.4f} {seconds / base:7.2f}"
                      f"  {'yes' if ok else 'NO'}")
    if jax_bits is not None:
        print("\njax compile times (s): " + ", ".join(
            f"{kind} n={n:.0e}: {t:.2f}" for (kind, n), (_, t) in sorted(compiled.items())))


if __name__ == "__main__":
    main()
