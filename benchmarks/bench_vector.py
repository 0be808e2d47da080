"""Vector latents: derivation cost vs d, and generated pathwise gradients vs PyTorch autograd.

    python benchmarks/bench_vector.py            # both parts
    python benchmarks/bench_vector.py --growth   # derivation time and code size, d = 2 .. 32
    python benchmarks/bench_vector.py --torch    # d = 32 diagonal Gaussian, Gaussian decoder

Part 1 (growth): seconds to parse and derive (matrix forms) and generate the module, and the
module's size, for the Gaussian decoder under both families and for a componentwise expression
f = sum_i sin(z[i]) * z[i+1 mod d] (differentiated one component at a time); also the seconds of
the symbolic check of the matrix formulas against SymPy's scalar expansion (D = 2), which is what
grows as d^2 terms and is only run at small d.

Part 2 (speed): per-sample pathwise gradients (n, 2d) of E[log N(x | W z + c, s^2 I)] for
q = mvnormal_diag, d = 32, x of dimension D = 784 (an MNIST image), n = 4096 samples per call,
noise drawing included, float64 and float32: the generated NumPy function vs PyTorch autograd
on CPU computing the same per-sample rows (mu and sigma expanded to (n, d) leaves, one backward
of the summed f), and vs the usual autograd of the mean (2d,) gradient. Best of 7 calls each,
in the same process, one thread each (OMP/OpenBLAS/MKL threads = 1, torch.set_num_threads(1)).
"""

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from derive._vector import (derivation_cost, vector_estimator, vector_family,  # noqa: E402
                            vector_problem, verify_matrix_forms)

DIMS = (2, 4, 8, 16, 32)


def _expression(d):
    return " + ".join(f"sin(z[{i}])*z[{(i + 1) % d}]" for i in range(d))


class _Late(Exception):
    pass


def _timed(fn, seconds):
    def stop(*_):
        raise _Late

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    start = time.perf_counter()
    try:
        fn()
        return time.perf_counter() - start
    except _Late:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def growth(verify_limit=60):
    print("| d | decoder, diag: s / bytes | decoder, full L: s / bytes | expression (diag): "
          "s / bytes | symbolic check of the matrix forms (full L, D = 2): s |")
    print("|---|---|---|---|---|")
    late = False
    for d in DIMS:
        a = derivation_cost("mvnormal_diag", d, "gaussian_decoder")
        b = derivation_cost("mvnormal", d, "gaussian_decoder")
        c = derivation_cost("mvnormal_diag", d, _expression(d))
        v = None
        if not late:
            p = vector_problem(vector_family("mvnormal", d), "gaussian_decoder")
            v = _timed(lambda: verify_matrix_forms(p, D=2), verify_limit)
            late = v is None
        shown = f"{v:.2f}" if v is not None else f"> {verify_limit} (stopped)" if late and \
            v is None and d == _first_late(d) else "not run"
        print(f"| {d} | {a['seconds']:.3f} / {a['bytes']:,} | {b['seconds']:.3f} / "
              f"{b['bytes']:,} | {c['seconds']:.3f} / {c['bytes']:,} | {shown} |", flush=True)


_LATE = []


def _first_late(d):
    if not _LATE:
        _LATE.append(d)
    return _LATE[0]


def _best(fn, repeat=7):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(d=32, D=784, n=4096):
    import torch
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((D, d)) / np.sqrt(d)
    c = 0.1 * rng.standard_normal(D)
    x = W @ rng.standard_normal(d) + c + rng.standard_normal(D)
    mu, sigma, s = 0.1 * rng.standard_normal(d), np.full(d, 0.8), 0.5
    p = vector_problem(vector_family("mvnormal_diag", d), "gaussian_decoder")
    print(f"d = {d}, D = {D}, n = {n} samples per call, torch {torch.__version__}, "
          f"numpy {np.__version__}, 1 thread")
    print("| dtype | generated NumPy (n, 2d) rows | torch autograd (n, 2d) rows | ratio | "
          "torch autograd mean (2d,) | ratio |")
    print("|---|---|---|---|---|---|")
    for dtype, tdt in (("float64", torch.float64), ("float32", torch.float32)):
        fn = vector_estimator(p, "pathwise", dtype=dtype)
        arrays = {k: np.asarray(v, dtype) for k, v in dict(mu=mu, sigma=sigma, W=W, c=c, x=x).items()}
        gen = np.random.default_rng(1)
        t_np = _best(lambda: fn(gen, n, s=s, **arrays))
        T = {k: torch.tensor(v, dtype=tdt) for k, v in arrays.items()}
        torch.manual_seed(0)

        def rows():
            m = T["mu"].expand(n, d).clone().requires_grad_()
            sg = T["sigma"].expand(n, d).clone().requires_grad_()
            eps = torch.randn(n, d, dtype=tdt)
            r = T["x"] - T["c"] - (m + sg * eps) @ T["W"].T
            f = -0.5 * (r * r).sum(1) / s**2 - 0.5 * D * np.log(2 * np.pi * s**2)
            f.sum().backward()
            return torch.cat([m.grad, sg.grad], 1)

        def mean():
            m = T["mu"].clone().requires_grad_()
            sg = T["sigma"].clone().requires_grad_()
            eps = torch.randn(n, d, dtype=tdt)
            r = T["x"] - T["c"] - (m + sg * eps) @ T["W"].T
            f = -0.5 * (r * r).sum(1) / s**2 - 0.5 * D * np.log(2 * np.pi * s**2)
            f.mean().backward()
            return torch.cat([m.grad, sg.grad])

        # same numbers: the generated rows and torch's rows for the same noise
        eps = np.random.default_rng(5).standard_normal((8, d)).astype(dtype)
        ours = fn(_Replay(eps), 8, s=s, **arrays)
        m = T["mu"].expand(8, d).clone().requires_grad_()
        sg = T["sigma"].expand(8, d).clone().requires_grad_()
        r = T["x"] - T["c"] - (m + sg * torch.tensor(eps)) @ T["W"].T
        (-0.5 * (r * r).sum(1) / s**2).sum().backward()
        theirs = torch.cat([m.grad, sg.grad], 1).numpy()
        assert np.allclose(ours, theirs, rtol=1e-3 if dtype == "float32" else 1e-10,
                           atol=1e-3 if dtype == "float32" else 1e-10)
        t_rows, t_mean = _best(rows), _best(mean)
        print(f"| {dtype} | {t_np * 1e3:.2f} ms | {t_rows * 1e3:.2f} ms | {t_rows / t_np:.2f}x | "
              f"{t_mean * 1e3:.2f} ms | {t_mean / t_np:.2f}x |", flush=True)


class _Replay:
    """A stand-in generator returning fixed noise (to compare the two codes' numbers)."""

    def __init__(self, eps):
        self.eps = eps

    def standard_normal(self, shape, dtype=None):
        return self.eps.astype(dtype)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--growth", action="store_true")
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--obs-dim", type=int, default=784)
    ap.add_argument("--samples", type=int, default=4096)
    args = ap.parse_args()
    both = not (args.growth or args.torch)
    if args.growth or both:
        growth()
    if args.torch or both:
        speed(D=args.obs_dim, n=args.samples)


if __name__ == "__main__":
    main()
