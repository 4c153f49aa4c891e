"""One budget-matched MCMC run: its budget from the system's best flow, its chains, its metrics,
written as a run folder like a flow's (``config.json``, ``samples.npz``, ``metrics.json``,
``eval.npz``), so that tables, figures, the report and the claims take it with no special case.

The budget is that of the system's best flow, the one with the smallest reweighted energy W2 to
the test data (the quality the claims compare, ``workflow/resources/claims.yaml``): its sampling
stage alone or everything it cost (``eqbg.evaluation.cost``). Where the target's log Z is known,
AIS from the same prior estimates it with the same budget again (``eqbg.baselines.log_z``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqbg.baselines.mcmc import (
    MCMC_BUDGETS,
    BudgetPlan,
    ChainResult,
    MCMCBaselineSettings,
    plan_budget,
    run_budgeted_mcmc,
    smallest_budget,
)
from eqbg.baselines.langevin import run_budgeted_md
from eqbg.baselines.log_z import ais_log_z
from eqbg.data import load_dataset
from eqbg.baselines.evaluate import evaluate_chains
from eqbg.evaluation.settings import resolve_settings
from eqbg.flows.priors import make_prior
from eqbg.io import provenance, read_json, save_npz, write_json
from eqbg.rundir import IDENTITY_KEYS, RunDir
from eqbg.systems import get_system

__all__ = ["best_flow_budget", "mcmc_run", "QUALITY_METRIC", "SAMPLERS"]

log = logging.getLogger(__name__)

#: the quality by which the best flow is chosen (smaller is better)
QUALITY_METRIC = "energy_w2_reweighted"


def _mala(sys_obj, prior, plan: BudgetPlan, s: MCMCBaselineSettings, seed: int, checkpoint: Path) -> ChainResult:
    return run_budgeted_mcmc(
        sys_obj.energy, lambda n, gen: prior.sample(n, generator=gen, dtype=torch.float64), plan, s,
        com_free=sys_obj.com_free, seed=seed, checkpoint=checkpoint,
    )


def _langevin(sys_obj, prior, plan: BudgetPlan, s: MCMCBaselineSettings, seed: int, checkpoint: Path) -> ChainResult:
    return run_budgeted_md(sys_obj, plan, s, seed=seed, checkpoint=checkpoint)  # from the structure, not the prior


#: sampler name (the run's ``loss``, eqbg.baselines.grid.BASELINE_SAMPLER) -> its budgeted run
SAMPLERS = {"mala": _mala, "langevin": _langevin}


def best_flow_budget(flow_metrics: Iterable[Mapping[str, Any]], budget: str) -> tuple[float, str]:
    """``(energy evaluations, run folder)`` of the flow with the smallest finite
    :data:`QUALITY_METRIC`: its ``cost_energy_evals_<budget>``.

    Raises:
        ValueError: an unknown budget, or no flow with a finite quality and cost.
    """
    if budget not in MCMC_BUDGETS:
        raise ValueError(f"unknown MCMC budget {budget!r}; known: {MCMC_BUDGETS}")
    key = f"cost_energy_evals_{budget}"

    def finite(m: Mapping[str, Any], k: str) -> bool:
        return isinstance(m.get(k), (int, float)) and math.isfinite(m[k])

    scored = [m for m in flow_metrics if finite(m, QUALITY_METRIC) and finite(m, key)]
    if not scored:
        raise ValueError(f"no flow run has a finite {QUALITY_METRIC} and {key}: nothing to match MCMC to")
    best = min(scored, key=lambda m: m[QUALITY_METRIC])
    return float(best[key]), str(best["run_dir"])


def mcmc_run(
    system: str,
    flow_metrics_paths: Iterable[str | Path],
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    identity: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Run budget-matched MCMC for ``system`` and write its run folder ``out_dir``.

    Args:
        flow_metrics_paths: ``metrics.json`` of the system's flow runs (the budget's source).
        data_dir: ``results/data/{system}`` (``test.npz``).
        identity: ``system``, ``model`` (``mcmc``), ``loss`` (the sampler: ``mala``, or
            ``langevin`` MD for systems whose reference data are MD), ``variant`` (the budget:
            ``sampling`` or ``total``), ``seed``.
        settings: ``mcmc`` (:class:`MCMCBaselineSettings` fields), ``evaluate``, ``device``,
            ``system_options`` and ``scale``.

    Returns:
        The metrics written to ``out_dir/metrics.json``.
    """
    run, data_dir = RunDir(out_dir), Path(data_dir)
    s = MCMCBaselineSettings(**settings.get("mcmc", {}))
    budget, matched_to = best_flow_budget([read_json(p) for p in flow_metrics_paths], identity["variant"])
    if settings.get("scale") == "smoke":
        # smoke flows draw 2-8 samples: their budget may be below any plan (smoke numbers are no results)
        budget = max(budget, smallest_budget(s))
    plan = plan_budget(budget, s)
    log.info("MCMC on %s: %s budget %d energy evaluations of %s; %d chains x %d steps (burn-in %d, thin %d)",
             system, identity["variant"], int(budget), matched_to, plan.n_chains, plan.evals_per_chain,
             plan.burn_in, plan.thin)
    sys_obj = get_system(system, **settings.get("system_options", {}))
    prior = make_prior(sys_obj, scale=s.prior_scale)
    config = {**identity, "mcmc": asdict(s), "plan": asdict(plan), "budget_matched_to": matched_to,
              "system_options": dict(settings.get("system_options", {})),
              "training": {"scale": settings.get("scale", "full")}}
    write_json(run.config, config)
    seed = int(identity["seed"])
    chains = SAMPLERS[identity["loss"]](sys_obj, prior, plan, s, seed, run.checkpoint)
    save_npz(run.samples, x=chains.samples.numpy(), energy=chains.energies.numpy(),
             wall_time_s=np.asarray(chains.wall_time_s))
    x_test = load_dataset(data_dir / "test.npz", system=sys_obj, split="test").numpy()
    eval_settings = resolve_settings({**settings.get("evaluate", {}), "device": settings.get("device", "cpu"),
                                      "compute_nll": False})
    metrics, arrays = evaluate_chains(sys_obj, chains, x_test, eval_settings, s.iat_method)
    log_z = getattr(sys_obj, "log_z", None)
    if log_z is not None:
        # where the flows report log Z: AIS from the same prior, given the same budget again
        ais, arrays["log_w_log_z"] = ais_log_z(
            sys_obj.energy, prior, plan.budget, n_chains=s.log_z_chains, n_leapfrog=s.log_z_leapfrog,
            step_size=s.step_size, seed=seed,
        )
        metrics.update(ais, log_z=float(log_z), log_z_error=ais["log_z_estimate"] - float(log_z))
    metrics.update({k: identity.get(k) for k in IDENTITY_KEYS})
    metrics.update(budget_matched_to=matched_to, mcmc_budget_kind=identity["variant"], n_train=None,
                   n_train_setting=None, scale=settings.get("scale", "full"), run_dir=str(run.root))
    metrics["provenance"] = provenance(stage="mcmc", settings=config, test_data=str(data_dir / "test.npz"))
    run.write_evaluation(metrics, arrays, identity)
    return metrics
