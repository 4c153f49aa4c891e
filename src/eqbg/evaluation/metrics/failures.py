"""Sample counts and failed samples: non-finite energy, energy above the cap, non-finite log q."""

from __future__ import annotations

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.metric import MetricResult

KEYS = (
    "n_samples", "n_test", "n_failed", "frac_failed", "n_failed_nonfinite_energy",
    "n_failed_energy_above_cap", "n_failed_nonfinite_log_q", "energy_cap",
)


def failures(ctx: EvaluationContext) -> MetricResult:
    """How many samples failed and why; they stay in the ESS's ``n`` with weight ~0."""
    failed = ctx.failed
    return {
        "n_samples": ctx.n,
        "n_test": ctx.m,
        "n_failed": failed.n_failed,
        "frac_failed": failed.frac_failed,
        "n_failed_nonfinite_energy": failed.nonfinite_energy,
        "n_failed_energy_above_cap": failed.energy_above_cap,
        "n_failed_nonfinite_log_q": failed.nonfinite_log_q,
        "energy_cap": failed.energy_cap,
    }, {}
