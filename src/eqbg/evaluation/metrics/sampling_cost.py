"""What the samples cost: sampling wall time, samples and effective samples per second, NFE,
path length, energy evaluations; and the training's time, steps and energy evaluations
(:func:`eqbg.evaluation.cost.training_cost`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.cost import training_cost
from eqbg.evaluation.metric import MetricResult

KEYS = (
    "sampling_wall_time_s", "samples_per_s", "ess_per_s", "nfe_total", "nfe", "path_length",
    "energy_eval_time_s", "flow_energy_time_s", "energies_per_s", "n_energy_evals_eval",
    "train_time_s", "train_steps", "final_val_nll", "n_energy_evals_train",
)
OPTIONAL_KEYS = ("best_val_nll",)  # a training curve with validation NLLs


def _scalar(value: Any) -> float:
    """Mean of a scalar-or-array statistic stored in samples.npz (NaN if absent/empty)."""
    if value is None:
        return float("nan")
    arr = np.asarray(value, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def sampling_cost(ctx: EvaluationContext) -> MetricResult:
    """Sampling and training cost; ``n_energy_evals_eval`` counts the test energies the other
    metrics computed, so this metric comes last."""
    samples, n = ctx.samples, ctx.n
    metrics: dict[str, Any] = {}
    wall = _scalar(samples.get("wall_time_s"))
    metrics["sampling_wall_time_s"] = wall
    metrics["samples_per_s"] = n / wall if wall and math.isfinite(wall) and wall > 0 else float("nan")
    # What a user of a Boltzmann generator pays for: effective samples per second of the whole
    # sampling stage, the target energies of every sample included.
    cost_s = wall + ctx.flow_energy_time_s
    metrics["ess_per_s"] = ctx.ess * n / cost_s if math.isfinite(cost_s) and cost_s > 0 else float("nan")
    # sample_run sums NFE over integration batches: report it per batch (comparable across
    # batch sizes) and keep the total
    nfe_total = _scalar(samples.get("nfe"))
    n_batches = _scalar(samples.get("n_batches"))
    metrics["nfe_total"] = nfe_total
    metrics["nfe"] = nfe_total / n_batches if math.isfinite(n_batches) and n_batches > 0 else nfe_total
    metrics["path_length"] = _scalar(samples.get("path_length"))
    metrics["energy_eval_time_s"] = ctx.energy_time_s
    metrics["flow_energy_time_s"] = ctx.flow_energy_time_s
    # target energies of the flow's samples per second (OpenMM for alanine dipeptide)
    flow_time = ctx.flow_energy_time_s
    metrics["energies_per_s"] = n / flow_time if flow_time > 0 else float("nan")
    metrics["n_energy_evals_eval"] = int(n + np.isfinite(ctx.u_data_all).sum())
    metrics.update(training_cost(ctx.train_curve, ctx.loss))
    return metrics, {}
