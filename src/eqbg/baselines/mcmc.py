"""MCMC at a flow's budget: what a chemist would run instead of training a Boltzmann generator.

Aggarwal et al. (ICLR 2025 blogpost track, "Models trained with unnormalized density functions:
a need for a course correction") gave tuned MCMC the same number of target-energy evaluations as
the energy-trained samplers and found that it won on GMM-40, DW4, LJ13 and LJ55. This module
does the same for every flow of this pipeline: chains of the Metropolis-adjusted Langevin
algorithm (``eqbg.data.mcmc.metropolis``, one energy and gradient per step), started from the
Gaussian prior the flows start from, spend a budget of energy evaluations exactly:

* per chain ``1 + burn_in + sum(segments) + (n_segments - 1)`` evaluations (each segment
  evaluates its start once); the step size adapts (Robbins-Monro) during the burn-in, which may
  begin with simulated annealing from ``anneal_t0`` (the toy targets' broad start), then stays
  fixed, so the kept states come from one detailed-balance kernel;
* fewer chains when the budget is small (each chain runs at least ``min_chain_length`` steps);
  a budget below one chain's burn-in plus four kept states is refused, naming both;
* after every segment the chains, step sizes and the random generator's state are checkpointed:
  a killed run resumes there and ends bit-identical to one that was never killed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from eqbg.data.diagnostics import effective_sample_size
from eqbg.data.mcmc import metropolis
from eqbg.io import atomic_path

__all__ = ["MCMCBaselineSettings", "BudgetPlan", "ChainResult", "plan_budget", "run_budgeted_mcmc",
           "smallest_budget", "load_checkpoint", "save_checkpoint", "MCMC_BUDGETS"]

log = logging.getLogger(__name__)

#: the two budgets of a flow run MCMC is given (eqbg.evaluation.cost): its sampling stage alone,
#: and everything (reference data pro rata, training, sampling, refinement)
MCMC_BUDGETS = ("sampling", "total")
_MIN_KEPT = 4  # states per chain an integrated autocorrelation time needs


@dataclass(frozen=True)
class MCMCBaselineSettings:
    """Settings of the budget-matched MCMC (config ``defaults.mcmc``, ``systems.<name>.mcmc``)."""

    n_chains: int = 32  #: chains at most (fewer when the budget is small)
    min_chain_length: int = 100  #: steps a chain runs at least, when the budget allows
    step_size: float = 0.05  #: initial proposal std per coordinate (adapted during burn-in)
    target_acceptance: float = 0.57  #: MALA's optimal acceptance (Roberts & Rosenthal 1998)
    burn_in_fraction: float = 0.5  #: share of each chain's steps discarded as burn-in
    min_burn_in: int = 10  #: burn-in steps at least; a smaller budget is refused
    anneal_fraction: float = 0.0  #: share of the burn-in annealed from anneal_t0 down to 1
    anneal_t0: float = 1.0  #: initial temperature of the annealing (reduced)
    prior_scale: float = 1.0  #: std of the Gaussian the chains start from (the flows' prior)
    max_kept_per_chain: int = 64  #: thinning keeps at most this many states per chain
    checkpoint_every: int = 20_000  #: post-burn-in steps per segment (one checkpoint each)
    iat_method: str = "sokal"  #: integrated autocorrelation time of the energy (eqbg.data.diagnostics)
    log_z_chains: int = 256  #: AIS chains of the log Z estimate (targets with a known log Z)
    log_z_leapfrog: int = 5  #: leapfrog steps per HMC step of that AIS (its initial step: step_size)

    def __post_init__(self) -> None:
        if self.n_chains < 1 or self.min_chain_length < 1 or self.min_burn_in < 0:
            raise ValueError("mcmc: n_chains, min_chain_length must be >= 1 and min_burn_in >= 0")
        if not 0.0 <= self.burn_in_fraction < 1.0 or not 0.0 <= self.anneal_fraction <= 1.0:
            raise ValueError("mcmc: burn_in_fraction must be in [0, 1), anneal_fraction in [0, 1]")
        if self.anneal_t0 < 1.0 or self.step_size <= 0 or self.prior_scale <= 0:
            raise ValueError("mcmc: anneal_t0 must be >= 1, step_size and prior_scale positive")
        if self.log_z_chains < 1 or self.log_z_leapfrog < 1:
            raise ValueError("mcmc: log_z_chains and log_z_leapfrog must be >= 1")
        if self.max_kept_per_chain < _MIN_KEPT or self.checkpoint_every < 1:
            raise ValueError(f"mcmc: max_kept_per_chain must be >= {_MIN_KEPT}, checkpoint_every >= 1")


@dataclass(frozen=True)
class BudgetPlan:
    """How a budget of energy evaluations is spent (every number per chain but ``budget``)."""

    budget: int  #: energy evaluations allowed, all chains together
    n_chains: int
    burn_in: int
    anneal_steps: int
    thin: int
    segments: tuple[int, ...]  #: post-burn-in steps of each segment

    @property
    def evals_per_chain(self) -> int:
        return len(self.segments) + self.burn_in + sum(self.segments)

    @property
    def spent(self) -> int:
        """Energy evaluations the plan spends: the budget, less its remainder modulo n_chains."""
        return self.n_chains * self.evals_per_chain


def smallest_budget(s: MCMCBaselineSettings) -> int:
    """The fewest evaluations a plan can spend: one chain's start, burn-in and four kept states."""
    return 1 + s.min_burn_in + _MIN_KEPT


