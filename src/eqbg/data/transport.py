"""The transport-cost measurement of a system's data as a stage output (rule coupling_cost):
:func:`eqbg.ot.transport_cost.minibatch_transport_costs` on the training split, written as a
run-like ``metrics.json`` and ``eval.npz`` that the claims read."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from eqbg.data.dataset import load_dataset
from eqbg.io import provenance, save_npz, write_json
from eqbg.ot.transport_cost import minibatch_transport_costs
from eqbg.systems import get_system

__all__ = ["TransportCostSettings", "TRANSPORT_COST_DEFAULTS", "write_transport_costs"]


@dataclass
class TransportCostSettings:
    """Transport cost of minibatch OT and equivariant-OT couplings on a system's training data
    (config ``systems.<name>.coupling``; :func:`write_transport_costs`)."""

    batch_size: int = 64  #: prior and data configurations per minibatch
    n_batches: int = 8  #: minibatches measured
    seed: int = 0  #: seeds the batches and the prior draws
    prior_scale: float = 1.0  #: std of the Gaussian prior batch
    max_iter: int = 20  #: equivariant-OT search: Hungarian/Kabsch alternations per pair
    restarts: int = 0  #: equivariant-OT search: further descents from other starting rotations


#: :class:`TransportCostSettings`' defaults as a dict
TRANSPORT_COST_DEFAULTS: dict = dataclasses.asdict(TransportCostSettings())


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
