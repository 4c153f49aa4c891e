"""Benchmark: exact divergence methods vs a plain per-coordinate autograd loop.

(a) For EGNN fields sized as in the papers (DW4: 4x2, EGNN 64x4; LJ13: 13x3, EGNN 32x3; LJ55:
55x3, EGNN 64x7; alanine dipeptide: 22x3, EGNN 64x5) and a couple of batch sizes, times one call of
:func:`eqbg.flows.value_and_exact_divergence` (value + divergence, inference mode,
``create_graph=False``) for each method ``loop``, ``batched_vjp``, ``jacrev``, ``jvp`` on the
CoM-free subspace, and the PLAIN baseline measured in the same run: one forward pass, then
``n*d`` calls of ``torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)``, one per
coordinate, summing ``dv_i/dx_i`` (no subspace basis, no batching). Reported as
``plain time / method time`` (> 1 = faster than plain), with the forward-only time for scale and
the max deviation from the plain divergence as a correctness check.

Exact-likelihood sampling against the plain per-coordinate dopri5 reference is
``bench_exact_sampling.py`` (it uses :class:`PlainDivField` from here).

Timings: median over ``--repeats`` after ``--warmup`` untimed calls, ``torch.set_num_threads``
(default 1; the benchmark shares a 2-core machine). Float32 (as in training/sampling).

Usage: ``python bench/bench_divergence.py [--systems dw4 lj13 lj55 aldp] [--device cpu] [--batches B ...]``.
Prints a table and writes ``bench/out/bench_divergence.json``. Not part of pytest.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from eqbg.flows import CoMFreeGaussian, value_and_exact_divergence
from eqbg.flows.divergence import AUTO
from eqbg.io import provenance, write_json
from eqbg.nn import EGNNField

METHODS = ("loop", "batched_vjp", "jacrev", "jvp")

#: system -> (n, d, hidden, layers, divergence batch sizes)
SYSTEMS: dict[str, dict] = {
    "dw4": {"n": 4, "d": 2, "hidden": 64, "layers": 4, "batches": (16, 128)},
    "lj13": {"n": 13, "d": 3, "hidden": 32, "layers": 3, "batches": (4, 32)},
    "lj55": {"n": 55, "d": 3, "hidden": 64, "layers": 7, "batches": (1,)},
    # alanine dipeptide: the paper preset's EGNN (5 x 64) on 22 atoms (one-hot atom types only
    # add input features; the trace cost is that of the 22 x 3 coordinates)
    "aldp": {"n": 22, "d": 3, "hidden": 64, "layers": 5, "batches": (4, 32)},
}


def plain_divergence(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Naive exact divergence: one backward pass per coordinate (``n*d`` of them), full trace.

    For a translation-invariant CoM-free-valued field (EGNN) the full trace equals the subspace
    trace, so this is the same quantity the library computes.
    """
    xr = x.detach().requires_grad_(True)
    B, nd = x.shape[0], x[0].numel()
    div = x.new_zeros(B)
    with torch.enable_grad():  # CNF.sample runs under no_grad
        v = f(xr)
        vf = v.reshape(B, -1)
        for i in range(nd):
            (g,) = torch.autograd.grad(vf[:, i].sum(), xr, retain_graph=i < nd - 1)
            div = div + g.reshape(B, -1)[:, i].detach()
    return v.detach(), div


class PlainDivField(nn.Module):
    """Wraps a field so :class:`CNF` uses :func:`plain_divergence` for its exact trace."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.inner = field

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.inner(t, x)

    def forward_and_divergence(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return plain_divergence(lambda y: self.inner(t, y), x)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time (s) of ``fn``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def make_field(cfg: dict, device: torch.device, seed: int = 0) -> EGNNField:
    torch.manual_seed(seed)
    f = EGNNField(cfg["n"], cfg["d"], hidden=cfg["hidden"], n_layers=cfg["layers"])
    with torch.no_grad():  # a non-trivial coordinate head (it starts at gain 1e-3), like trained nets
        for layer in f.layers:
            layer.coord_2.weight.normal_(0, 0.1)
    return f.to(device)


def bench_divergence(name: str, cfg: dict, device: torch.device, args) -> list[dict]:
    field = make_field(cfg, device)
    prior = CoMFreeGaussian(cfg["n"], cfg["d"]).to(device)
    t = torch.tensor(0.5, device=device)
    f = lambda y: field(t, y)  # noqa: E731
    rows = []
    for B in cfg["batches"]:
        x = prior.sample(B, generator=torch.Generator(device).manual_seed(B))
        reps = max(1, args.repeats if B * cfg["n"] <= 2048 else args.repeats // 2)
        with torch.no_grad():
            t_fwd = timeit(lambda: f(x), device, args.warmup, reps)
        t_plain = timeit(lambda: plain_divergence(f, x), device, args.warmup, reps)
        _, div_plain = plain_divergence(f, x)
        row = {"system": name, "batch": B, "forward_ms": 1e3 * t_fwd, "plain_ms": 1e3 * t_plain,
               "n_coords": cfg["n"] * cfg["d"], "n_basis": (cfg["n"] - 1) * cfg["d"]}
        for m in METHODS:
            def call(m=m):
                with torch.no_grad():  # inference, as in CNF.sample/log_prob
                    return value_and_exact_divergence(f, x, com_free=True, method=m)
            try:
                tm = timeit(call, device, args.warmup, reps)
                _, div = call()
                row[f"{m}_ms"] = 1e3 * tm
                row[f"{m}_speedup"] = t_plain / tm
                row[f"{m}_maxdev"] = float((div - div_plain).abs().max())
            except RuntimeError as e:  # e.g. out of memory on large batches
                row[f"{m}_ms"] = row[f"{m}_speedup"] = None
                row[f"{m}_error"] = str(e).splitlines()[0][:200]
        rows.append(row)
        print_div_row(row)
    return rows


def print_div_row(r: dict) -> None:
    cells = []
    for m in METHODS:
        s = r.get(f"{m}_speedup")
        cells.append(f"{'fail':>11s}" if s is None else f"{s:7.2f}x{'':3s}")
    print(f"{r['system']:5s} B={r['batch']:4d} | fwd {r['forward_ms']:8.2f} ms | plain "
          f"{r['plain_ms']:9.2f} ms | " + " ".join(cells)
          + f" | maxdev {max(r.get(f'{m}_maxdev', 0) or 0 for m in METHODS):.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", nargs="+", type=int, default=None,
                    help="divergence batch sizes for every system (default: each system's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bench_divergence.json")
    args = ap.parse_args()
    if args.batches:
        for cfg in SYSTEMS.values():
            cfg["batches"] = tuple(args.batches)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start = time.perf_counter()
    print(f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}")
    print("speedup = plain per-coordinate loop time / method time (value + exact divergence)")
    print(f"{'':26s}{'':20s}{'':16s}  " + " ".join(f"{m:>11s}" for m in METHODS))
    div_rows = [r for s in args.systems for r in bench_divergence(s, SYSTEMS[s], device, args)]
    total = time.perf_counter() - start
    print(f"total {total:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {
        "divergence": div_rows, "systems": SYSTEMS,
        "settings": {k: str(v) for k, v in vars(args).items()}, "device": str(device),
        "auto": dict(AUTO), "total_s": total,
        "meta": provenance(script="bench_divergence.py", device=str(device),
                           threads=torch.get_num_threads()),
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
