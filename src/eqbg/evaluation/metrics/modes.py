"""Mode coverage of targets with known modes (GMM-40: 40 means; Many-Well-32: 2^16 sign
patterns): how many distinct modes the valid samples reach (FAB's point: ESS alone hides dropped
modes)."""

from __future__ import annotations

import torch

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.metric import MetricResult

KEYS = ("modes_reached", "n_modes", "mode_coverage", "mode_coverage_bound")


def mode_coverage(ctx: EvaluationContext) -> MetricResult:
    """Modes reached, their fraction and its bound; ``mode_index`` per valid sample (the claims
    bootstrap it)."""
    ok = ctx.ok
    modes = ctx.system.mode_index(torch.as_tensor(ctx.x[ok]))
    reached = int(torch.unique(modes[modes >= 0]).numel())
    n_modes = int(ctx.system.n_modes)
    # with fewer valid samples than modes (Many-Well-32: 2^16) the coverage cannot exceed
    # n_valid / n_modes: report that bound beside it
    n_valid = int(ok.sum())
    metrics = {
        "modes_reached": reached, "n_modes": n_modes, "mode_coverage": reached / n_modes,
        "mode_coverage_bound": min(n_valid, n_modes) / n_modes,
    }
    return metrics, {"mode_index": modes.cpu().numpy()}
