"""Convergence diagnostics for reference samplers.

All functions are plain NumPy / torch and know nothing about systems: they take chains of scalars
(usually the reduced energy) or an energy callable plus configurations.

* :func:`integrated_autocorrelation_time` -- IAT per chain from the FFT autocorrelation with
  Sokal's automatic window (or Geyer's initial positive sequence).
* :func:`split_rhat` -- Gelman-Rubin potential scale reduction on split chains, optionally
  rank-normalised (Vehtari et al. 2021).
* :func:`configurational_temperature` -- ``<|grad u|^2> / <laplacian u>``, which is exactly 1 for
  samples of ``exp(-u)`` (integration by parts) and ``T`` for samples of ``exp(-u/T)``; the
  Laplacian is an exact trace from one double-backward pass per coordinate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import rankdata

__all__ = [
    "autocorrelation",
    "integrated_autocorrelation_time",
    "effective_sample_size",
    "split_rhat",
    "configurational_temperature",
    "grad_and_laplacian",
    "ratio_with_error",
]


def autocorrelation(chains: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation function per chain via FFT.

    Args:
        chains: ``(n_chains, n)`` or ``(n,)`` scalar series.

    Returns:
        ``(n_chains, n)`` (or ``(n,)``) with ``rho[..., 0] == 1``; a constant chain gives
        ``rho = [1, 0, 0, ...]`` (it carries no autocorrelation information).
    """
    x = np.asarray(chains, dtype=np.float64)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    n = x.shape[-1]
    x = x - x.mean(axis=-1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()  # zero padding removes the circular wrap-around
    f = np.fft.rfft(x, n=size, axis=-1)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=-1)[:, :n]
    var = acov[:, :1]
    rho = np.zeros_like(acov)
    ok = var[:, 0] > 0
    rho[ok] = acov[ok] / var[ok]
    rho[~ok, 0] = 1.0
    return rho[0] if squeeze else rho


def _sokal_tau(rho: np.ndarray, c: float) -> float:
    # tau(M) = 1 + 2 sum_{t=1}^{M} rho(t); the window is the smallest M with M >= c * tau(M)
    # (Sokal 1997; the choice emcee uses). If no such M exists the chain is too short and the
    # estimate at the largest lag is returned -- the caller's ESS check will flag it.
    taus = 2.0 * np.cumsum(rho) - 1.0
    m = np.arange(len(rho))
    window = m >= c * taus
    if np.any(window):
        return float(taus[np.argmax(window)])
    return float(taus[-1])


def _geyer_tau(rho: np.ndarray) -> float:
    # Geyer's initial positive (monotone) sequence: Gamma_k = rho(2k) + rho(2k+1) summed while > 0,
    # made non-increasing; tau = -1 + 2 sum Gamma_k.
    n = len(rho) - (len(rho) % 2)
    pairs = rho[:n].reshape(-1, 2).sum(axis=1)
    neg = np.nonzero(pairs <= 0)[0]
    k = int(neg[0]) if len(neg) else len(pairs)
    gam = np.minimum.accumulate(pairs[:k]) if k else pairs[:0]
    # floor at 1/n: an antithetic chain can have tau < 1, but never below that
    return float(max(-1.0 + 2.0 * gam.sum(), 1.0 / len(rho)))


def integrated_autocorrelation_time(
    chains: np.ndarray, *, method: str = "sokal", c: float = 5.0, pooled: bool = False
) -> np.ndarray | float:
    """Integrated autocorrelation time ``tau = 1 + 2 sum_t rho(t)`` in units of the series' steps.

    Args:
        chains: ``(n_chains, n)`` or ``(n,)``.
        method: ``"sokal"`` (automatic window, constant ``c``) or ``"geyer"`` (initial monotone
            positive sequence).
        c: Sokal window constant.
        pooled: average the autocorrelation over chains first (lower variance; assumes the
            chains share a stationary distribution) and return one number.

    Returns:
        ``(n_chains,)`` per-chain IAT (float if ``chains`` is 1-D or ``pooled``).
    """
    if method not in ("sokal", "geyer"):
        raise ValueError(f"unknown IAT method {method!r}; use 'sokal' or 'geyer'")
    x = np.asarray(chains, dtype=np.float64)
    if x.shape[-1] < 4:
        raise ValueError(f"need at least 4 samples per chain for an IAT, got {x.shape[-1]}")
    rho = autocorrelation(x)
    one = _sokal_tau if method == "sokal" else _geyer_tau
    args = (c,) if method == "sokal" else ()
    if x.ndim == 1:
        return one(rho, *args)
    if pooled:
        return one(rho.mean(axis=0), *args)
    return np.array([one(r, *args) for r in rho])


def effective_sample_size(chains: np.ndarray, *, method: str = "sokal") -> float:
    """Total effective sample size ``sum_chains n / tau_chain`` of ``(n_chains, n)`` series."""
    x = np.atleast_2d(np.asarray(chains, dtype=np.float64))
    tau = np.atleast_1d(integrated_autocorrelation_time(x, method=method))
    return float(np.sum(x.shape[-1] / np.maximum(tau, 1e-12)))


