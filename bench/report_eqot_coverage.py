"""Analysis (not a timing): where the forward ESS of DW4 flows is lost, run by run.

Reads the runs of ``workflow/presets/eqot.yaml`` (or ``--runs``): their test-set log densities
(``eval.npz: log_q_test``, the ``nll_n`` test configurations chosen by
:func:`eqbg.evaluation.nll.subset_indices`) and the system's energies, and prints per run:

* the forward ESS ``n^2 / (sum w sum 1/w)`` with its bootstrap interval (``metrics.json``), and
  recomputed without the 1 % and 5 % of test points with the largest ``w = p / q`` (the points the
  flow gives too little density): a deficit carried by a few points shows as a large jump;
* of those worst 1 %: the median minimum pair distance, radius of gyration and energy against
  all test points (compressed or stretched configurations? rare high-energy ones?);
* the rank correlation of ``log w`` with the minimum pair distance.

Between an eqotfm run and the otfm run of the same seed it also prints the median and the
extreme of ``log q_eqotfm - log q_otfm`` on the same test points, overall and on the 5 % most
compressed.

Usage: ``python bench/report_eqot_coverage.py [--results results] [--runs dw4/egnn/eqotfm/seed0 ...]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from eqbg.evaluation.distributions import pairwise_distances
from eqbg.evaluation.nll import subset_indices
from eqbg.evaluation.weights import forward_ess
from eqbg.systems import get_system

DEFAULT_RUNS = (
    [f"dw4/egnn/{loss}/seed{s}" for loss in ("otfm", "eqotfm") for s in (0, 1, 2)]
    + ["dw4/egnn/otfm/sigma01/seed0"]
    + [f"dw4/egnn/eqotfm/sigma01/seed{s}" for s in (0, 1, 2)]
    + [f"dw4/egnn/eqotfm/{v}/seed0" for v in ("steps4000", "reflections")]
)


def _test_points(results: Path, system: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.load(results / "data" / system / "test.npz")["x"]
    idx = subset_indices(len(x), n, seed)
    return idx, x[idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
    args = ap.parse_args()
    system = get_system("dw4")
    log_q, cache = {}, {}
    print("| run | fwd ESS (95 % CI) | without worst 1 % | without worst 5 % | worst 1 %: "
          "min pair dist (all) | worst 1 %: R_g (all) | worst 1 %: energy (all) | "
          "rank corr(log w, min dist) | rev ESS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        d = args.results / "runs" / run
        if not (d / "eval.npz").exists():
            continue
        m = json.loads((d / "metrics.json").read_text())
        lq = np.load(d / "eval.npz")["log_q_test"].astype(np.float64)
        n = len(lq)
        if n not in cache:
            idx, x = _test_points(args.results, "dw4", n)
            u = system.energy(torch.as_tensor(x)).double().numpy()
            dist = pairwise_distances(x)
            cache[n] = (x, u, dist.min(1), np.sqrt((x**2).sum(-1).mean(-1)))
        x, u, dmin, rg = cache[n]
        log_q[run] = lq
        log_w = -u - lq
        order = np.argsort(log_w)  # ascending: the last are the points q under-covers
        k1, k5 = max(1, n // 100), max(1, n // 20)
        fe1 = forward_ess(log_w[order[:-k1]])[0]
        fe5 = forward_ess(log_w[order[:-k5]])[0]
        worst = order[-k1:]
        rho = spearmanr(log_w, dmin).statistic
        print(f"| {run} | {m['forward_ess']:.3f} ({m['forward_ess_ci_low']:.3f}-"
              f"{m['forward_ess_ci_high']:.3f}) | {fe1:.3f} | {fe5:.3f} | "
              f"{np.median(dmin[worst]):.2f} ({np.median(dmin):.2f}) | "
              f"{np.median(rg[worst]):.2f} ({np.median(rg):.2f}) | "
              f"{np.median(u[worst]):.1f} ({np.median(u):.1f}) | {rho:+.2f} | {m['ess']:.3f} |")
    print()
    print("| seed | median log q_eqotfm - log q_otfm | min | on the 5 % most compressed: median, min |")
    print("|---|---|---|---|")
    for s in (0, 1, 2):
        a, b = log_q.get(f"dw4/egnn/eqotfm/seed{s}"), log_q.get(f"dw4/egnn/otfm/seed{s}")
        if a is None or b is None:
            continue
        dmin = cache[len(a)][2]
        comp = np.argsort(dmin)[: max(1, len(a) // 20)]
        delta = a - b
        print(f"| {s} | {np.median(delta):+.3f} | {delta.min():+.2f} | "
              f"{np.median(delta[comp]):+.3f}, {delta[comp].min():+.2f} |")


if __name__ == "__main__":
    main()
