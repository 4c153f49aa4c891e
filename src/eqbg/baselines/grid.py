"""The budget-matched MCMC runs of a config and their settings, for the Snakemake rules.

Config::

    baselines:
      mcmc: {systems: [dw4, lj13], budgets: [sampling, total], seeds: [0]}
    defaults:
      mcmc: {n_chains: 32, ...}       # eqbg.baselines.mcmc.MCMCBaselineSettings
    systems:
      gmm40:
        mcmc: {anneal_t0: 100.0, ...} # per system, over the defaults

A run is ``Run(system, "mcmc", <sampler>, variant=<budget>, seed)``, the sampler ``mala`` or
``langevin`` (:data:`BASELINE_SAMPLER`): its folder
``results/runs/{system}/mcmc/{sampler}/{budget}/seed{seed}`` sits beside the flows'.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from eqbg.baselines.mcmc import MCMC_BUDGETS
from eqbg.pipeline import Run, canonical, deep_merge, iter_runs, run_settings
from eqbg.scale import scale_of
from eqbg.systems import system_spec

__all__ = ["MCMC_MODEL", "BASELINE_SAMPLER", "iter_mcmc_runs", "check_mcmc_grid", "mcmc_params",
           "SMOKE_MCMC_SETTINGS"]

MCMC_MODEL = "mcmc"
#: the system's reference sampler -> the baseline a user would run there: Langevin MD where the
#: reference data are MD (eqbg.baselines.langevin), MALA elsewhere (eqbg.baselines.mcmc)
BASELINE_SAMPLER = {"mcmc": "mala", "exact": "mala", "md": "langevin"}
#: smoke size (eqbg.scale): short chains, whatever budget the smoke flows have
SMOKE_MCMC_SETTINGS = {"n_chains": 2, "min_chain_length": 16, "min_burn_in": 4, "max_kept_per_chain": 8,
                       "checkpoint_every": 8}  # (a budget below 9 evaluations is raised to 9: eqbg.baselines.run)


def iter_mcmc_runs(config: Mapping[str, Any]) -> Iterator[Run]:
    """The config's MCMC runs: every system x budget x seed of ``baselines.mcmc``."""
    spec = (config.get("baselines") or {}).get("mcmc") or {}
    for system in spec.get("systems", []):
        sampler = BASELINE_SAMPLER[system_spec(system).reference_sampler]
        for budget in spec.get("budgets", MCMC_BUDGETS):
            for seed in spec.get("seeds", [0]):
                yield Run(system, MCMC_MODEL, sampler, int(seed), budget)


def check_mcmc_grid(config: Mapping[str, Any]) -> None:
    """An MCMC run is matched to a system's flows: fail when the grid trains none there."""
    trained = {run.system for run in iter_runs(config)}
    for run in iter_mcmc_runs(config):
        if run.system not in trained:
            raise ValueError(
                f"baselines.mcmc names system {run.system!r}, but the grid trains no flow on it: "
                f"budget-matched MCMC needs a flow's budget (systems with flows: "
                f"{', '.join(sorted(trained)) or 'none'})"
            )


def mcmc_params(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """What the mcmc rule needs: identity, MCMC settings (defaults, then the system's), the
    evaluation settings of the system's runs (on the CPU), system options and scale."""
    s = run_settings(config, run)
    mcmc = deep_merge((config.get("defaults") or {}).get("mcmc", {}),
                      config["systems"][run.system].get("mcmc", {}))
    scale = scale_of(config)
    if scale == "smoke":
        mcmc = deep_merge(mcmc, SMOKE_MCMC_SETTINGS)
    return canonical({
        "identity": run.identity(),
        # chains and their evaluation run on the CPU (the rule asks for no GPU)
        "settings": {"mcmc": mcmc, "evaluate": s["evaluate"], "device": "cpu",
                     "system_options": s["system_options"], "scale": scale},
    })