def _rhat_basic(x: np.ndarray) -> float:
    m, n = x.shape
    chain_mean = x.mean(axis=1)
    w = x.var(axis=1, ddof=1).mean()
    b = n * chain_mean.var(ddof=1)
    if w <= 0:
        return 1.0 if b <= 0 else math.inf
    var_plus = (n - 1) / n * w + b / n
    return float(math.sqrt(var_plus / w))


def _rank_normalise(x: np.ndarray) -> np.ndarray:
    s = x.size
    r = rankdata(x, method="average").reshape(x.shape)
    return ndtri((r - 0.375) / (s + 0.25))


def split_rhat(chains: np.ndarray, *, rank_normalised: bool = False) -> float:
    """Split-chain potential scale reduction factor R-hat.

    Each chain is cut into halves (``2 m`` chains of ``n // 2``), then Gelman-Rubin's
    ``sqrt(var_plus / W)``. With ``rank_normalised`` it is the maximum of the rank-normalised
    bulk and folded (tail) R-hat of Vehtari et al. (2021).

    Args:
        chains: ``(n_chains, n)`` scalar draws, ``n >= 4``.
    """
    x = np.atleast_2d(np.asarray(chains, dtype=np.float64))
    n = x.shape[1] // 2
    if n < 2:
        raise ValueError(f"split R-hat needs at least 4 draws per chain, got {x.shape[1]}")
    halves = np.concatenate([x[:, :n], x[:, x.shape[1] - n :]], axis=0)
    if not rank_normalised:
        return _rhat_basic(halves)
    bulk = _rhat_basic(_rank_normalise(halves))
    folded = np.abs(halves - np.median(halves))
    tail = _rhat_basic(_rank_normalise(folded))
    return max(bulk, tail)


def grad_and_laplacian(
    energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``|grad u|^2`` and the exact Laplacian of ``u`` at every configuration.

    The trace of the Hessian is taken with one double-backward pass per coordinate (on 2 CPU
    cores this loop beats ``vmap(jacrev)``). For a translation-invariant ``u`` the full-space
    gradient has no centre-of-mass component and the Hessian vanishes along translations, so
    these full-space values equal the CoM-free subspace ones.

    Args:
        energy: ``(B, n, d) -> (B,)``, differentiable twice.
        x: ``(B, n, d)``.

    Returns:
        ``(grad_sq, lap)``, each ``(B,)``, detached, in ``x``'s dtype.
    """
    x = x.detach().clone().requires_grad_(True)
    u = energy(x)
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    gf = g.reshape(g.shape[0], -1)
    lap = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for k in range(gf.shape[1]):
        (h,) = torch.autograd.grad(gf[:, k].sum(), x, retain_graph=True)
        lap = lap + h.reshape(h.shape[0], -1)[:, k]
    return gf.detach().pow(2).sum(-1), lap.detach()


def ratio_with_error(
    num: np.ndarray, den: np.ndarray, groups: np.ndarray | None = None, n_batches: int = 20
) -> tuple[float, float]:
    """``mean(num) / mean(den)`` and its delta-method standard error from group (batch) means.

    Group means (one per chain, or contiguous batches when ``groups`` is None) make the error
    honest for autocorrelated samples.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    if groups is None:
        k = max(2, min(n_batches, len(num)))
        groups = np.arange(len(num)) * k // len(num)
    labels = np.unique(groups)
    a = np.array([num[groups == g].mean() for g in labels])
    b = np.array([den[groups == g].mean() for g in labels])
    w = np.array([np.sum(groups == g) for g in labels], dtype=np.float64)
    w = w / w.sum()
    abar, bbar = float(np.sum(w * a)), float(np.sum(w * b))
    r = abar / bbar
    # linearised residuals of the ratio, one per group; the weighted variance of their mean
    z = (a - r * b) / bbar
    k = len(labels)
    var = np.sum(w**2 * (z - np.sum(w * z)) ** 2) * k / (k - 1) if k > 1 else math.inf
    return r, float(math.sqrt(var))


def configurational_temperature(
    energy: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    groups: np.ndarray | torch.Tensor | None = None,
    batch_size: int = 256,
    n_batches: int = 20,
) -> dict[str, float]:
    """Configurational temperature ``<|grad u|^2> / <laplacian u>`` of samples ``x``.

    For samples of ``p ~ exp(-u)`` it is 1 (``E[|grad u|^2] = E[laplacian u]`` by integration by
    parts); for samples of ``exp(-u / T)`` it is ``T``. A value far from 1 means the samples and
    the energy disagree (wrong convention, wrong temperature, unconverged sampler).

    Args:
        energy: reduced energy ``(B, n, d) -> (B,)``.
        x: ``(N, n, d)`` samples (any float dtype; evaluated in float64).
        groups: ``(N,)`` chain index per sample; the standard error is computed from per-chain
            means (else from ``n_batches`` contiguous batches).
        batch_size: configurations per double-backward batch.

    Returns:
        dict with ``value``, ``se``, ``n`` (samples used), ``mean_grad_sq``, ``mean_laplacian``.
    """
    x64 = x.detach().to(torch.float64)
    gs, ls = [], []
    for start in range(0, x64.shape[0], batch_size):
        g, lap = grad_and_laplacian(energy, x64[start : start + batch_size])
        gs.append(g.cpu())
        ls.append(lap.cpu())
    g = torch.cat(gs).numpy()
    lap = torch.cat(ls).numpy()
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(lap))):
        bad = int(np.sum(~np.isfinite(g) | ~np.isfinite(lap)))
        return {"value": math.nan, "se": math.nan, "n": int(len(g)), "n_nonfinite": bad,
                "mean_grad_sq": math.nan, "mean_laplacian": math.nan}
    grp = None if groups is None else np.asarray(groups)
    value, se = ratio_with_error(g, lap, grp, n_batches=n_batches)
    return {
        "value": value,
        "se": se,
        "n": int(len(g)),
        "mean_grad_sq": float(g.mean()),
        "mean_laplacian": float(lap.mean()),
    }


