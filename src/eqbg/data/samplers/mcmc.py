"""MCMC reference data for particle systems (DW4, LJ13, LJ55), whole chains assigned to splits.

Initialisation (``init="minimised"``, the default): particles are placed at random in a ball with
no pair closer than ``init_min_dist``, then every chain runs per-chain steepest descent to a
nearby local minimum (:func:`eqbg.data.mcmc.minimise`). Burn-in then starts from low-energy
structures and heats them to kT = 1 -- LJ55 from random starts was measured to be still drifting
after 10k steps. Optional simulated annealing (``anneal_t0``, ``anneal_steps``) runs the first
burn-in steps at a temperature decaying to 1. Metropolis (random walk or MALA) with per-chain
step sizes tuned in the burn-in. Whatever the start, the diagnostics (split R-hat, IAT/ESS,
configurational temperature, acceptance) decide whether the chains converged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from eqbg.data import diagnostics as dg
from eqbg.data.convergence import energy_chain_diagnostics
from eqbg.data.mcmc import metropolis, minimise, random_nonoverlapping
from eqbg.data.settings import SPLITS
from eqbg.data.splits import assign_chains

__all__ = ["MCMC_PROPOSALS", "describe", "sample"]

#: How each MCMC proposal is described in ``provenance.json`` (``settings["proposal"]``).
MCMC_PROPOSALS: dict[str, str] = {
    "rw": "random-walk Metropolis, CoM-free Gaussian proposals",
    "mala": "Metropolis-adjusted Langevin (MALA): CoM-free Gaussian proposals drifted along "
            "-grad u, with the Hastings correction",
}


def describe(settings: Mapping[str, Any]) -> str:
    """One line for ``provenance.json``, naming the proposal actually used."""
    return (f"{MCMC_PROPOSALS[settings['proposal']]}; per-chain Robbins-Monro step size "
            "during burn-in then frozen; chains split disjointly")


def sample(system, s: dict[str, Any], seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(splits {train, val, test: (N, n, d)}, diagnostics)`` from ``s["n_chains"]`` chains."""
    device = torch.device(s["device"])
    gen = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_chains = s["n_chains"]
    chains = assign_chains(n_chains, s["splits"], rng)
    per_chain = max(math.ceil(s["splits"][k] / len(chains[k])) for k in SPLITS)
    needed = per_chain * s["thin"]
    n_steps = s["n_steps"] if s["n_steps"] is not None else needed
    if n_steps // s["thin"] < per_chain:
        raise ValueError(
            f"n_steps={n_steps} with thin={s['thin']} keeps {n_steps // s['thin']} samples per chain, "
            f"but the split sizes need {per_chain} (n_steps >= {needed})"
        )
    energy = system.energy
    x0 = random_nonoverlapping(
        n_chains, system.n_particles, system.spatial_dim,
        radius=float(s["init_radius"]), min_dist=float(s["init_min_dist"]), generator=gen, device=device,
    )
    init_info: dict[str, Any] = {"init": s["init"]}
    with torch.no_grad():
        init_info["random_energy_mean"] = float(energy(x0).mean())
    if s["init"] == "minimised" and s["minimise_steps"] > 0:
        x0, u0 = minimise(energy, x0, n_iter=s["minimise_steps"], max_disp=0.1, com_free=system.com_free)
        init_info["minimised_energy_mean"] = float(u0.mean())
        init_info["minimised_energy_min"] = float(u0.min())
    res = metropolis(
        energy, x0, n_steps=n_steps, burn_in=s["burn_in"], thin=s["thin"], step_size=float(s["step_size"]),
        target_acceptance=float(s["target_acceptance"]), adapt_gain=float(s["adapt_gain"]),
        adapt_decay=float(s["adapt_decay"]), com_free=system.com_free, anneal_steps=s["anneal_steps"],
        anneal_t0=float(s["anneal_t0"]), proposal=s["proposal"], generator=gen,
    )
    e = res.energies.cpu().numpy()
    diag: dict[str, Any] = {"sampler": "mcmc", "proposal": s["proposal"], "n_chains": n_chains, "n_steps": n_steps,
                            "samples_per_chain": int(e.shape[1]), "init": init_info}
    diag["acceptance"] = {
        "mean": float(res.acceptance.mean()), "min": float(res.acceptance.min()),
        "max": float(res.acceptance.max()), "burn_in_mean": float(res.burn_in_acceptance.mean()),
    }
    diag["step_size"] = {"mean": float(res.step_size.mean()), "min": float(res.step_size.min()),
                         "max": float(res.step_size.max())}
    diag.update(energy_chain_diagnostics(e, s["thin"], s["iat_method"], s["rank_normalised_rhat"]))
    bt = res.burn_in_energy.cpu().numpy()
    if bt.shape[1] >= 4:
        q = max(1, bt.shape[1] // 10)
        diag["burn_in_energy"] = {"first_tenth_mean": float(bt[:, :q].mean()), "last_tenth_mean": float(bt[:, -q:].mean())}
    # configurational temperature on a subset spread over all chains and times
    x_all = res.samples
    n_ct = min(s["conf_temp_samples"], e.size)
    if n_ct > 0:
        flat = np.linspace(0, e.size - 1, n_ct).round().astype(np.int64)
        ci, ti = np.divmod(flat, e.shape[1])
        diag["conf_temp"] = dg.configurational_temperature(
            energy, x_all[torch.as_tensor(ci), torch.as_tensor(ti)], groups=ci
        )
    diag["sampler_wall_time_s"] = res.wall_time_s
    data: dict[str, np.ndarray] = {}
    for split in SPLITS:
        idx = chains[split]
        k = math.ceil(s["splits"][split] / len(idx))
        # the last k saved samples of each chain (furthest from burn-in), chain-major
        block = x_all[torch.as_tensor(idx), -k:].reshape(-1, system.n_particles, system.spatial_dim)
        data[split] = block[: s["splits"][split]].cpu().numpy()
    diag["chains"] = {k: v.tolist() for k, v in chains.items()}
    diag["steps_per_chain"] = s["burn_in"] + n_steps
    return data, diag
