"""Interatomic distances, pooled over all pairs of a random subset of configurations: W2 between
samples and test data, plain and reweighted, and their histograms. Pair distances are physical
only for particle systems (not for GMM-40 or Many-Well-32 coordinates)."""

from __future__ import annotations

from typing import Any

import numpy as np

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.distributions import common_bins, density_histogram, pairwise_distances, wasserstein_1d
from eqbg.evaluation.metric import MetricResult
from eqbg.evaluation.nll import subset_indices

KEYS = ("distance_w2", "distance_w2_reweighted", "distance_n_data", "distance_n_flow")


def is_particle_system(ctx: EvaluationContext) -> bool:
    """Two or more particles, CoM-free."""
    return ctx.x.shape[1] >= 2 and bool(ctx.system.com_free)


def distance_distribution(ctx: EvaluationContext) -> MetricResult:
    """``distance_w2`` (valid samples), ``distance_w2_reweighted``; ``distance_*`` histograms."""
    cfg, ok, wbar = ctx.cfg, ctx.ok, ctx.weights
    i_flow = subset_indices(ctx.n, cfg["distance_n"], cfg["distance_seed"])
    i_flow = i_flow[ok[i_flow]]
    i_data = subset_indices(ctx.m, cfg["distance_n"], cfg["distance_seed"])
    d_data = pairwise_distances(ctx.x_test[i_data])
    d_flow = pairwise_distances(ctx.x[i_flow]) if i_flow.size else np.zeros((0, d_data.shape[1]))
    w_pairs = np.repeat(wbar[i_flow][:, None], d_data.shape[1], axis=1)
    metrics: dict[str, Any] = {}
    if d_flow.size:
        metrics["distance_w2"] = wasserstein_1d(d_flow, d_data, p=2)
        metrics["distance_w2_reweighted"] = (
            wasserstein_1d(d_flow, d_data, w_pairs, None, p=2) if w_pairs.sum() > 0 else float("nan")
        )
    else:
        metrics["distance_w2"] = metrics["distance_w2_reweighted"] = float("nan")
    metrics["distance_n_data"] = int(i_data.size)
    metrics["distance_n_flow"] = int(i_flow.size)
    bins = cfg["hist_bins"]
    edges = np.linspace(0.0, common_bins(d_data, bins=bins, quantile_range=(0.0, 1.0))[-1] * 1.25, bins + 1)
    arrays = {
        "distance_edges": edges,
        "distance_hist_data": density_histogram(d_data, edges),
        "distance_hist_flow": density_histogram(d_flow, edges),
        "distance_hist_reweighted": density_histogram(d_flow, edges, w_pairs if d_flow.size else None),
    }
    return metrics, arrays
