"""`mcgrad check|derive|codegen` for the vector families (mvnormal_diag, mvnormal, dirichlet).

Parameter values (``--param``): ``mu=0.1`` sets every component, ``mu[3]=0.5`` one of them (applied
after the broadcasts); ``sigma=0.8`` likewise; ``L=0.8`` sets the diagonal of L to 0.8 and the rest
of the lower triangle to 0, ``L[1,0]=0.2`` one entry; ``s=0.5`` the Gaussian decoder's noise scale;
``alpha=1.5`` every Dirichlet concentration, ``alpha[2]=0.7`` one of them; any other name a scalar
symbol of an expression f. Decoder data W (D, d), c (D,), x (D,) come from
``--data FILE.npz`` (arrays named W, c, x) or are drawn reproducibly: W ~ N(0, 1/d), c ~ N(0, 0.01),
x = W z0 + c + noise (Gaussian) or x ~ Bernoulli(sigmoid(W z0 + c)) (Bernoulli), z0 ~ N(0, I),
with ``--obs-dim D`` (default 16) and ``--data-seed`` (default 0).
"""

import dataclasses
import itertools
import math
import os

import numpy as np
from sympy.utilities.iterables import multiset_partitions

import derive
import numeric
from derive._vector import (DECODERS, VECTOR_FAMILIES, is_meanfield, parse_vector_name, refusal,
                            vector_estimator, vector_exact, vector_family, vector_problem)

DEFAULT_OBS_DIM = 16
MAX_CELLS = 2**22  # floats per chunk of output rows: bounds the memory of a check


def is_vector(name: str, dim=None) -> bool:
    """A vector family, or (with --dim) a mean-field product of a scalar family."""
    return name in VECTOR_FAMILIES or dim is not None


def problem(family_name, dim, f_text):
    if dim is None:
        raise derive.DeriveError(f"{family_name} is a vector family: give its dimension, e.g. "
                                 f"--dim 8")
    return vector_problem(vector_family(family_name, dim), f_text)


