"""The reverse effective sample size: Kish's ESS of the importance weights, with a percentile
bootstrap interval (failed samples stay in ``n`` with weight ~0)."""

from __future__ import annotations

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.metric import MetricResult
from eqbg.evaluation.weights import bootstrap_ess, kish_ess

#: what the column means (under every per-system table)
NOTES = (
    "ESS: Kish (Σw)²/(nΣw²) over all generated samples, failed samples included with weight ≈ 0.",
)

KEYS = ("ess", "ess_n", "ess_ci_low", "ess_ci_high", "ess_ci_level", "ess_bootstrap_reps")


def reverse_ess(ctx: EvaluationContext) -> MetricResult:
    """``ess`` (a fraction of ``ess_n`` samples) and its interval; the bootstrap replicates go to
    ``eval.npz`` as ``ess_bootstrap``."""
    cfg = ctx.cfg
    ess, ess_n = kish_ess(ctx.log_w)
    low, high, reps = bootstrap_ess(
        ctx.log_w, level=cfg["bootstrap_level"], reps=cfg["bootstrap_reps"], seed=cfg["bootstrap_seed"]
    )
    metrics = {
        "ess": ess, "ess_n": ess_n, "ess_ci_low": low, "ess_ci_high": high,
        "ess_ci_level": cfg["bootstrap_level"], "ess_bootstrap_reps": cfg["bootstrap_reps"],
    }
    return metrics, {"ess_bootstrap": reps}