def plan_budget(budget: float, s: MCMCBaselineSettings) -> BudgetPlan:
    """Chains, burn-in, thinning and segments that spend ``budget`` evaluations.

    Raises:
        ValueError: the budget cannot pay one chain's burn-in and four kept states.
    """
    if not math.isfinite(budget):
        raise ValueError(f"MCMC budget {budget} is not a finite number of energy evaluations")
    budget = int(budget)
    smallest = smallest_budget(s)
    if budget < smallest:
        raise ValueError(
            f"MCMC budget of {budget} energy evaluations is below one chain's burn-in of "
            f"{s.min_burn_in} steps plus {_MIN_KEPT} kept states ({smallest} evaluations)"
        )
    n_chains = max(1, min(s.n_chains, budget // max(s.min_chain_length, smallest)))
    per_chain = budget // n_chains
    burn_in = max(s.min_burn_in, int(s.burn_in_fraction * (per_chain - 1)))
    n_segments = 1
    while True:
        post = per_chain - n_segments - burn_in
        if post < _MIN_KEPT:
            raise ValueError(
                f"MCMC budget of {budget} energy evaluations leaves {post} steps per chain after "
                f"the burn-in of {burn_in} steps ({n_chains} chains)"
            )
        thin = max(1, -(-post // s.max_kept_per_chain))  # keeps at most max_kept_per_chain
        length = max(thin, s.checkpoint_every // thin * thin)  # every segment but the last keeps its end
        if math.ceil(post / length) <= n_segments:
            break
        n_segments += 1
    segments = [length] * (n_segments - 1) + [post - length * (n_segments - 1)]
    return BudgetPlan(budget, n_chains, burn_in, round(s.anneal_fraction * burn_in), thin, tuple(segments))


@dataclass
class ChainResult:
    """The kept states of a budgeted MCMC run."""

    samples: torch.Tensor  #: ``(n_chains, n_kept, n, d)`` float64
    energies: torch.Tensor  #: ``(n_chains, n_kept)`` reduced energies
    acceptance: np.ndarray  #: ``(n_chains,)`` post-burn-in acceptance rate
    step_size: np.ndarray  #: ``(n_chains,)`` frozen step sizes
    n_energy_evals: int  #: all chains together (equals ``plan.spent``)
    wall_time_s: float
    plan: BudgetPlan

    def effective_samples(self, method: str = "sokal") -> float:
        """``sum_chains n_kept / tau`` with tau the integrated autocorrelation time of the
        energy (in kept states) of each chain, capped at the states kept (an antithetic chain,
        tau < 1, would otherwise count more samples than it has)."""
        return min(effective_sample_size(self.energies.cpu().numpy(), method=method), float(self.energies.numel()))


def _checkpoint_key(plan: BudgetPlan, s: MCMCBaselineSettings, seed: int) -> dict[str, Any]:
    return {"plan": asdict(plan), "settings": asdict(s), "seed": seed}


def load_checkpoint(path: str | Path | None, plan: BudgetPlan, s: MCMCBaselineSettings, seed: int) -> dict | None:
    """The chains' state after their last finished segment, or None (no file, or one of another
    plan, settings or seed: the run starts afresh and overwrites it)."""
    if not path or not Path(path).is_file():
        return None
    state = torch.load(path, weights_only=False)
    if state.get("key") != _checkpoint_key(plan, s, seed):
        log.info("checkpoint %s is of another plan, settings or seed: starting afresh", path)
        return None
    log.info("resuming from segment %d of %d (%s)", state["done"], len(plan.segments), path)
    return state


def save_checkpoint(path: str | Path | None, state: dict, plan: BudgetPlan, s: MCMCBaselineSettings,
                    seed: int) -> None:
    """Write ``state`` atomically after a segment; remove the file once the last one is done."""
    if not path:
        return
    path = Path(path)
    if state["done"] >= len(plan.segments):
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp:
        torch.save({**state, "key": _checkpoint_key(plan, s, seed)}, tmp)


def run_budgeted_mcmc(
    energy: Callable[[torch.Tensor], torch.Tensor],
    prior_sample: Callable[[int, torch.Generator], torch.Tensor],
    plan: BudgetPlan,
    s: MCMCBaselineSettings,
    *,
    com_free: bool,
    seed: int,
    checkpoint: str | Path | None = None,
) -> ChainResult:
    """MALA chains from the prior spending ``plan`` (see the module docstring).

    Args:
        energy: reduced energy ``(B, n, d) -> (B,)``.
        prior_sample: ``(n_chains, generator) -> (n_chains, n, d)`` starting states.
        com_free: keep the chains on the centre-of-mass-free subspace.
        checkpoint: file of the state after each segment; resumed from when it matches the plan,
            settings and seed, ignored (and overwritten) otherwise; removed at the end.
    """
    gen = torch.Generator().manual_seed(seed)
    state = load_checkpoint(checkpoint, plan, s, seed)
    if state is None:
        x = prior_sample(plan.n_chains, gen).to(torch.float64)
        state = {"done": 0, "x": x, "step_size": torch.full((plan.n_chains,), s.step_size,
                 dtype=torch.float64), "samples": [], "energies": [], "accepted": torch.zeros(plan.n_chains,
                 dtype=torch.float64), "evals": 0, "wall": 0.0}
    else:
        gen.set_state(state["generator"])
    for k in range(state["done"], len(plan.segments)):
        first = k == 0
        res = metropolis(
            energy, state["x"], n_steps=plan.segments[k], burn_in=plan.burn_in if first else 0,
            thin=plan.thin, step_size=state["step_size"], target_acceptance=s.target_acceptance,
            com_free=com_free, anneal_steps=plan.anneal_steps if first else 0, anneal_t0=s.anneal_t0,
            proposal="mala", generator=gen,
        )
        state["samples"].append(res.samples)
        state["energies"].append(res.energies)
        state["accepted"] = state["accepted"] + res.acceptance * plan.segments[k]
        state["evals"] += plan.n_chains * res.n_energy_evals
        state["wall"] += res.wall_time_s
        state["step_size"] = res.step_size
        state["x"] = res.samples[:, -1] if res.samples.shape[1] else state["x"]
        state["done"] = k + 1
        state["generator"] = gen.get_state()
        save_checkpoint(checkpoint, state, plan, s, seed)
    post = sum(plan.segments)
    return ChainResult(
        samples=torch.cat(state["samples"], dim=1),
        energies=torch.cat(state["energies"], dim=1),
        acceptance=(state["accepted"] / post).numpy(),
        step_size=state["step_size"].numpy(),
        n_energy_evals=int(state["evals"]),
        wall_time_s=float(state["wall"]),
        plan=plan,
    )
