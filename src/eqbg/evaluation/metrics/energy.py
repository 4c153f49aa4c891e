"""Energy distributions of samples and test data: Wasserstein distances, means, histograms
(failed samples are left out of the unweighted flow side; they weigh zero in the reweighted)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.distributions import density_histogram, wasserstein_1d
from eqbg.evaluation.metric import MetricResult
from eqbg.evaluation.weights import reweighted_mean

KEYS = (
    "energy_test_n", "energy_w1", "energy_w2", "energy_w1_reweighted", "energy_w2_reweighted",
    "mean_energy_data", "mean_energy_data_err", "mean_energy_flow", "mean_energy_flow_err",
    "mean_energy_reweighted", "mean_energy_reweighted_err",
)


def energy_bins(u_data: np.ndarray, u_flow: np.ndarray, bins: int) -> np.ndarray:
    """Histogram edges covering the central 99.8 % of the data energies and the central 98 % of
    the flow energies, reaching at most two data spans beyond the data (a bad model, or a long
    data tail, must not squash the plot; mass outside the edges still counts in the densities'
    normalisation)."""
    lo, hi = (float(v) for v in np.quantile(u_data, [0.001, 0.999]))
    span = max(hi - lo, 1e-6)
    if u_flow.size:
        qlo, qhi = np.quantile(u_flow, [0.01, 0.99])
        lo = max(min(lo, float(qlo)), lo - 2 * span)
        hi = min(max(hi, float(qhi)), hi + 2 * span)
    return np.linspace(lo, hi, bins + 1)


def _mean_err(u: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (NaN where undefined)."""
    mean = float(u.mean()) if u.size else float("nan")
    return mean, float(u.std(ddof=1) / math.sqrt(u.size)) if u.size > 1 else float("nan")


def energy_distribution(ctx: EvaluationContext) -> MetricResult:
    """W1/W2 of the energies, plain and reweighted; means; ``energy_*`` arrays and histograms."""
    u_data, u_flow, log_w, wbar = ctx.u_data, ctx.u_flow, ctx.log_w, ctx.weights
    u_ok = u_flow[ctx.ok]
    nan = float("nan")
    metrics: dict[str, Any] = {"energy_test_n": int(u_data.size)}
    if u_ok.size:
        metrics["energy_w1"] = wasserstein_1d(u_ok, u_data, p=1)
        metrics["energy_w2"] = wasserstein_1d(u_ok, u_data, p=2)
    else:
        metrics["energy_w1"] = metrics["energy_w2"] = nan
    if wbar.sum() > 0:
        # zero-weight samples are ignored, so failed (non-finite) energies cannot leak in
        metrics["energy_w1_reweighted"] = wasserstein_1d(u_flow, u_data, wbar, None, p=1)
        metrics["energy_w2_reweighted"] = wasserstein_1d(u_flow, u_data, wbar, None, p=2)
        mean_rw, err_rw = reweighted_mean(u_flow, log_w)
    else:
        metrics["energy_w1_reweighted"] = metrics["energy_w2_reweighted"] = nan
        mean_rw, err_rw = nan, nan
    metrics["mean_energy_data"], metrics["mean_energy_data_err"] = _mean_err(u_data)
    metrics["mean_energy_flow"], metrics["mean_energy_flow_err"] = _mean_err(u_ok)
    metrics["mean_energy_reweighted"] = mean_rw
    metrics["mean_energy_reweighted_err"] = err_rw
    edges = energy_bins(u_data, u_ok, ctx.cfg["hist_bins"])
    arrays = {
        "energy_data": u_data,
        "energy_flow": u_flow,
        "log_w": log_w,
        "failed": ctx.failed.mask,
        "energy_edges": edges,
        "energy_hist_data": density_histogram(u_data, edges),
        "energy_hist_flow": density_histogram(u_ok, edges),
        "energy_hist_reweighted": density_histogram(u_flow, edges, wbar),
    }
    return metrics, arrays
