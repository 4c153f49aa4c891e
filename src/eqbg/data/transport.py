"""The transport-cost measurement of a system's data as a stage output (rule coupling_cost):
:func:`eqbg.ot.transport_cost.minibatch_transport_costs` on the training split, written as a
run-like ``metrics.json`` and ``eval.npz`` that the claims read."""

from __future__ import annotations

import time
from pathlib import Path

from eqbg.data.dataset import load_dataset
from eqbg.io import provenance, save_npz, write_json
from eqbg.ot.transport_cost import minibatch_transport_costs
from eqbg.systems import get_system

__all__ = ["TRANSPORT_COST_DEFAULTS", "write_transport_costs"]


#: settings of :func:`write_transport_costs` and their defaults
TRANSPORT_COST_DEFAULTS = {"batch_size": 64, "n_batches": 8, "seed": 0, "prior_scale": 1.0,
                           "max_iter": 20, "restarts": 0}


def write_transport_costs(system: str, train_npz: Path, settings: dict, system_options: dict,
                          *, out_metrics: Path, out_arrays: Path) -> dict:
    """:func:`minibatch_transport_costs` of a system's training data, written as a run-like
    ``metrics.json`` (batch means, settings, provenance) and ``eval.npz`` (per-batch arrays)."""
    unknown = set(settings) - set(TRANSPORT_COST_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown coupling settings {sorted(unknown)}; known: {sorted(TRANSPORT_COST_DEFAULTS)}")
    cfg = {**TRANSPORT_COST_DEFAULTS, **settings}
    sys_obj = get_system(system, **system_options)
    data = load_dataset(train_npz, system=sys_obj, split="train")
    start = time.perf_counter()
    costs = minibatch_transport_costs(data, sys_obj.atom_types, **cfg)
    metrics = {f"{k}_cost" if k in ("independent", "ot", "eqot") else k: float(v.mean()) for k, v in costs.items()}
    metrics.update(system=system, model="data", loss="coupling", seed=int(cfg["seed"]),
                   n_batches=int(cfg["n_batches"]), batch_size=int(cfg["batch_size"]),
                   time_s=time.perf_counter() - start,
                   provenance=provenance(stage="coupling_cost", settings=cfg, system_options=system_options))
    save_npz(out_arrays, **costs)
    write_json(out_metrics, metrics)
    return metrics
