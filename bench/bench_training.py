"""Benchmark: training steps/s per loss and samples/s with exact likelihood (DW4, LJ13).

For each system, one EGNN flow is built and each loss (fm, otfm, eqotfm, ml) is timed over
``--steps`` optimiser steps after ``--warmup`` untimed ones; the coupling overhead is reported as
the ratio of step times vs ``fm``. Sampling throughput is measured with exact divergence, either
for trained runs (``--run dw4=results/runs/dw4/egnn/eqotfm/seed0``; NFE then reflects a trained
field) or for the freshly built flow with a fixed-step solver (``--sample-steps``), where the
time per step is what matters.

Usage: ``python bench/bench_training.py [--systems dw4 lj13] [--data-root results/data]``
Data come from ``{data-root}/{system}/train.npz``; without them a small MCMC set is generated.
Prints a table and writes ``bench/out/bench_training.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from eqbg.io import provenance, write_json
from eqbg.systems import get_system
from eqbg.flows.registry import build_flow
from eqbg.rundir import load_flow
from eqbg.losses import build_loss

MODEL = {"dw4": {"hidden": 32, "n_layers": 3}, "lj13": {"hidden": 32, "n_layers": 3}}


def _data(system: str, root: Path | None, device: torch.device) -> torch.Tensor:
    from eqbg.data import load_dataset, make_reference_data

    if root is not None and (root / system / "train.npz").exists():
        return load_dataset(root / system / "train.npz", system, "train").to(device)
    out = Path(tempfile.mkdtemp(prefix=f"bench_{system}_"))
    make_reference_data(
        system,
        {"splits": {"train": 2048, "val": 64, "test": 64}, "check_convergence": False},
        0,
        out,
    )
    return load_dataset(out / "train.npz", system, "train").to(device)


def time_losses(system: str, data: torch.Tensor, args, device) -> list[dict]:
    sys_obj = get_system(system)
    rows = []
    ml = {"atol": 1e-4, "rtol": 1e-4}
    for loss in args.losses:
        objective = build_loss(loss, sys_obj, ml if loss == "ml" else None, batch_size=args.batch_size)
        torch.manual_seed(0)
        flow = build_flow(sys_obj, MODEL[system], {}).to(device)
        opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
        gen = torch.Generator(device=device).manual_seed(0)
        steps = args.ml_steps if loss == "ml" else args.steps
        times = []
        for k in range(args.warmup + steps):
            idx = torch.randint(len(data), (args.batch_size,), generator=gen, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            opt.zero_grad()
            value = objective(flow, data[idx], generator=gen)
            value.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k >= args.warmup:
                times.append(time.perf_counter() - t)
        per = sum(times) / len(times)
        rows.append(
            {
                "system": system,
                "loss": loss,
                "batch": args.batch_size,
                "s_per_step": per,
                "steps_per_s": 1.0 / per,
            }
        )
    base = next((r["s_per_step"] for r in rows if r["loss"] == "fm"), None)
    for r in rows:
        r["ratio_vs_fm"] = r["s_per_step"] / base if base else None
    return rows


def time_sampling(system: str, args, device, run_dir: str | None) -> dict:
    if run_dir:
        flow, _ = load_flow(run_dir, ode={"atol": args.tol, "rtol": args.tol}, device=str(device))
        what = f"trained ({run_dir}), dopri5 tol {args.tol}"
    else:
        torch.manual_seed(0)
        flow = (
            build_flow(
                get_system(system), MODEL[system], {"method": "rk4", "n_steps": args.sample_steps}
            )
            .to(device)
            .eval()
        )
        what = f"untrained, rk4 x {args.sample_steps} steps"
    gen = torch.Generator(device=device).manual_seed(0)
    flow.sample(8, exact=True, generator=gen)  # warm-up
    res = flow.sample(args.n_samples, exact=True, generator=gen, batch_size=args.sample_batch)
    return {
        "system": system,
        "what": what,
        "n": args.n_samples,
        "wall_time_s": res.wall_time_s,
        "samples_per_s": args.n_samples / res.wall_time_s,
        "nfe": res.nfe,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="+", default=["dw4", "lj13"], choices=list(MODEL))
    ap.add_argument("--losses", nargs="+", default=["fm", "otfm", "eqotfm", "ml"])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ml-steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--n-samples", type=int, default=256)
    ap.add_argument("--sample-batch", type=int, default=256)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--run", action="append", default=[], help="system=run_dir (trained model)")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "out" / "bench_training.json"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runs = dict(r.split("=", 1) for r in args.run)
    train_rows, sample_rows = [], []
    for system in args.systems:
        data = _data(system, args.data_root, device)
        for r in time_losses(system, data, args, device):
            train_rows.append(r)
            print(
                f"{system:5s} {r['loss']:7s} B={r['batch']:4d}  {r['steps_per_s']:8.2f} steps/s  "
                f"x{r['ratio_vs_fm']:.2f} vs fm",
                flush=True,
            )
        s = time_sampling(system, args, device, runs.get(system))
        sample_rows.append(s)
        print(
            f"{system:5s} sampling+exact log q: {s['samples_per_s']:8.1f} samples/s "
            f"(n={s['n']}, nfe={s['nfe']}, {s['what']})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = provenance(
        script="bench_training.py", device=str(device), threads=torch.get_num_threads(), model=MODEL
    )
    write_json(args.out, {"meta": meta, "training": train_rows, "sampling": sample_rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
