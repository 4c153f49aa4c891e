"""Benchmark: samples per second with their log density, augmented coupling flow vs EGNN CNF.

The claim of Midgley et al. 2023: an augmented coupling flow samples with its (estimated)
density more than an order of magnitude faster than an equivariant CNF with its exact density.
For each system both flows sample ``--n`` configurations with ``log q`` in the same process,
alternating ``--repeats`` times (medians reported), and the ratio is printed.

* CNF: :class:`eqbg.flows.CNF` with the EGNN field, exact divergence, dopri5 at ``--tol``; the
  NFE of a trained field is what decides its cost, so pass trained runs with ``--run`` (e.g.
  ``--run lj13:egnn=results/runs/lj13/egnn/fm/seed0``). Without one the freshly built field (near
  zero: few NFE, the CNF's best case) is timed.
* EACF: :class:`eqbg.flows.augmented.AugmentedCouplingFlow`, one pass, ``log q(x, a) - log
  pi(a|x)`` (the joint weights); ``--run lj13:eacf=...`` for a trained one, else a fresh flow with
  the default config's laptop size (4 blocks) and the paper's (12 blocks).

Usage: ``python bench/bench_sampling_speed.py [--systems dw4 lj13] [--n 256] [--repeats 3]
[--device cpu] [--run SYSTEM:MODEL=RUN_DIR ...]``. Writes ``bench/out/bench_sampling_speed.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from eqbg.flows.registry import build_flow
from eqbg.rundir import load_flow
from eqbg.io import provenance, write_json
from eqbg.systems import get_system

#: the default config's networks (config.yaml)
CNF_MODEL = {"dw4": {"name": "egnn", "hidden": 64, "n_layers": 5},
             "lj13": {"name": "egnn", "hidden": 32, "n_layers": 3}}
EACF_MODELS = {
    "eacf (4 blocks, default config)": {"name": "eacf", "n_blocks": 4},
    "eacf (12 blocks, paper)": {"name": "eacf", "n_blocks": 12},
}


def _flows(system: str, runs: dict[str, str], device: str, tol: float) -> dict[str, torch.nn.Module]:
    ode = {"method": "dopri5", "atol": tol, "rtol": tol}
    flows = {}
    if f"{system}:egnn" in runs:
        flows["egnn CNF (trained)"], _ = load_flow(runs[f"{system}:egnn"], ode=ode, device=device)
    else:
        torch.manual_seed(0)
        flows["egnn CNF (untrained)"] = build_flow(get_system(system), CNF_MODEL[system], ode).to(device).eval()
    if f"{system}:eacf" in runs:
        flows["eacf (trained)"], _ = load_flow(runs[f"{system}:eacf"], device=device)
    else:
        for label, cfg in EACF_MODELS.items():
            torch.manual_seed(0)
            flows[label] = build_flow(get_system(system), cfg).to(device).eval()
    return flows


def _time(flow, n: int, batch: int, device: str) -> tuple[float, int]:
    gen = torch.Generator(device=device).manual_seed(0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    res = flow.sample(n, generator=gen, batch_size=batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    assert res.log_q is not None and torch.isfinite(res.log_q).float().mean() > 0.5
    return time.perf_counter() - start, int(res.nfe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", nargs="+", default=["dw4", "lj13"])
    parser.add_argument("--n", type=int, default=256, help="samples per timing")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-5, help="CNF dopri5 atol = rtol")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run", action="append", default=[], help="SYSTEM:MODEL=RUN_DIR (model egnn or eacf)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = dict(item.split("=", 1) for item in args.run)
    rows = []
    for system in args.systems:
        flows = _flows(system, runs, args.device, args.tol)
        for label, flow in flows.items():  # warm-up (allocator, first-call overheads)
            _time(flow, min(args.n, 16), args.batch, args.device)
        times: dict[str, list[float]] = {label: [] for label in flows}
        nfe: dict[str, int] = {}
        for _ in range(args.repeats):  # alternate the flows, so drifts of the machine hit all
            for label, flow in flows.items():
                seconds, nfe[label] = _time(flow, args.n, args.batch, args.device)
                times[label].append(seconds)
        cnf_label = next(label for label in flows if label.startswith("egnn"))
        cnf_rate = args.n / statistics.median(times[cnf_label])
        for label in flows:
            rate = args.n / statistics.median(times[label])
            rows.append({"system": system, "flow": label, "n": args.n, "nfe": nfe[label],
                         "median_s": statistics.median(times[label]), "samples_per_s": rate,
                         "ratio_vs_cnf": rate / cnf_rate})
    print(f"{'system':6} {'flow':34} {'NFE':>6} {'median s':>9} {'samples/s':>10} {'x CNF':>7}")
    for r in rows:
        print(f"{r['system']:6} {r['flow']:34} {r['nfe']:6d} {r['median_s']:9.3f} {r['samples_per_s']:10.1f} {r['ratio_vs_cnf']:7.1f}")
    out = Path(__file__).parent / "out" / "bench_sampling_speed.json"
    out.parent.mkdir(exist_ok=True)
    write_json(out, provenance(stage="bench_sampling_speed", args=vars(args), rows=rows))


if __name__ == "__main__":
    main()
