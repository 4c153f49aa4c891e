"""Benchmark: exact-likelihood sampling against the per-coordinate dopri5 reference a user would run.

The plain reference (what bgflow's ``DiffEqFlow`` with ``BruteForceEstimator`` does): a dopri5
solve of the augmented state ``(x, log p)`` whose divergence is one autograd backward pass per
coordinate of the full ``n*d`` coordinates. Against it, with the same vector field and weights
and the same prior draws, in one process, alternating (``--repeats`` rounds, medians):

* ``dopri5, subspace trace``: :class:`eqbg.flows.CNF` as configured by default (dopri5 at the
  same tolerance, ``(n-1)d`` backward passes on the CoM-free subspace): the same NFE.
* ``rk4 xN``: ``N`` fixed rk4 steps with ``4 N`` = the reference's NFE (rounded to an even
  ``N``), log q integrated by the solver (divergence at every stage).
* ``rk4 xN + simpson``: the same ``N`` steps for the positions, the divergence only at the
  ``N + 1`` grid nodes, composite Simpson's rule (``log_q_quadrature: simpson``); and with 1.5x
  and 2x the steps, which buy back the accuracy Simpson's coarser rule gives up.
* ``compiled``: the same, with the field through ``torch.compile`` (``compile_field=True``);
  the first call, which compiles, is timed apart.

Each method's log q error is that of its own samples against a tight ``log_prob`` of the same
configurations (dopri5 at atol = rtol = 1e-8 in float64, on the first ``--n-ref`` samples): the
error that enters importance weights.

Fields: trained ones from the pipeline (``--run dw4=results/runs/dw4/egnn/otfm/seed0``), else an
EGNN field of the default config's size trained here by flow matching for ``--train-steps``
steps on the pipeline's training data (``results/data/{system}/train.npz``) or, without it, on a
small split of the same reference sampler; a fresh field is near zero and no test of a solver.

Usage: ``python bench/bench_exact_sampling.py [--systems dw4 lj13] [--n 256 32] [--repeats 3]
[--run SYSTEM=RUN_DIR ...]``. Writes ``bench/out/bench_exact_sampling.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench_divergence import PlainDivField
from eqbg.data.dataset import make_reference_data
from eqbg.flows import CNF, ODESolver
from eqbg.flows.registry import build_flow
from eqbg.rundir import load_flow
from eqbg.io import provenance, write_json
from eqbg.losses import build_loss
from eqbg.systems import get_system

#: the default config's EGNN fields (config.yaml)
MODEL = {"dw4": {"name": "egnn", "hidden": 64, "n_layers": 5},
         "lj13": {"name": "egnn", "hidden": 32, "n_layers": 3}}
TOL = 1e-5  #: the default config's sampling tolerance before rk4 + Simpson (dopri5, atol = rtol)
REFERENCE = "reference: dopri5, per-coordinate trace"
#: the sampling stage before issue 23: the library's dopri5 (subspace trace, solver quadrature)
STAGE_BEFORE = "dopri5, subspace trace"
STAGE_NOW = "sampling stage now: rk4 x{steps} + simpson (config.yaml)"


def _config_solver(name: str) -> ODESolver:
    """The solver of the default config's EGNN CNF sampling on ``name`` (its fm run's)."""
    import yaml

    from eqbg.pipeline import Run, sample_params

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    s = sample_params(config, Run(name, "egnn", "fm", 0))["settings"]
    return ODESolver(s["method"], s.get("atol", TOL), s.get("rtol", TOL), n_steps=s.get("n_steps"),
                     log_q_quadrature=s.get("log_q_quadrature", "solver"))


def trained_flow(name: str, run: str | None, steps: int) -> tuple[CNF, str]:
    """The CNF to time: a pipeline run's, or one trained here by flow matching."""
    ode = {"method": "dopri5", "atol": TOL, "rtol": TOL}
    if run:
        flow, _ = load_flow(run, ode=ode)
        return flow.float(), f"trained run {run}"
    system = get_system(name)
    data_path = Path("results/data") / name / "train.npz"
    g = torch.Generator().manual_seed(0)
    if data_path.exists():
        source = f"{data_path}"
    else:  # the pipeline's reference sampler, with a small training split
        out = Path(__file__).parent / "out" / f"data_{name}"
        make_reference_data(name, {"splits": {"train": 2048, "val": 256, "test": 256}}, 0, out)
        data_path, source = out / "train.npz", f"reference data, seed 0 ({out})"
    data = torch.as_tensor(np.load(data_path)["x"], dtype=torch.float32)
    torch.manual_seed(0)
    flow = build_flow(system, MODEL[name], ode)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    objective = build_loss("fm", system, {"sigma": 0.01})
    for _ in range(steps):
        opt.zero_grad()
        batch = data[torch.randint(0, len(data), (128,), generator=g)]
        objective(flow, batch, generator=g).backward()
        opt.step()
    return flow.eval().requires_grad_(False), f"fm, {steps} steps on {source}"


def _sample(flow: nn.Module, n: int, solver: ODESolver, compile_field: bool = False):
    kw = {"compile_field": True} if compile_field else {}
    return flow.sample(n, generator=torch.Generator().manual_seed(0), solver=solver, **kw)


