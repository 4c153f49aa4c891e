"""One-dimensional distribution metrics: Wasserstein distances, histograms, pair distances.

1-D Wasserstein distances are computed exactly for (weighted) empirical measures through their
quantile functions: ``W_p^p = int_0^1 |F^{-1}(t) - G^{-1}(t)|^p dt``.  Both quantile functions
are step functions that change only at cumulative-weight breakpoints, so the integral is a finite
sum over the union of breakpoints.
"""

from __future__ import annotations

import numpy as np
import torch


def _prepare(values: np.ndarray, weights: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{name}: empty sample")
    if weights is None:
        weights = np.full(values.size, 1.0 / values.size)
    else:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.shape != values.shape:
            raise ValueError(f"{name}: weights {weights.shape} do not match values {values.shape}")
        if (weights < 0).any() or not np.isfinite(weights).all():
            raise ValueError(f"{name}: weights must be finite and non-negative")
        total = weights.sum()
        if total <= 0:
            raise ValueError(f"{name}: weights sum to zero")
        weights = weights / total
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: non-finite values carry positive weight")
    order = np.argsort(values, kind="stable")
    return values[order], weights[order]


def wasserstein_1d(
    u: np.ndarray,
    v: np.ndarray,
    u_weights: np.ndarray | None = None,
    v_weights: np.ndarray | None = None,
    p: float = 2.0,
) -> float:
    """Exact ``W_p`` between two (weighted) 1-D empirical distributions.

    Args:
        u, v: samples (any shape; flattened).
        u_weights, v_weights: non-negative weights (normalised internally); uniform if None.
            Entries of zero weight are ignored, so they may hold non-finite values.
        p: order, ``p >= 1``.

    Returns:
        ``(int_0^1 |F_u^{-1}(t) - F_v^{-1}(t)|^p dt)^(1/p)``, in the units of the samples.
    """
    if p < 1:
        raise ValueError(f"Wasserstein order must be >= 1, got {p}")
    xu, wu = _prepare(u, u_weights, "u")
    xv, wv = _prepare(v, v_weights, "v")
    cu, cv = np.cumsum(wu), np.cumsum(wv)
    cu[-1] = cv[-1] = 1.0  # exact normalisation: round-off must not leave t > F(max)
    breaks = np.union1d(cu, cv)
    lengths = np.diff(np.concatenate([[0.0], breaks]))
    mids = breaks - 0.5 * lengths  # evaluate quantiles inside each interval, away from jumps
    qu = xu[np.minimum(np.searchsorted(cu, mids, side="left"), xu.size - 1)]
    qv = xv[np.minimum(np.searchsorted(cv, mids, side="left"), xv.size - 1)]
    return float(np.sum(lengths * np.abs(qu - qv) ** p) ** (1.0 / p))


def pairwise_distances(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """All interatomic distances ``|x_i - x_j|`` (i < j) of each configuration.

    Args:
        x: ``(B, n, d)`` positions.

    Returns:
        ``(B, n(n-1)/2)`` float64 distances, in the positions' length unit.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"positions must have shape (batch, n_particles, dim), got {x.shape}")
    i, j = np.triu_indices(x.shape[1], k=1)
    return np.linalg.norm(x[:, i, :] - x[:, j, :], axis=-1)


def common_bins(*samples: np.ndarray, bins: int = 100, quantile_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Shared histogram edges spanning the finite values of all ``samples``.

    ``quantile_range`` trims each sample's range (e.g. ``(0.001, 0.999)``) so that a few
    outlying generated energies do not squash the histogram.
    """
    lows, highs = [], []
    for s in samples:
        s = np.asarray(s, dtype=np.float64).ravel()
        s = s[np.isfinite(s)]
        if s.size:
            lo, hi = np.quantile(s, quantile_range)
            lows.append(lo)
            highs.append(hi)
    if not lows:
        raise ValueError("no finite values to bin")
    lo, hi = min(lows), max(highs)
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, bins + 1)


def density_histogram(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Histogram normalised to a density over ``edges`` (mass outside the edges is counted in
    the normalisation, so densities of samples with outliers integrate to less than 1)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if weights is None:
        weights = np.ones_like(values)
    weights = np.asarray(weights, dtype=np.float64).ravel()
    finite = np.isfinite(values) & (weights > 0)
    total = weights[finite].sum()
    counts, _ = np.histogram(values[finite], bins=edges, weights=weights[finite])
    if total <= 0:
        return np.zeros(len(edges) - 1)
    return counts / (total * np.diff(edges))


def histogram_kl(p: np.ndarray, q: np.ndarray, bin_volume: float, eps: float = 1e-10) -> float:
    """``KL(p || q)`` in nats of two histograms over the same bins, in the EACF/FAB authors'
    convention (EACF ``eacf/train/eval_aldp.py``): with densities ``h = prob / bin_volume``,
    ``KL = sum_i prob_p,i log((h_p,i + eps) / (h_q,i + eps))``, ``eps`` inside the log only, so
    an empty bin of ``q`` costs ``log(h_p / eps)`` per unit of ``p``'s mass there (adding ``eps``
    to the probabilities and renormalising instead charged ``log(1 / bin_volume)`` less: 3.5 nats
    per unit of mass for 200 bins on [-pi, pi], 4.6 for 64 x 64).

    Args:
        p, q: histograms (counts, probabilities or densities; any shape, normalised here).
        bin_volume: length (area) of one bin, e.g. ``2 pi / 200`` for 200 bins of an angle.
        eps: the authors' 1e-10.

    Returns:
        The KL; NaN when either histogram is empty (no samples).
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"histograms must have the same bins, got {p.size} and {q.size}")
    if not (p.sum() > 0 and q.sum() > 0):
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log((p / bin_volume + eps) / (q / bin_volume + eps))))
