"""Benchmark: vectorised equivariant-OT coupling vs a per-pair Python loop of Hungarian + Kabsch.

The baseline is the plain implementation (as in the DEM/transferable-samplers ``eot`` metric, but
with proper rotations): for every (prior, data) pair, alternate ``linear_sum_assignment`` and a
numpy-SVD Kabsch from the identity start until the assignment stops changing, then ``ot.emd``.
``eqbg`` is run with the same start (``init="identity"``, no enumeration) to check it returns the
same costs, and with its defaults (exhaustive enumeration for DW4, principal-axes start for LJ13).

Usage: ``python bench/bench_coupling.py [--systems dw4 lj13] [--batch-sizes 64 128 256]``
Prints a table and writes ``bench/out/bench_coupling.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from eqbg.training.coupling import emd_permutation, equivariant_cost_matrix, equivariant_ot

SYSTEMS = {"dw4": (4, 2), "lj13": (13, 3)}


def _cf(x: np.ndarray) -> np.ndarray:
    return x - x.mean(1, keepdims=True)


def baseline_pair_cost(x0: np.ndarray, x1: np.ndarray, max_iter: int = 20) -> float:
    """Hungarian + Kabsch alternation for one pair, plain numpy/scipy (identity start)."""
    rot = np.eye(x0.shape[1])
    perm = None
    cost = np.inf
    for _ in range(max_iter):
        y = x1 @ rot.T
        c = ((x0[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        new_perm = linear_sum_assignment(c)[1]
        xs = x1[new_perm]
        h = xs.T @ x0
        u, _, vt = np.linalg.svd(h)
        dfix = np.ones(x0.shape[1])
        dfix[-1] = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
        new_rot = (vt.T * dfix) @ u.T
        new_cost = ((x0 - xs @ new_rot.T) ** 2).sum()
        if new_cost >= cost - 1e-10 * (1 + cost):
            break
        cost, rot = new_cost, new_rot
        if perm is not None and np.array_equal(new_perm, perm):
            break
        perm = new_perm
    plain = ((x0 - x1) ** 2).sum()
    return min(cost, plain)


def baseline(x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = x0.shape[0]
    cost = np.empty((b, b))
    for i in range(b):
        for j in range(b):
            cost[i, j] = baseline_pair_cost(x0[i], x1[j])
    return emd_permutation(cost), cost


def _time(fn, repeats: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "out" / "bench_coupling.json"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for name in args.systems:
        n, d = SYSTEMS[name]
        for b in args.batch_sizes:
            rng = np.random.default_rng(args.seed)
            x0 = _cf(rng.standard_normal((b, n, d)))
            # data-like second batch: a wider, shifted cloud so the pairing is not trivial
            x1 = _cf(1.5 * rng.standard_normal((b, n, d)) + 0.5)
            t0, t1 = torch.from_numpy(x0), torch.from_numpy(x1)
            t_base, (perm_b, cost_b) = _time(lambda: baseline(x0, x1), 1)
            t_same, res_same = _time(
                lambda: equivariant_cost_matrix(t0, t1, exhaustive_limit=1, init="identity"),
                args.repeats,
            )
            t_def, out_def = _time(lambda: equivariant_ot(t0, t1), args.repeats)
            perm_s = emd_permutation(res_same.cost)
            same = np.abs(res_same.cost.numpy() - cost_b).max()
            rows.append(
                {
                    "system": name,
                    "batch": b,
                    "baseline_s": t_base,
                    "eqbg_same_algorithm_s": t_same,
                    "eqbg_default_s": t_def,
                    "speedup_same_algorithm": t_base / t_same,
                    "speedup_default": t_base / t_def,
                    "max_abs_cost_diff_same_algorithm": float(same),
                    "same_pairing": bool(np.array_equal(perm_s, perm_b)),
                    "mean_pair_cost_baseline": float(cost_b.mean()),
                    "mean_pair_cost_default": float(out_def[2].mean()),
                    "hungarian_calls_same_algorithm": res_same.n_assignment_calls,
                    "pairs": b * b,
                }
            )
            r = rows[-1]
            print(
                f"{name:5s} B={b:4d}  baseline {t_base:8.2f}s  eqbg(same) {t_same:7.3f}s "
                f"x{r['speedup_same_algorithm']:6.1f}  eqbg(default) {t_def:7.3f}s "
                f"x{r['speedup_default']:6.1f}  |dcost|max {same:.1e} same_pairing={r['same_pairing']} "
                f"mean cost base/default {r['mean_pair_cost_baseline']:.3f}/"
                f"{r['mean_pair_cost_default']:.3f}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "host": platform.node(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
