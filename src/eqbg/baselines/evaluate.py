"""The metrics of MCMC chains, computed as a flow's are (``evaluate_samples``), so that a
budget-matched MCMC row sits in the same tables as the flows.

MCMC states sample the target itself: their importance weights are uniform (``log q := -u``
makes ``log w = 0``), so the reweighted metrics equal the unweighted ones. Their effective
sample count is not Kish's (that would be every state) but ``sum_chains n_kept / tau`` with
``tau`` the integrated autocorrelation time of the energy (Sokal's window by default); the Kish
``ess`` columns and the importance-sampling log Z, which need a density, are left empty (the
MCMC run adds log Z by AIS at its budget: ``eqbg.baselines.log_z``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from eqbg.baselines.mcmc import ChainResult
from eqbg.evaluation.cost import COST_PARTS, per_effective_sample
from eqbg.evaluation.run import evaluate_samples

__all__ = ["evaluate_chains", "DENSITY_FREE_KEYS"]

#: metrics that need a model density (importance weights or a test log-likelihood): empty for MCMC
DENSITY_FREE_KEYS = ("ess", "ess_ci_low", "ess_ci_high", "log_z", "log_z_estimate", "log_z_error", "nfe",
                     "nfe_total", "path_length", "ess_per_s")


#: clusters the claims' bootstrap resamples at least (chains, cut into blocks when they are few)
MIN_CLUSTERS = 8


def _blocks(n_chains: int, n_kept: int) -> np.ndarray:
    """Each kept state's cluster: its chain, cut into contiguous blocks of at least 4 states so
    that a few chains still give :data:`MIN_CLUSTERS` clusters (a moving-block bootstrap's
    blocks, independent when longer than the autocorrelation time)."""
    per_chain = max(1, min(-(-MIN_CLUSTERS // n_chains), n_kept // 4))
    within = np.minimum(np.arange(n_kept) * per_chain // n_kept, per_chain - 1)
    return (np.arange(n_chains)[:, None] * per_chain + within[None, :]).reshape(-1)


def evaluate_chains(
    system, chains: ChainResult, x_test: np.ndarray, settings: Mapping[str, Any], iat_method: str = "sokal"
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics and eval.npz arrays of budgeted MCMC chains against the test split.

    Args:
        system: ``eqbg.systems.System``.
        chains: the kept states (``eqbg.baselines.mcmc.run_budgeted_mcmc``).
        x_test: ``(M, n, d)`` test configurations.
        settings: evaluation settings (``eqbg.evaluation.settings.DEFAULT_SETTINGS`` keys).

    Returns:
        ``(metrics, arrays)`` as ``evaluate_samples`` returns them, plus the chain diagnostics,
        the cost record (everything spent by sampling), ``sample_chain`` (each state's chain) and
        ``sample_block`` (its cluster, :func:`_blocks`: the claims resample clusters, not
        correlated states).
    """
    n_chains, n_kept = chains.energies.shape
    x = chains.samples.reshape(n_chains * n_kept, *chains.samples.shape[2:]).cpu().numpy()
    u = chains.energies.reshape(-1).cpu().numpy()
    samples = {"x": x, "log_q": -u, "density": "exact", "wall_time_s": chains.wall_time_s}
    metrics, arrays = evaluate_samples(system, samples, x_test, flow=None, settings=settings, loss=None)
    for key in DENSITY_FREE_KEYS:
        if key in metrics:
            metrics[key] = math.nan
    arrays.pop("ess_bootstrap", None)
    arrays["sample_chain"] = np.repeat(np.arange(n_chains), n_kept)
    arrays["sample_block"] = _blocks(n_chains, n_kept)
    effective = chains.effective_samples(iat_method)
    plan = chains.plan
    metrics.update(
        log_q_density="none (MCMC states: uniform weights)",
        n_energy_evals_train=0.0,
        train_time_s=0.0,
        mcmc_budget=plan.budget,
        mcmc_n_chains=plan.n_chains,
        mcmc_burn_in=plan.burn_in,
        mcmc_thin=plan.thin,
        mcmc_kept_per_chain=n_kept,
        mcmc_acceptance=float(np.mean(chains.acceptance)),
        mcmc_step_size=float(np.mean(chains.step_size)),
        mcmc_iat=n_chains * n_kept / effective if effective > 0 else math.inf,
        mcmc_iat_method=f"{iat_method}, of the reduced energy, in kept states",
    )
    record = {key: 0.0 for part in COST_PARTS for key in (f"cost_energy_evals_{part}", f"cost_{part}_time_s")}
    record["cost_energy_evals_sampling"] = float(chains.n_energy_evals)
    record["cost_sampling_time_s"] = chains.wall_time_s
    record["cost_energy_evals_total"] = float(chains.n_energy_evals)
    record["cost_total_time_s"] = chains.wall_time_s
    metrics.update(record)
    metrics.update(per_effective_sample(record, effective))
    return metrics, arrays
