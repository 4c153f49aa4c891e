"""log Z by annealed importance sampling from the flows' prior, at a flow's budget.

Where a flow reports log Z (the toy targets, whose normaliser is known), the MCMC baseline
reports AIS's estimate at the same number of target-energy evaluations: ``n_chains`` chains from
the normalised Gaussian prior, annealed through ``M`` geometric intermediate distributions
``prior^(1 - beta) p^beta`` by HMC (``eqbg.sampling.ais``, alpha = 1), ``M`` the most the budget
pays (one evaluation per chain, then ``n_leapfrog`` per HMC step). ``log Z_hat = logsumexp(log w)
- log n_chains`` (unbiased in Z, biased low in log Z).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import logsumexp

from eqbg.sampling.ais import AISSettings, AnnealedImportanceSampler

__all__ = ["ais_log_z"]


def ais_log_z(
    energy: Callable[[torch.Tensor], torch.Tensor],
    prior,
    budget: int,
    *,
    n_chains: int,
    n_leapfrog: int,
    step_size: float,
    seed: int,
) -> tuple[dict[str, float], np.ndarray]:
    """AIS estimate of log Z of ``exp(-energy)`` spending at most ``budget`` evaluations.

    Args:
        energy: reduced energy ``(B, n, d) -> (B,)``.
        prior: normalised Gaussian with ``sample(num, generator, dtype=...)`` and ``log_prob``.
        n_chains: AIS chains (fewer when the budget cannot pay one HMC step for each).

    Returns:
        ``({"log_z_estimate", "log_z_ais_n_chains", "log_z_ais_n_intermediate",
        "log_z_ais_energy_evals"}, log_w)``.

    Raises:
        ValueError: the budget cannot pay one chain with one intermediate distribution.
    """
    per_chain_min = 1 + n_leapfrog
    if budget < per_chain_min:
        raise ValueError(f"log Z budget of {budget} energy evaluations is below one AIS chain's {per_chain_min}")
    n_chains = max(1, min(n_chains, budget // per_chain_min))
    n_intermediate = (budget // n_chains - 1) // n_leapfrog
    settings = AISSettings(n_intermediate=n_intermediate, spacing="geometric", transition="hmc",
                           n_leapfrog=n_leapfrog, step_size=step_size, adapt=True, alpha=1.0)
    gen = torch.Generator().manual_seed(seed)
    z0 = prior.sample(n_chains, generator=gen, dtype=torch.float64)
    ais = AnnealedImportanceSampler(settings)
    result = ais.run(z0, prior.log_prob, lambda z: -energy(z), generator=gen)
    log_w = result.log_w.numpy()
    estimate = float(logsumexp(log_w) - math.log(n_chains)) if np.isfinite(log_w).any() else math.nan
    return {"log_z_estimate": estimate, "log_z_ais_n_chains": n_chains,
            "log_z_ais_n_intermediate": n_intermediate,
            "log_z_ais_energy_evals": result.n_target_evals}, log_w

