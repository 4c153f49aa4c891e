"""Alanine dipeptide observables: Ramachandran histograms, the fractions of samples in the
alpha_R / beta / phi > 0 regions, and the free-energy difference between the two metastable phi
basins (the dihedrals themselves: ``eqbg.systems.dihedrals``)."""

from __future__ import annotations

import numpy as np

from eqbg.evaluation.weights import normalised_weights


def ramachandran_histogram(
    phi: np.ndarray, psi: np.ndarray, weights: np.ndarray | None = None, bins: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised 2-D histogram (probability per bin) of ``(phi, psi)`` on ``[-pi, pi]^2``.

    Returns:
        ``(hist (bins, bins) indexed [phi, psi], edges (bins+1,))``.
    """
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    hist, _, _ = np.histogram2d(phi, psi, bins=[edges, edges], weights=w)
    total = hist.sum()
    return (hist / total if total > 0 else hist), edges


#: psi band (radians) of the alpha_R region at phi < 0; the rest of phi < 0 is beta (C5 / PII).
ALPHA_R_PSI = (np.radians(-120.0), np.radians(50.0))


def ramachandran_basin_fractions(phi: np.ndarray, psi: np.ndarray) -> dict[str, float]:
    """Unweighted fractions of ``(phi, psi)`` (radians, shape ``(N,)``) in three regions.

    ``alpha_R``: phi < 0 and -120 < psi < 50 degrees; ``beta``: phi < 0 otherwise (a NaN psi
    too); ``phi>0``: alpha_L and C7ax. They sum to one but for phi == 0 exactly and NaN phi,
    which count in none. L-alanine's convention: map D samples into L first.
    """
    phi, psi = np.asarray(phi, dtype=np.float64), np.asarray(psi, dtype=np.float64)
    left = phi < 0
    in_band = (psi > ALPHA_R_PSI[0]) & (psi < ALPHA_R_PSI[1])
    return {"alpha_R": float(np.mean(left & in_band)), "beta": float(np.mean(left & ~in_band)),
            "phi>0": float(np.mean(phi > 0))}


def basin_free_energy_difference(
    phi: np.ndarray, log_w: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Free-energy difference between the phi > 0 and phi < 0 basins, in kT.

    ``dF = F(phi>0) - F(phi<0) = -log(P(phi>0) / P(phi<0))``, with ``P`` the (self-normalised
    importance-weighted, if ``log_w`` is given) fraction of samples.  The standard error follows
    from the delta method: ``Var(P+) ~ sum_i wbar_i^2 (1[phi_i>0] - P+)^2`` (``1/n`` weights
    give the binomial ``P+(1-P+)/n``) and ``d dF / d P+ = -(1/P+ + 1/P-)``.  For correlated
    (MD) samples this error is a lower bound.

    Returns:
        ``(dF, se, p_positive)``; ``dF`` is +-inf when one basin is empty.
    """
    phi = np.asarray(phi, dtype=np.float64)
    if log_w is None:
        wbar = np.full(phi.size, 1.0 / phi.size)
    else:
        wbar = normalised_weights(log_w)
    pos = (phi > 0).astype(np.float64)
    p_pos = float(np.sum(wbar * pos))
    p_neg = 1.0 - p_pos
    if p_pos <= 0.0 or p_neg <= 0.0:
        return (float("inf") if p_pos <= 0 else float("-inf")), float("nan"), p_pos
    var = float(np.sum(wbar**2 * (pos - p_pos) ** 2))
    d_f = -np.log(p_pos / p_neg)
    se = np.sqrt(var) * (1.0 / p_pos + 1.0 / p_neg)
    return float(d_f), float(se), p_pos
