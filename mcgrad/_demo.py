"""`mcgrad demo`: the lecture's scenario with nothing to type.

q = Normal(mu, sigma) over a latent z; f = log p(x | z) for a Gaussian likelihood whose log
carries a large negative constant, as at the start of training (log p ~ -1e6). The
log-derivative trick is exact, but its per-sample variance grows as the square of that constant
(~1e12); the pathwise estimator does not see the constant at all (variance ~1).
"""

import math

import derive

from ._check import check, setup

FAMILY = "normal"
F = "-(x - z)**2/2 - 1000000"
PARAMS = {"mu": 0.3, "sigma": 1.0, "x": 1.5}
SAMPLES = 100_000
TARGET_SE = 0.01


def run(samples: int = SAMPLES, seed: int = 0) -> tuple[str, int]:
    """The demo's text and exit status."""
    s = setup(FAMILY, F, params=PARAMS)
    lines = [
        "The lecture's problem: grad_phi E_q(z|phi)[log p(x|z)] at the start of training, when",
        "log p(x|z) ~ -1e6. Here q = Normal(mu, sigma), f = log p(x|z) = " + F,
        f"at {', '.join(f'{k} = {v}' for k, v in PARAMS.items())}.",
        "",
        "1. The gradient cannot be pushed inside the expectation:",
    ]
    analysis = derive.analyze(s.problem)
    mu = s.problem.wrt[0]
    trick, _ = analysis.steps[mu]
    pit = trick.pitfall
    lines.append(f"   E_q[d/dmu log p(x|z)] = {pit.rhs if pit else 0}, but d/dmu E_q[log p] = "
                 f"{analysis.gradient[mu].expr}.")
    lines += ["", "2. The log-derivative trick, each step checked:", trick.text(), ""]
    report = check(FAMILY, F, PARAMS, samples=samples, seed=seed, baseline="optimal")
    lines.append(f"3. The estimators on {samples:,} samples (seed {seed}):")
    lines.append(f"   {'':9}{'estimator':10}{'exact':>12}{'estimate':>14}{'std. error':>13}"
                 f"{'variance/sample':>17}{'samples for SE ' + str(TARGET_SE):>24}")
    for w, entry in report["gradient"].items():
        for kind in ("score", "pathwise", "score_baseline"):
            row = entry[kind]
            var = row["variance_exact"] or row["variance"]
            need = math.ceil(var / TARGET_SE**2)
            label = "optimal b" if kind == "score_baseline" else kind
            lines.append(f"   {'d/d' + w:<9}{label:10}{entry['exact']:>12.4f}{row['mean']:>14.4f}"
                         f"{row['stderr']:>13.3g}{var:>17.3g}{need:>24.3g}")
    lines += ["",
              "The score-function variance grows as the square of the constant in log p; the",
              "pathwise (reparameterization) estimator differentiates f, so the constant drops out.",
              "The optimal baseline b* = E[f s**2]/E[s**2] (score function with f - b*) removes it",
              "too: --baseline optimal (or delta, the delta-method control variate) in mcgrad check.",
              "Try: mcgrad check normal --param mu=0.3 --param sigma=1.7 --f \"cos(2*z)\""]
    code = 0 if all(row.get("agrees") is not False for e in report["gradient"].values()
                    for row in e.values() if isinstance(row, dict)) else 1
    return "\n".join(lines), code