def block_frames(series: np.ndarray, ranges: Sequence[Sequence[int]]) -> np.ndarray:
    """The frames of ``series`` ``(n_traj, n_frames, ...)`` in the ``[start, stop)`` ranges,
    joined along the frame axis."""
    return np.concatenate([series[:, a:b] for a, b in ranges], axis=1)


def slow_fraction_agreement(
    indicator: np.ndarray,
    blocks: Mapping[str, Sequence[Sequence[int]]],
    *,
    z_max: float = 3.0,
    min_entries: int = 10,
    method: str = "sokal",
) -> dict:
    """Do trajectories and splits agree on the fraction of a slow state (alanine dipeptide:
    phi > 0)? An energy R-hat cannot see a slow coordinate; this looks at it directly.

    Each trajectory's and each split's fraction ``f_k`` gets the standard error of a correlated
    series, ``se_k = sqrt(f (1 - f) tau / n_k)``, with the pooled fraction ``f`` and the pooled
    integrated autocorrelation time ``tau`` of the indicator (pooled, so a segment that never
    visits the state still gets an honest error). Two fractions disagree when they differ by more
    than ``z_max`` combined standard errors; ``agree`` is False when any pair of trajectories or
    of splits does, or when the state was entered fewer than ``min_entries`` times in all (one
    long excursion has an autocorrelation time as long as itself, so its errors are large and
    say nothing: the data then simply do not sample the slow coordinate).

    Args:
        indicator: ``(n_traj, n_frames)`` 0/1 series (frame in the slow state).
        blocks: split name -> its list of ``[start, stop)`` frame ranges (the same in every
            trajectory).
        z_max: the disagreement threshold, in standard errors.

    Returns:
        ``fraction``, ``iat_frames``, ``per_trajectory`` / ``per_split`` (``fraction``, ``se``),
        ``max_z_trajectories``, ``max_z_splits``, ``z_max``, ``entries`` (visits of the state),
        ``min_entries``, ``agree``.
    """
    ind = np.asarray(indicator, dtype=np.float64)
    if ind.ndim != 2:
        raise ValueError(f"indicator must be (n_traj, n_frames), got shape {ind.shape}")
    f = float(ind.mean())
    if 0.0 < f < 1.0 and ind.shape[1] >= 4:
        tau = float(integrated_autocorrelation_time(ind - ind.mean(), method=method, pooled=True))
        tau = max(tau, 1.0)
    else:
        tau = 1.0  # the state was never (or always) visited: nothing to compare
    var = f * (1.0 - f) * tau

    def entry(values: np.ndarray) -> dict:
        return {"fraction": float(values.mean()), "se": float(math.sqrt(var / values.size))}

    per_traj = [entry(row) for row in ind]
    per_split = {k: entry(block_frames(ind, r)) for k, r in blocks.items()}

    def max_z(entries: list[dict]) -> float:
        z = 0.0
        for i in range(len(entries)):
            for j in range(i + 1, len(entries)):
                se = math.hypot(entries[i]["se"], entries[j]["se"])
                if se > 0:
                    z = max(z, abs(entries[i]["fraction"] - entries[j]["fraction"]) / se)
        return z

    z_traj, z_split = max_z(per_traj), max_z(list(per_split.values()))
    entries = int(((ind[:, 1:] > 0.5) & (ind[:, :-1] < 0.5)).sum() + (ind[:, 0] > 0.5).sum())
    return {
        "fraction": f, "iat_frames": tau, "per_trajectory": per_traj, "per_split": per_split,
        "max_z_trajectories": z_traj, "max_z_splits": z_split, "z_max": float(z_max),
        "entries": entries, "min_entries": int(min_entries),
        "agree": bool(z_traj <= z_max and z_split <= z_max and entries >= min_entries),
    }
