"""What a run cost, in target-energy evaluations and seconds, split by where it was spent.

A Boltzmann generator pays for its samples four times: the reference data it trained on (the
data stage's sampler, pro rata for the configurations the run used), its training (losses that
call the energy: FAB's AIS, reverse KL), its sampling (the energy of every sample, for the
importance weights) and any refinement at evaluation (AIS from the flow). The same record,
divided by the run's effective samples, says what one effective sample cost -- the currency in
which a flow is compared with MCMC at the same budget (``eqbg.baselines.mcmc``).

Energy evaluations count one per configuration, with or without its gradient (MALA, HMC and
MD use one force evaluation per step; the papers and Aggarwal et al. 2025 count them alike).
The data stage's minimisation of the MCMC starts is not counted (it is not recorded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from eqbg.losses import LOSSES

__all__ = [
    "COST_LABELS", "COST_NOTES", "COST_PARTS", "DATA_STAGE_COST", "data_stage_cost", "run_cost", "per_effective_sample",
    "training_cost",
]

#: where a run's energy evaluations and seconds go, in pipeline order
COST_PARTS = ("data", "training", "sampling", "refinement")

#: table column labels of the cost record's keys the tables show
#: what the cost columns and the MCMC rows mean (under every per-system table and the headline)
COST_NOTES = (
    "Cost (eqbg.evaluation.cost): target-energy evaluations and seconds of the reference data the run trained on "
    "(the data stage's sampler, pro rata for its training configurations; exact samplers cost none), its training "
    "(FAB's AIS, reverse KL), sampling (one energy per sample) and refinement (AIS at evaluation); 'all' is their "
    "sum. Per eff. sample: divided by the effective samples, Kish ESS × n for a flow.",
    "mcmc rows: budget-matched MCMC (eqbg.baselines), MALA chains from the flows' prior (mala; alanine dipeptide: "
    "Langevin MD from the shipped structure, langevin) given the energy evaluations of the system's best flow "
    "(smallest reweighted E-W2): its sampling stage (variant sampling) or everything it cost (variant total). Its states carry uniform weights (rew. = unweighted); effective samples "
    "Σ n_kept/τ, τ the integrated autocorrelation time of the energy (Sokal); no Kish ESS or NLL; log Z err. "
    "(targets with a known log Z) by AIS from the same prior given the same budget again (HMC, geometric annealing).",
)


COST_LABELS = {
    "effective_samples": "eff. samples",
    "cost_energy_evals_total": "E-evals (all)",
    "energy_evals_per_effective_sample_sampling": "E-evals/eff. sample (sampling)",
    "energy_evals_per_effective_sample_total": "E-evals/eff. sample (all)",
    "cost_per_effective_sample_total_time_s": "s/eff. sample (all)",
}


def _mcmc_cost(d: Mapping[str, Any]) -> float:
    # every chain evaluates its initial state once, then one proposal per step
    return float(d["n_chains"]) * (float(d["steps_per_chain"]) + 1.0)


def _md_cost(d: Mapping[str, Any], settings: Mapping[str, Any]) -> float:
    # one force evaluation per integration step, equilibration included
    steps_per_ns = 1e6 / float(settings["timestep_fs"])
    equilibration = float(settings.get("equilibration_ps", 0.0)) * 1e-3 * int(d["n_trajectories"])
    return (float(d["simulated_ns_total"]) + equilibration) * steps_per_ns


#: reference sampler -> energy evaluations of its run, from ``provenance.json``
#: (``diagnostics``, ``settings``); exact samplers draw without evaluating the energy
DATA_STAGE_COST: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], float]] = {
    "mcmc": lambda d, s: _mcmc_cost(d),
    "md": _md_cost,
    "exact": lambda d, s: 0.0,
}


def data_stage_cost(provenance: Mapping[str, Any]) -> tuple[float, float, int]:
    """``(energy evaluations, seconds, configurations written)`` of a system's data stage.

    Args:
        provenance: the data stage's ``provenance.json`` (``sampler``, ``diagnostics``,
            ``settings``, ``files``).

    Raises:
        ValueError: a sampler :data:`DATA_STAGE_COST` does not know.
    """
    sampler = provenance.get("sampler")
    if sampler not in DATA_STAGE_COST:
        raise ValueError(f"data stage cost of sampler {sampler!r} unknown; known: {sorted(DATA_STAGE_COST)}")
    diagnostics = provenance.get("diagnostics", {})
    evals = DATA_STAGE_COST[sampler](diagnostics, provenance.get("settings", {}))
    seconds = float(diagnostics.get("wall_time_s", math.nan))
    n_configurations = sum(int(f["n"]) for f in provenance.get("files", {}).values())
    return evals, seconds, n_configurations


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def run_cost(metrics: Mapping[str, Any], data_provenance: Mapping[str, Any] | None) -> dict[str, float]:
    """A flow run's cost record: ``cost_energy_evals_<part>`` and ``cost_<part>_time_s`` for every
    part of :data:`COST_PARTS` and their ``_total``, and the per-effective-sample values
    (:func:`per_effective_sample`).

    Args:
        metrics: the run's evaluation metrics (``n_train``: configurations it trained on, None
            for energy-only losses; ``n_energy_evals_train``, ``train_time_s``, ``ess_n``,
            ``sampling_wall_time_s``, ``flow_energy_time_s``, ``n_energy_evals_ais``,
            ``ais_time_s``, ``ess``).
        data_provenance: the system's data ``provenance.json`` (None: no data cost known).
    """
    n_train = metrics.get("n_train")
    data_evals = data_s = 0.0
    if n_train:
        if data_provenance is None:
            data_evals = data_s = math.nan
        else:
            evals, seconds, n_made = data_stage_cost(data_provenance)
            share = float(n_train) / n_made
            data_evals, data_s = evals * share, seconds * share
    n_samples = _number(metrics.get("ess_n"))
    record = {
        "cost_energy_evals_data": data_evals,
        "cost_data_time_s": data_s,
        "cost_energy_evals_training": _number(metrics.get("n_energy_evals_train")),
        "cost_training_time_s": _number(metrics.get("train_time_s")),
        "cost_energy_evals_sampling": n_samples,
        "cost_sampling_time_s": _number(metrics.get("sampling_wall_time_s")) + _number(metrics.get("flow_energy_time_s")),
        "cost_energy_evals_refinement": (
            _number(metrics.get("n_energy_evals_ais", 0.0)) + _number(metrics.get("n_energy_evals_ais_tuning", 0.0))
        ),
        "cost_refinement_time_s": _number(metrics.get("ais_time_s", 0.0)),
    }
    record["cost_energy_evals_total"] = sum(record[f"cost_energy_evals_{p}"] for p in COST_PARTS)
    record["cost_total_time_s"] = sum(record[f"cost_{p}_time_s"] for p in COST_PARTS)
    effective = _number(metrics.get("ess")) * n_samples
    record.update(per_effective_sample(record, effective))
    return record


def per_effective_sample(record: Mapping[str, float], effective_samples: float) -> dict[str, float]:
    """``effective_samples`` and, for the sampling stage alone and for everything, energy
    evaluations (``energy_evals_per_effective_sample_<part>``) and seconds
    (``cost_per_effective_sample_<part>_time_s``) per effective sample (inf when nothing was
    effective)."""
    out = {"effective_samples": effective_samples}
    for part in ("sampling", "total"):
        for key, cost in ((f"energy_evals_per_effective_sample_{part}", record[f"cost_energy_evals_{part}"]),
                          (f"cost_per_effective_sample_{part}_time_s", record[f"cost_{part}_time_s"])):
            out[key] = cost / effective_samples if effective_samples > 0 else math.inf
    return out


def training_cost(train_curve: pd.DataFrame | None, loss: str | None) -> dict[str, Any]:
    """Training time and target-energy evaluations from ``train.csv``.

    ``train_time_s`` is the largest ``wall_time_s`` (the curve records cumulative wall time).
    ``n_energy_evals_train`` is the last ``n_energy_evals`` entry when the curve records it,
    else 0 for a registered loss that never evaluates the energy, NaN (unknown) otherwise.
    """
    out: dict[str, Any] = {"train_time_s": float("nan"), "train_steps": 0, "final_val_nll": float("nan")}
    if train_curve is not None and len(train_curve):
        if "wall_time_s" in train_curve:
            out["train_time_s"] = float(pd.to_numeric(train_curve["wall_time_s"], errors="coerce").max())
        if "step" in train_curve:
            out["train_steps"] = int(pd.to_numeric(train_curve["step"], errors="coerce").max())
        if "val_nll" in train_curve:
            val = pd.to_numeric(train_curve["val_nll"], errors="coerce").dropna()
            if len(val):
                out["final_val_nll"] = float(val.iloc[-1])
                out["best_val_nll"] = float(val.min())
    if train_curve is not None and "n_energy_evals" in train_curve and len(train_curve):
        out["n_energy_evals_train"] = float(pd.to_numeric(train_curve["n_energy_evals"], errors="coerce").max())
    elif loss in LOSSES and not LOSSES[loss].cls.needs_energy:
        out["n_energy_evals_train"] = 0
    else:
        out["n_energy_evals_train"] = float("nan")
    return out
