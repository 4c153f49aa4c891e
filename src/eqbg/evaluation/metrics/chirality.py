"""Chiral systems (alanine dipeptide): E(3)-equivariant flows also generate D-alanine (mirror
images). The force field cannot tell them apart, so reweighting does not remove them: their share
is reported, and the dihedral observables read the configurations mirrored into L, weights
unchanged (:attr:`EvaluationContext.observable_positions`, exact for the symmetrised target)."""

from __future__ import annotations

import numpy as np

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.metric import MetricResult

KEYS = ("frac_d_chirality_flow", "frac_d_chirality_data", "n_mapped_d_to_l", "n_mapped_d_to_l_test")


def d_chirality(ctx: EvaluationContext) -> MetricResult:
    """Share of D configurations among the samples and the test data; ``chirality_flow``."""
    chir_flow = ctx.system.chirality(ctx.x)
    # of every drawn sample (failed energies included), as the unweighted dihedral observables
    finite = np.isfinite(chir_flow)
    metrics = {
        "frac_d_chirality_flow": float(np.mean(chir_flow[finite] < 0)) if finite.any() else float("nan"),
        "frac_d_chirality_data": float(np.mean(ctx.system.chirality(ctx.x_test) < 0)),
    }
    _, _, was_d, was_d_test = ctx.observable_positions
    metrics.update(n_mapped_d_to_l=int(was_d.sum()), n_mapped_d_to_l_test=int(was_d_test.sum()))
    return metrics, {"chirality_flow": chir_flow}
