"""Benchmark: optimality gap of the equivariant-OT search against an exhaustive optimum.

For 6- and 7-particle systems (720 and 5040 permutations) in 2D and 3D, every (prior, data) pair
of a batch — ``B`` CoM-free standard-Gaussian prior samples against ``B`` Lennard-Jones cluster
configurations, i.e. the pairs a training step's coupling sees — is solved twice:

* exactly: all ``n!`` permutations with the Kabsch rotation of each (proper rotations only, as the
  coupling: ``eqbg.ot`` works in SO(d), see :mod:`eqbg.ot.alignment`) — the library's enumeration
  path (``exhaustive_limit >= n!``), cross-checked on a few pairs against an independent numpy
  brute force in this script;
* by the alternating Hungarian/Kabsch search (``exhaustive_limit=1``) in each configuration of
  :data:`VARIANTS`.

Reported per system and variant: median and worst relative excess ``(search - exact) / exact``,
the fraction of pairs solved exactly (relative excess <= 1e-6), and the time per pair (best of
``--repeats`` calls after one warm-up, one thread).

Data: ``LennardJones(n, d)`` from :mod:`eqbg.systems.particles` (the LJ13 energy at n particles:
ordered-pair convention, harmonic restraint, kT = 1), sampled by parallel Metropolis chains started
from relaxed random clusters (seeded; a few seconds). The prior is the training prior: standard
normal, centre of mass removed.

Usage: ``python bench/bench_eqot_optimality.py [--batch 32] [--cases 6x2 6x3 7x2 7x3]``
Prints a table and writes ``bench/out/bench_eqot_optimality.json``.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from bench_coupling import _time  # best of repeats after a warm-up call
from eqbg.io import provenance, write_json
from eqbg.ot.coupling import equivariant_cost_matrix
from eqbg.systems.particles import LennardJones

#: search configurations: (label, keyword arguments of equivariant_cost_matrix). All force the
#: alternating search (exhaustive_limit=1). ``restarts`` rows need the restarts option.
VARIANTS = [
    ("identity, converged", {"init": "identity", "max_iter": 20}),
    ("pca, 2 sweeps", {"init": "pca", "max_iter": 2}),
    ("pca, converged", {"init": "pca", "max_iter": 20}),
    ("pca-all, converged", {"init": "pca-all", "max_iter": 20}),
]
RESTART_VARIANTS = [
    (f"pca + {r} restarts", {"init": "pca", "max_iter": 20, "restarts": r})
    for r in (3, 8, 16, 32, 64)
]

EXACT_REL = 1e-6


def lj_configurations(n: int, d: int, count: int, seed: int) -> torch.Tensor:
    """``count`` CoM-free LJ cluster configurations ``(count, n, d)`` (float64): random clusters
    relaxed by gradient descent, then Metropolis at kT = 1 (independent parallel chains)."""
    g = torch.Generator().manual_seed(seed)
    system = LennardJones(n, d)
    x = torch.randn(count, n, d, generator=g, dtype=torch.float64) * 0.6
    x = x - x.mean(1, keepdim=True)
    for _ in range(300):  # relaxation: clipped gradient steps
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(system.energy(x).sum(), x)
        step = (1e-3 * grad).clamp(-0.05, 0.05)
        x = x.detach() - step
    x = x.detach()
    e = system.energy(x)
    step_size = 0.05
    for _ in range(1500):  # Metropolis, one all-particle move per step
        prop = x + step_size * torch.randn(x.shape, generator=g, dtype=x.dtype)
        e_prop = system.energy(prop)
        accept = torch.rand(count, generator=g, dtype=x.dtype) < torch.exp(e - e_prop)
        x = torch.where(accept[:, None, None], prop, x)
        e = torch.where(accept, e_prop, e)
    return x - x.mean(1, keepdim=True)


def prior_samples(n: int, d: int, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(count, n, d, generator=g, dtype=torch.float64)
    return x - x.mean(1, keepdim=True)


def brute_force_pair(x0: np.ndarray, x1: np.ndarray) -> float:
    """Independent check: min over all n! permutations of the proper-Kabsch residual (numpy)."""
    n, d = x0.shape
    perms = np.array(list(itertools.permutations(range(n))))
    y = x1[perms]  # (K, n, d)
    h = np.swapaxes(y, -1, -2) @ x0  # (K, d, d)
    u, _, vt = np.linalg.svd(h)
    v, ut = np.swapaxes(vt, -1, -2), np.swapaxes(u, -1, -2)
    diag = np.ones((len(perms), d))
    sign = np.sign(np.linalg.det(v @ ut))
    diag[:, -1] = np.where(sign == 0, 1.0, sign)
    r = (v * diag[:, None, :]) @ ut
    return float(((y @ np.swapaxes(r, -1, -2) - x0) ** 2).sum((-1, -2)).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["6x2", "6x3", "7x2", "7x3"])
    ap.add_argument("--batch", type=int, default=32, help="B: B*B pairs per case")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per variant (best)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="*", default=None, help="labels to run (default: all)")
    ap.add_argument("--no-restarts", action="store_true", help="only the pre-restart variants")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "out" / "bench_eqot_optimality.json"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = VARIANTS + ([] if args.no_restarts else RESTART_VARIANTS)
    if args.variants:
        variants = [v for v in variants if v[0] in args.variants]

    rows = []
    print(
        f"{'case':5s} {'variant':24s} {'median exc':>10s} {'worst exc':>10s} {'exact':>6s} "
        f"{'us/pair':>8s} {'calls/pair':>10s}"
    )
    for case in args.cases:
        n, d = (int(s) for s in case.split("x"))
        b = args.batch
        x1 = lj_configurations(n, d, b, args.seed + 100 * n + d)
        x0 = prior_samples(n, d, b, args.seed + 100 * n + d)
        t_ex, ex = _time(
            lambda: equivariant_cost_matrix(x0, x1, exhaustive_limit=10**6), args.repeats
        )
        exact = ex.cost
        assert ex.rotation is None  # enumerated
        for a, c in [(0, 0), (1, 2), (b - 1, b - 3)]:  # independent cross-check
            bf = brute_force_pair(x0[a].numpy(), x1[c].numpy())
            assert abs(bf - exact[a, c].item()) <= 1e-9 * (1 + bf), (bf, exact[a, c].item())
        rows.append(
            {"case": case, "n": n, "d": d, "batch": b, "variant": "exhaustive",
             "s_per_pair": t_ex / b**2, "mean_cost": float(exact.mean())}
        )
        print(f"{case:5s} {'exhaustive':24s} {'':>10s} {'':>10s} {'':>6s} {1e6 * t_ex / b**2:8.1f}")
        for label, kwargs in variants:
            t, res = _time(
                lambda kw=kwargs: equivariant_cost_matrix(x0, x1, exhaustive_limit=1, **kw),
                args.repeats,
            )
            excess = ((res.cost - exact) / exact).numpy().ravel()
            assert excess.min() > -1e-9, f"{label}: below the exhaustive optimum ({excess.min()})"
            row = {
                "case": case, "n": n, "d": d, "batch": b, "variant": label, "options": kwargs,
                "median_excess": float(np.median(excess)),
                "worst_excess": float(excess.max()),
                "mean_excess": float(excess.mean()),
                "fraction_exact": float((excess <= EXACT_REL).mean()),
                "s_per_pair": t / b**2,
                "assignment_calls_per_pair": res.n_assignment_calls / b**2,
                "sweeps": res.n_iterations,
                "fallback_pairs": res.n_fallback,
            }
            rows.append(row)
            print(
                f"{case:5s} {label:24s} {100 * row['median_excess']:9.2f}% "
                f"{100 * row['worst_excess']:9.1f}% {row['fraction_exact']:6.3f} "
                f"{1e6 * row['s_per_pair']:8.1f} {row['assignment_calls_per_pair']:10.1f}",
                flush=True,
            )
    meta = provenance(
        script="bench_eqot_optimality.py", threads=torch.get_num_threads(), seed=args.seed,
        batch=args.batch,
    )
    write_json(args.out, {"meta": meta, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
