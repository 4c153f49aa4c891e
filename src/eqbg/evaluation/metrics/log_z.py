"""The importance-sampling estimate of log Z and its error, for targets whose normaliser is known
(GMM-40, Many-Well-32; FAB and fab-jax report ``|log Z_hat - log Z|``)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.metric import MetricResult

KEYS = ("log_z", "log_z_estimate", "log_z_error")


def knows_log_z(ctx: EvaluationContext) -> bool:
    """The system knows its log Z and some weight is finite."""
    return getattr(ctx.system, "log_z", None) is not None and bool(np.isfinite(ctx.log_w).any())


def log_z_error(ctx: EvaluationContext) -> MetricResult:
    """``log_z_estimate = logsumexp(log w) - log n`` and ``log_z_error`` = estimate - truth."""
    log_z = float(ctx.system.log_z)
    log_z_hat = float(logsumexp(ctx.log_w) - math.log(ctx.n))
    return {"log_z": log_z, "log_z_estimate": log_z_hat, "log_z_error": log_z_hat - log_z}, {}
