"""FAB's bias of a quadratic expectation (GMM-40), in our convention and in FAB's
(:mod:`eqbg.evaluation.expectation`)."""

from __future__ import annotations

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.expectation import quadratic_bias_metrics
from eqbg.evaluation.metric import MetricResult

KEYS = (
    "quadratic_bias_weighted", "quadratic_bias_weighted_sem", "quadratic_bias_unweighted",
    "quadratic_bias_unweighted_sem", "quadratic_bias_weighted_fab", "quadratic_bias_unweighted_fab",
    "quadratic_bias_repeats", "quadratic_bias_samples_per_estimate",
)


def quadratic_bias(ctx: EvaluationContext) -> MetricResult:
    """Both conventions' biases of the system's test function from the weighted samples."""
    return quadratic_bias_metrics(ctx.system, ctx.x, ctx.log_w), {}
