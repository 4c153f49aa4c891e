"""FAB's bias of a quadratic expectation (GMM-40), in our convention and in FAB's
(:mod:`eqbg.evaluation.expectation`)."""

from __future__ import annotations

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.expectation import quadratic_bias_metrics
from eqbg.evaluation.metric import MetricResult

#: what the columns mean (under every per-system table)
NOTES = (
    "bias E[f] (GMM-40): |E_hat[f] - E[f]| / E[f] of FAB's quadratic f from 1000-sample estimates, against the "
    "exact E[f] of the same f (ours), and in FAB's convention (FAB conv.): against the expectation of f's float32 "
    "draw, 8.7 % away, the weighted column mean |bias|, the unweighted one |mean bias| (fab-torch "
    "evaluation_expectation_quadratic_func.py). FAB's published biases are shown beside the FAB-convention "
    "columns only; the 'target / exact' row is exact target samples (100 x 1000), the floor of either convention.",
)

KEYS = (
    "quadratic_bias_weighted", "quadratic_bias_weighted_sem", "quadratic_bias_unweighted",
    "quadratic_bias_unweighted_sem", "quadratic_bias_weighted_fab", "quadratic_bias_unweighted_fab",
    "quadratic_bias_repeats", "quadratic_bias_samples_per_estimate",
)


def quadratic_bias(ctx: EvaluationContext) -> MetricResult:
    """Both conventions' biases of the system's test function from the weighted samples."""
    return quadratic_bias_metrics(ctx.system, ctx.x, ctx.log_w), {}