def _number(name, text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise derive.DeriveError(f"{name}={text!r}: the value must be a number") from None
    if not math.isfinite(value):
        raise derive.DeriveError(f"{name}: the value must be finite")
    return value


def values(p, params: dict) -> dict:
    """Arrays mu, sigma | L and the scalar data from --param NAME=VALUE texts."""
    fam, d = p.family, p.family.d
    scale = "sigma" if getattr(fam, "diagonal", False) else "L"
    if fam.name == "dirichlet" or is_meanfield(fam):
        arrays = {name: None for name in fam.parameter_arrays}
    else:
        arrays = {"mu": None, scale: None}
    single, scalars = [], {}
    data_names = set(p.data_names) - ({"W", "c", "x"} if p.kind in DECODERS else set())
    for name, text in params.items():
        if name in arrays:
            v = _number(name, text)
            arrays[name] = (np.full(d, v) if name != "L" else np.diag(np.full(d, v)))
        elif "[" in name:
            single.append((parse_vector_name(name, fam), _number(name, text), name))
        elif name in data_names:
            scalars[name] = _number(name, text)
        else:
            known = ", ".join([*arrays, *sorted(data_names)])
            raise derive.DeriveError(f"unknown parameter {name}: the parameters of this problem "
                                     f"are {known} (and components such as "
                                     f"{fam.wrt[0]})")
    for name, arr in arrays.items():
        if arr is None:
            raise derive.DeriveError(f"no value for {name}; add --param {name}=VALUE (every "
                                     f"component) and/or --param {name}[0]=VALUE")
    for (kind, index), v, _ in single:
        arrays[kind][index] = v
    _check_positive(fam, arrays)
    missing = sorted(data_names - set(scalars))
    if missing:
        raise derive.DeriveError(f"no value for {missing[0]}; add --param {missing[0]}=VALUE")
    if "s" in scalars and scalars["s"] <= 0:
        raise derive.DeriveError("s (the decoder's noise scale) must be > 0")
    return {**arrays, **scalars}


def _check_positive(fam, arrays):
    """alpha >= 0.05 (Dirichlet), sigma > 0 or the diagonal of L > 0 (Gaussians)."""
    if fam.name == "dirichlet":
        from derive._dirichlet import check_alpha
        return check_alpha(arrays["alpha"])
    if is_meanfield(fam):
        return _check_components(fam, arrays)
    if fam.diagonal:
        name, values, what = "sigma", arrays["sigma"], ""
    else:
        name, values, what = "L", np.diag(arrays["L"]), " (the diagonal of the Cholesky factor)"
    bad = np.flatnonzero(values <= 0)
    if bad.size:
        i = int(bad[0])
        index = i if name != "L" else f"{i},{i}"
        raise derive.DeriveError(f"{name}[{index}] must be > 0{what}")


def _check_components(fam, arrays):
    """Each component's parameters satisfy the scalar family's constraints."""
    scalar = fam.scalar()
    for i in range(fam.d):
        at = {p: derive.exact_number(float(arrays[p.name][i])) for p in scalar.params}
        try:
            scalar.check_values(at)
        except derive.DeriveError as err:
            raise derive.DeriveError(f"component {i} of {fam}: {err}") from None


def decoder_data(p, *, data_path=None, obs_dim=None, data_seed=0):
    """W, c, x for a decoder: from an .npz file or drawn reproducibly."""
    d = p.family.d
    if p.kind not in DECODERS:
        if data_path is not None or obs_dim is not None:
            raise derive.DeriveError("--data and --obs-dim are for --f gaussian_decoder or "
                                     "bernoulli_decoder")
        return {}
    if data_path is not None:
        if not os.path.isfile(data_path):
            raise derive.DeriveError(f"--data {data_path}: no such file")
        try:
            with np.load(data_path, allow_pickle=False) as z:
                W, c, x = (np.asarray(z[k], dtype=float) for k in ("W", "c", "x"))
        except KeyError as err:
            raise derive.DeriveError(f"--data {data_path} must hold arrays W, c, x ({err})") \
                from None
        except (OSError, ValueError) as err:
            raise derive.DeriveError(f"--data {data_path}: not a readable .npz ({err})") from None
        if W.ndim != 2 or W.shape[1] != d or c.shape != (W.shape[0],) or x.shape != c.shape:
            raise derive.DeriveError(f"--data: W must be (D, {d}), c and x (D,); got W "
                                     f"{W.shape}, c {c.shape}, x {x.shape}")
        if not all(np.isfinite(a).all() for a in (W, c, x)):
            raise derive.DeriveError("--data: W, c, x must be finite")
        return {"W": W, "c": c, "x": x}
    D = DEFAULT_OBS_DIM if obs_dim is None else obs_dim
    if not 1 <= D <= 100_000:
        raise derive.DeriveError(f"--obs-dim must be from 1 to 100000, got {D}")
    rng = np.random.default_rng(data_seed)
    W = rng.standard_normal((D, d)) / math.sqrt(d)
    c = 0.1 * rng.standard_normal(D)
    a = W @ rng.standard_normal(d) + c
    if p.kind == "gaussian_decoder":
        x = a + rng.standard_normal(D)
    else:
        x = (rng.random(D) < 1 / (1 + np.exp(-a))).astype(float)
    return {"W": W, "c": c, "x": x}


def _wrt(p, wrt):
    """Column indices for --wrt (names such as mu[0], L[1,0], or mu/sigma/L for all)."""
    names = p.family.wrt
    if not wrt:
        return list(range(len(names)))
    words, part = [], ""
    for piece in wrt:  # --wrt was split at commas, also inside L[1,0]
        part = f"{part},{piece}" if part else piece
        if part.count("[") == part.count("]"):
            words.append(part.replace(" ", ""))
            part = ""
    if part:
        raise derive.DeriveError(f"--wrt: unbalanced brackets in {part!r}")
    out = []
    for w in words:
        if w in p.family.parameter_arrays:
            chosen = [j for j, n in enumerate(names) if n.startswith(w + "[")]
            if not chosen:
                raise derive.DeriveError(f"--wrt {w}: {p.family} has no parameter {w}")
            out += chosen
        else:
            parse_vector_name(w, p.family)
            out.append(names.index(w))
    return sorted(set(out))


def check(family_name, dim, f_text, params, *, wrt=None, samples=100_000, seed=0,
          false_failure_rate=1e-6, data_path=None, obs_dim=None, data_seed=0) -> dict:
    """The report of `mcgrad check` for a vector family (the --json shape of scalars, one entry
    per scalar parameter, plus "dim" and "data")."""
    p = problem(family_name, dim, f_text)
    vals = values(p, params)
    data = decoder_data(p, data_path=data_path, obs_dim=obs_dim, data_seed=data_seed)
    vals.update(data)
    columns = _wrt(p, wrt)
    plain = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vals.items()}
    exact = vector_exact(p, plain)
    if (p.kind == "gaussian_decoder" and exact.score_variance is None
            and p.family.name != "dirichlet"):
        missing = {k: v for k, v in exact.variance_missing.items() if k != "score"}
        exact = dataclasses.replace(exact, score_variance=decoder_score_variance(p, vals,
                                    exact.gradient), variance_missing=missing)
    z = numeric.z_for_rate(false_failure_rate)
    width = max(p.family.k, data["W"].shape[0] if data else 1)  # columns of the largest array
    chunk = max(256, min(65536, MAX_CELLS // width))
    report = {"family": family_name, "dim": p.family.d,
              "params": _shown_params(p, vals), "f": f_text, "samples": samples, "seed": seed,
              "gradient": {}}
    if data:
        report["data"] = ({"source": data_path} if data_path else
                          {"source": "synthetic", "obs_dim": int(data["W"].shape[0]),
                           "data_seed": data_seed})
    runs = {}
    for kind in ("score", "pathwise"):
        if refusal(p, kind):
            runs[kind] = {"refused": refusal(p, kind)}
            continue
        fn = vector_estimator(p, kind)
        runs[kind] = numeric.estimate(fn, samples, seed=seed, chunk_size=chunk,
                                      **{k: vals[k] for k in fn.parameters})
    for j in columns:
        value = None if exact.gradient is None else float(exact.gradient[j])
        entry = {"exact": value, "exact_method": exact.method}
        for kind, run in runs.items():
            if isinstance(run, dict):
                entry[kind] = run
                continue
            var_exact = (None if exact.variance(kind) is None
                         else float(exact.variance(kind)[j]))
            entry[kind] = _row(run, j, value, var_exact, samples, z)
            if kind == "pathwise" and (p.family.name == "dirichlet"
                                       or getattr(p.family, "implicit", False)):
                entry[kind]["method"] = "implicit"
        report["gradient"][p.family.wrt[j]] = entry
    report["_notes"] = [f"exact: {exact.missing}"] if exact.missing else []
    if not exact.missing:
        report["_notes"] += [f"variance_exact ({kind}): {why}"
                             for kind, why in exact.variance_missing.items() if kind in runs
                             and not isinstance(runs[kind], dict)]
    return report


# ------------------------------------------------- the Gaussian decoder's score-function variance

def decoder_score_variance(p, vals, gradient) -> tuple:
    r"""Exact per-sample variances of the score-function rows of the Gaussian decoder, any d.

    In the noise, f = alpha + beta^T eps + eps^T Gamma eps (alpha = c0 + b^T mu + mu^T Q mu,
    beta = S^T (b + 2 Q mu), Gamma = S^T Q S, with b = W^T (x - c)/s^2, Q = -W^T W/(2 s^2)) and
    each score column is a quadratic polynomial too (u_i = S^{-1}[:, i]^T eps; u_i eps_j -
    delta_ij/S_ii). E[(f s)^2] = E[f f s s] is the sum over the 15 set partitions of the four
    factors of products of joint cumulants (Isserlis for quadratic forms, in matrix form):

    .. math::

        \kappa(q) = a + \mathrm{tr}\,C, \qquad
        \kappa(q_1, \dots, q_n) = 2^{n-1} \sum_{\text{cyclic orders}} \mathrm{tr}(C_{\sigma_1}
        \cdots C_{\sigma_n}) + 2^{n-3} \sum_{\text{orders}} b_{\sigma_1}^\top C_{\sigma_2} \cdots
        C_{\sigma_{n-1}} b_{\sigma_n} \quad (n \ge 2),

    from the cumulant generating function -1/2 log det(I - 2C) + 1/2 b^T (I - 2C)^{-1} b. Variance
    = E[f^2 s^2] - (d/dphi E f)^2. Floats, like the moment rules' variances.
    """
    fam, d = p.family, p.family.d
    W, c, x, s = (np.asarray(vals[k], dtype=float) for k in ("W", "c", "x", "s"))
    mu = np.asarray(vals["mu"], dtype=float)
    S = np.diag(vals["sigma"]) if fam.diagonal else np.tril(np.asarray(vals["L"], float))
    b, Q = W.T @ (x - c) / s**2, -(W.T @ W) / (2 * s**2)
    c0 = -(x - c) @ (x - c) / (2 * s**2) - 0.5 * len(x) * math.log(2 * math.pi * s**2)
    f = (c0 + b @ mu + mu @ Q @ mu, S.T @ (b + 2 * Q @ mu), S.T @ Q @ S)
    Si = np.linalg.inv(S)
    zero_v, zero_m = np.zeros(d), np.zeros((d, d))
    scores = [(0.0, Si[:, i], zero_m) for i in range(d)]
    for i, j in fam.scale_positions():
        outer = np.outer(Si[:, i], np.eye(d)[j])
        scores.append((-1.0 / S[i, i] if i == j else 0.0, zero_v, (outer + outer.T) / 2))
    cache = {}
    second = [_product_moment((f, f, q, q), k, cache) for k, q in enumerate(scores)]
    return tuple(max(0.0, float(m - g * g)) for m, g in zip(second, gradient))


def _product_moment(qs, column, cache):
    """E[f f s s] for quadratic polynomials qs = (f, f, s, s), each (a, b, C), of eps ~ N(0, I);
    the cumulants of f alone are cached across columns, the others per column."""
    labels = ("f", "f", "s", "s")
    total = 0.0
    for part in multiset_partitions(list(range(len(qs)))):
        term = 1.0
        for block in part:
            key = tuple(sorted(labels[i] for i in block))
            if "s" in key:
                key = (key, column)
            if key not in cache:
                cache[key] = _joint_cumulant([qs[i] for i in block])
            term *= cache[key]
        total += term
    return total


def _joint_cumulant(qs):
    n = len(qs)
    if n == 1:
        return qs[0][0] + np.trace(qs[0][2])
    total = 0.0
    for rest in itertools.permutations(qs[1:]):  # cyclic orders: the first factor fixed
        M = qs[0][2]
        for q in rest:
            M = M @ q[2]
        total += 2.0 ** (n - 1) * np.trace(M)
    for order in itertools.permutations(qs):
        v = order[0][1]
        for q in order[1:-1]:
            v = v @ q[2]
        total += 2.0 ** (n - 3) * (v @ order[-1][1])
    return total


def _shown_params(p, vals):
    fam = p.family
    if fam.name == "dirichlet" or is_meanfield(fam):
        out = {n: float(v) for n, v in zip(fam.wrt, np.concatenate(
            [vals[a] for a in fam.parameter_arrays]))}
        out.update({k: float(v) for k, v in vals.items() if np.ndim(v) == 0})
        return out
    out = {n: float(v) for n, v in zip(fam.wrt[:fam.d], vals["mu"])}
    if fam.diagonal:
        out.update({n: float(v) for n, v in zip(fam.wrt[fam.d:], vals["sigma"])})
    else:
        out.update({f"L[{i},{j}]": float(vals["L"][i][j]) for i, j in fam.scale_positions()})
    out.update({k: float(v) for k, v in vals.items() if np.ndim(v) == 0})
    return out


def _row(run, j, exact, var_exact, samples, z):
    mean, variance = float(run.mean[j]), float(run.variance[j])
    stderr = math.sqrt(variance / samples)
    agrees = None
    if exact is not None:
        se = math.sqrt(var_exact / samples) if var_exact is not None else stderr
        agrees = bool(abs(mean - exact) <= z * se + 64 * 2.0**-52 * max(1.0, abs(exact)))
    return {"mean": mean, "stderr": stderr, "variance": variance, "variance_exact": var_exact,
            "agrees": agrees}


def derive_text(family_name, dim, f_text) -> str:
    """`mcgrad derive` for a vector family: the matrix forms."""
    from derive._vector import matrix_derivation
    p = problem(family_name, dim, f_text)
    m = matrix_derivation(p)
    g = m["g"] if isinstance(m["g"], str) else str(m["g"])
    return "\n".join([f"problem: {p}", f"sampler: {p.family.sampler_text}",
                      f"parameters: {p.family.wrt[0]} .. {p.family.wrt[-1]} "
                      f"({p.family.k} scalars)", f"f = {m['f']}", f"g = df/dz = {g}",
                      f"pathwise: {m['pathwise']}", f"score: {m['score']}",
                      f"exact gradient: {m['exact']}"])
