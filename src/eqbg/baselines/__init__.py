"""What a user would run instead of a Boltzmann generator, at the same budget: MCMC."""

from eqbg.baselines.mcmc import (
    MCMC_BUDGETS,
    BudgetPlan,
    ChainResult,
    MCMCBaselineSettings,
    plan_budget,
    run_budgeted_mcmc,
)

__all__ = ["MCMC_BUDGETS", "BudgetPlan", "ChainResult", "MCMCBaselineSettings", "plan_budget",
           "run_budgeted_mcmc"]