def bench_system(name: str, n: int, args) -> dict:
    flow, source = trained_flow(name, args.run.get(name), args.train_steps)
    plain = CNF(PlainDivField(flow.field), flow.prior, solver=flow.solver).eval()
    dopri = ODESolver("dopri5", TOL, TOL)
    print(f"{name}: {source}; {n} samples, 1 thread")

    # the reference's NFE decides the fixed-step budget (equal NFE)
    probe = _sample(plain, n, dopri)
    steps = max(2, 2 * round(probe.nfe / 8))
    mid = 2 * round(1.5 * steps / 2)
    simpson = {k: ODESolver("rk4", n_steps=k, log_q_quadrature="simpson") for k in (steps, mid, 2 * steps)}
    methods = {  # label: (flow, solver, compile_field)
        REFERENCE: (plain, dopri, False),
        STAGE_BEFORE: (flow, dopri, False),
        "dopri5, subspace trace, compiled": (flow, dopri, True),
        f"rk4 x{steps}": (flow, ODESolver("rk4", n_steps=steps), False),
        f"rk4 x{steps} + simpson": (flow, simpson[steps], False),
        f"rk4 x{mid} + simpson": (flow, simpson[mid], False),
        f"rk4 x{2 * steps} + simpson": (flow, simpson[2 * steps], False),
        f"rk4 x{mid} + simpson, compiled": (flow, simpson[mid], True),
    }
    # the default pipeline's sampling stage before (dopri5 1e-5 with the solver's quadrature,
    # the library default) and now (config.yaml's sample settings of this system's EGNN CNFs)
    now = _config_solver(name)
    stage_now = STAGE_NOW.format(steps=now.n_steps)
    methods[stage_now] = (flow, now, False)
    if args.stage_only:
        methods = {k: v for k, v in methods.items() if k in (REFERENCE, STAGE_BEFORE, stage_now)}
    # torch.compile's one-off compilation (per graph and batch shape) is timed apart
    compile_s = {}
    for label, (f, solver, comp) in methods.items():
        if comp:
            t0 = time.perf_counter()
            _sample(f, n, solver, comp)
            compile_s[label] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in methods}
    results = {}
    for _ in range(args.repeats):  # alternate the methods round by round
        for label, (f, solver, comp) in methods.items():
            t0 = time.perf_counter()
            results[label] = _sample(f, n, solver, comp)
            times[label].append(time.perf_counter() - t0)

    # the error that enters importance weights: each method's log q of its own samples against
    # a tight float64 log_prob of the same configurations (the first n_ref of them)
    m = min(args.n_ref, n)
    tight = ODESolver("dopri5", 1e-8, 1e-8)
    flow.double()
    refs = {k: flow.log_prob(r.x[:m].double(), solver=tight) for k, r in results.items()}
    flow.float()
    base = statistics.median(times[REFERENCE])
    rows = []
    for label, (f, solver, comp) in methods.items():
        r = results[label]
        err = (r.log_q[:m].double() - refs[label]).abs()
        sec = statistics.median(times[label])
        n_div = (solver.n_steps + 1) if solver.log_q_quadrature == "simpson" else r.nfe
        row = {"system": name, "method": label, "n": n, "seconds": sec, "samples_per_s": n / sec,
               "speedup": base / sec, "nfe": r.nfe, "divergence_evaluations": n_div,
               "log_q_err_max": float(err.max()), "log_q_err_median": float(err.median()),
               "first_call_with_compilation_s": compile_s.get(label)}
        rows.append(row)
        print(f"  {label:42s} {sec:8.2f} s  {n / sec:8.2f} samples/s  x{base / sec:5.2f}  "
              f"NFE {r.nfe:4d}  div evals {n_div:4d}  |d log q| max {row['log_q_err_max']:.1e} "
              f"median {row['log_q_err_median']:.1e}"
              + (f"  (first call, compiling: {compile_s[label]:.0f} s)" if label in compile_s else ""))
    return {"system": name, "source": source, "rk4_steps": steps, "rows": rows,
            "times": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", nargs="+", default=["dw4", "lj13"], choices=list(MODEL))
    ap.add_argument("--n", nargs="+", type=int, default=[256, 32], help="samples per system")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-ref", type=int, default=32, help="samples checked against the tight reference")
    ap.add_argument("--train-steps", type=int, default=500)
    ap.add_argument("--run", nargs="*", default=[], help="SYSTEM=RUN_DIR trained flows")
    ap.add_argument("--stage-only", action="store_true",
                    help="only the reference and the sampling stage before and now")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bench_exact_sampling.json")
    args = ap.parse_args()
    args.run = dict(r.split("=", 1) for r in args.run)
    torch.set_num_threads(1)
    start = time.perf_counter()
    sizes = dict(zip(args.systems, args.n + args.n[-1:] * len(args.systems)))
    out = [bench_system(s, sizes[s], args) for s in args.systems]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"systems": out, "settings": {k: str(v) for k, v in vars(args).items()},
                          "total_s": time.perf_counter() - start,
                          "meta": provenance(script="bench_exact_sampling.py", threads=1)})
    print(f"total {time.perf_counter() - start:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
