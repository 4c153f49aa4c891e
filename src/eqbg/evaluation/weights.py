"""Importance weights, effective sample sizes and self-normalised estimates.

Everything here works on *log* weights so that weights spanning hundreds of orders of magnitude
(typical for Boltzmann generators: ``log w`` of order 1e3 or more) never overflow.  Log weights
are unnormalised: ``log w = -u(x) - log q(x)`` omits the unknown ``log Z`` of the target, and every
estimator below is invariant to adding a constant to all log weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

#: Default energy (in kT) above which a generated sample counts as failed.  LJ55 reference
#: configurations have ``u`` around -325 kT and a single overlapping pair at distance 0.5 already
#: costs ~8e3 kT, so 1e4 kT marks configurations that are physically meaningless for every
#: system in the grid while leaving any plausible equilibrium energy untouched.
DEFAULT_ENERGY_CAP = 1.0e4


@dataclass(frozen=True)
class FailedSamples:
    """Which generated samples are unusable and why.

    Attributes:
        mask: bool ``(N,)``, True where the sample failed for any reason.
        nonfinite_energy: number of samples with ``u`` NaN or +-inf.
        energy_above_cap: number with finite ``u > energy_cap``.
        nonfinite_log_q: number with ``log q`` NaN or +-inf.
        energy_cap: the cap used (kT).
    """

    mask: np.ndarray
    nonfinite_energy: int
    energy_above_cap: int
    nonfinite_log_q: int
    energy_cap: float

    @property
    def n_failed(self) -> int:
        """Samples failing at least one check."""
        return int(self.mask.sum())

    @property
    def frac_failed(self) -> float:
        """``n_failed / N`` (0 for an empty sample)."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def find_failed_samples(
    energy: np.ndarray, log_q: np.ndarray, energy_cap: float = DEFAULT_ENERGY_CAP
) -> FailedSamples:
    """Flag generated samples whose energy or model log density is unusable.

    Args:
        energy: ``(N,)`` reduced energies ``u(x)`` in kT.
        log_q: ``(N,)`` model log densities.
        energy_cap: energies strictly above this (kT) count as failed.

    Returns:
        A :class:`FailedSamples` record (counts and mask).  Nothing is dropped here: callers
        decide how each metric treats failures (see :func:`log_importance_weights`).
    """
    energy = np.asarray(energy, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    if energy.shape != log_q.shape or energy.ndim != 1:
        raise ValueError(
            f"energy and log_q must be 1-D arrays of equal length, got {energy.shape} and {log_q.shape}"
        )
    bad_u = ~np.isfinite(energy)
    high_u = np.isfinite(energy) & (energy > energy_cap)
    bad_q = ~np.isfinite(log_q)
    return FailedSamples(
        mask=bad_u | high_u | bad_q,
        nonfinite_energy=int(bad_u.sum()),
        energy_above_cap=int(high_u.sum()),
        nonfinite_log_q=int(bad_q.sum()),
        energy_cap=float(energy_cap),
    )


def log_importance_weights(energy: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """Unnormalised log importance weights ``log w = -u(x) - log q(x)`` for ``x ~ q``.

    Failed samples are kept, not dropped, so that the sample count stays honest:
    a sample with ``u = +inf``/NaN or with a non-finite ``log q`` gets ``log w = -inf``
    (weight exactly 0); a sample with a huge finite energy keeps it and so gets a weight
    that is ~0 relative to the others.  (A ``log q = -inf`` sample would otherwise get
    ``w = +inf`` and make every estimator meaningless, which is why it is zeroed and
    reported as failed instead.)

    Args:
        energy: ``(N,)`` reduced target energies in kT.
        log_q: ``(N,)`` model log densities of the same samples.

    Returns:
        ``(N,)`` float64 log weights, ``-inf`` where the sample failed irrecoverably.
    """
    energy = np.asarray(energy, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    if energy.shape != log_q.shape:
        raise ValueError(f"energy {energy.shape} and log_q {log_q.shape} differ in shape")
    log_w = -energy - log_q
    bad = np.isnan(energy) | ~np.isfinite(log_q) | (energy == -np.inf)
    log_w[bad] = -np.inf
    return log_w


def _check_log_w(log_w: np.ndarray) -> np.ndarray:
    log_w = np.asarray(log_w, dtype=np.float64)
    if log_w.ndim != 1 or log_w.size == 0:
        raise ValueError(f"log weights must be a non-empty 1-D array, got shape {log_w.shape}")
    if np.isnan(log_w).any() or np.isposinf(log_w).any():
        raise ValueError("log weights contain NaN or +inf; use log_importance_weights to zero failures")
    return log_w


def kish_ess(log_w: np.ndarray) -> tuple[float, int]:
    """Kish effective sample size as a fraction: ``(sum w)^2 / (n sum w^2)``.

    Computed as ``exp(2 logsumexp(log w) - logsumexp(2 log w) - log n)``, so it is exact for
    log weights of any magnitude.  ``-inf`` entries (failed samples) count in ``n`` with
    weight 0.

    Args:
        log_w: ``(n,)`` unnormalised log weights.

    Returns:
        ``(ess_fraction, n)``; the fraction lies in ``[1/n, 1]`` (0 if every weight is 0).
    """
    log_w = _check_log_w(log_w)
    n = log_w.size
    if np.isneginf(log_w).all():
        return 0.0, n
    log_ess = 2.0 * logsumexp(log_w) - logsumexp(2.0 * log_w) - np.log(n)
    return float(np.exp(log_ess)), n


def _kish_ess_rows(log_w: np.ndarray) -> np.ndarray:
    """Kish ESS fraction of each row of a ``(B, n)`` array of log weights."""
    n = log_w.shape[1]
    with np.errstate(invalid="ignore"):
        log_ess = 2.0 * logsumexp(log_w, axis=1) - logsumexp(2.0 * log_w, axis=1) - np.log(n)
    return np.nan_to_num(np.exp(log_ess), nan=0.0)


def _forward_ess_rows(log_w: np.ndarray) -> np.ndarray:
    """Forward ESS fraction (:func:`forward_ess`) of each row of a ``(B, n)`` array of log
    weights of target samples; 0 for a row with a non-finite weight."""
    n = log_w.shape[1]
    with np.errstate(invalid="ignore", over="ignore"):
        log_fess = 2.0 * np.log(n) - logsumexp(log_w, axis=1) - logsumexp(-log_w, axis=1)
    out = np.minimum(1.0, np.exp(log_fess))
    out[~np.isfinite(log_w).all(axis=1)] = 0.0
    return np.nan_to_num(out, nan=0.0)


def bootstrap_ess(
    log_w: np.ndarray,
    *,
    level: float = 0.9,
    reps: int = 1000,
    seed: int = 0,
    max_chunk_elements: int = 10_000_000,
    forward: bool = False,
) -> tuple[float, float, np.ndarray]:
    """Percentile bootstrap confidence interval for the Kish ESS fraction (or, with
    ``forward``, for the forward ESS of :func:`forward_ess` on target samples).

    Resamples the ``n`` log weights with replacement ``reps`` times, recomputes the ESS each time
    and returns the ``(1-level)/2`` and ``(1+level)/2`` quantiles.  Work is chunked so that at
    most ``max_chunk_elements`` resampled weights exist at once.

    Args:
        log_w: ``(n,)`` unnormalised log weights (of flow samples; of target samples with
            ``forward``).
        level: coverage of the interval, in (0, 1).
        reps: bootstrap replicates.
        seed: seed of the resampling generator (the interval is reproducible).
        forward: bootstrap the forward ESS instead of Kish's.

    Returns:
        ``(low, high, replicates)`` with ``replicates`` the ``(reps,)`` bootstrap ESS fractions.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if reps < 2:
        raise ValueError(f"reps must be at least 2, got {reps}")
    log_w = _check_log_w(log_w)
    n = log_w.size
    rng = np.random.default_rng(seed)
    chunk = max(1, max_chunk_elements // n)
    out = np.empty(reps)
    for start in range(0, reps, chunk):
        stop = min(reps, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = (_forward_ess_rows if forward else _kish_ess_rows)(log_w[idx])
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(out, [alpha, 1.0 - alpha])
    return float(low), float(high), out


def forward_ess(log_w_test: np.ndarray) -> tuple[float, int]:
    """Forward ESS fraction on target samples, ``1 / (E_p[w] E_p[1/w])`` with ``w = p/q``.

    With the unnormalised ``w~ = Z w`` (``log w~ = -u - log q`` evaluated at test samples
    ``x ~ p``) the product ``E_p[w~] E_p[1/w~] = E_p[w] E_p[1/w]`` is free of ``Z``; replacing the
    expectations by test-set means gives ``n^2 / (sum_i w~_i * sum_i 1/w~_i)``, computed as
    ``exp(2 log n - logsumexp(log w~) - logsumexp(-log w~))`` (the EACF definition).
    It is 1 when ``q = p`` and lies in ``(0, 1]`` by Cauchy-Schwarz.

    Args:
        log_w_test: ``(n,)`` log weights ``-u(x) - log q(x)`` of samples from the target.

    Returns:
        ``(forward_ess_fraction, n)``.  A non-finite weight (a test point the model assigns
        zero density, or with infinite energy) makes the forward ESS 0.
    """
    log_w = np.asarray(log_w_test, dtype=np.float64)
    if log_w.ndim != 1 or log_w.size == 0:
        raise ValueError(f"log weights must be a non-empty 1-D array, got shape {log_w.shape}")
    return float(_forward_ess_rows(log_w[None])[0]), log_w.size


def normalised_weights(log_w: np.ndarray) -> np.ndarray:
    """Self-normalised weights ``w_i / sum_j w_j`` (a softmax of ``log_w``)."""
    log_w = _check_log_w(log_w)
    if np.isneginf(log_w).all():
        raise ValueError("every importance weight is zero; nothing can be reweighted")
    return np.exp(log_w - logsumexp(log_w))


def reweighted_mean(values: np.ndarray, log_w: np.ndarray) -> tuple[float, float]:
    """Self-normalised importance-sampling mean with its delta-method standard error.

    ``mu = sum_i wbar_i f_i`` with ``wbar = softmax(log w)`` and
    ``se = sqrt(sum_i wbar_i^2 (f_i - mu)^2)`` (first-order delta method for a ratio estimator,
    Owen 2013 eq. 9.8, without the ``n/(n-1)`` correction).  Samples with zero weight do not
    contribute (their ``f`` may be non-finite).

    Args:
        values: ``(n,)`` observable ``f(x_i)``.
        log_w: ``(n,)`` log weights.

    Returns:
        ``(mean, standard_error)``.
    """
    values = np.asarray(values, dtype=np.float64)
    wbar = normalised_weights(log_w)
    if values.shape != wbar.shape:
        raise ValueError(f"values {values.shape} and log_w {wbar.shape} differ in shape")
    used = wbar > 0
    if not np.isfinite(values[used]).all():
        raise ValueError("an observable with non-zero weight is not finite")
    f = values[used]
    w = wbar[used]
    mu = float(np.sum(w * f))
    se = float(np.sqrt(np.sum(w**2 * (f - mu) ** 2)))
    return mu, se


def mean_and_sem(values: np.ndarray) -> tuple[float, float]:
    """Plain mean and standard error (``std(ddof=1)/sqrt(n)``) of the finite entries."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1:
        return float(values[0]), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))
