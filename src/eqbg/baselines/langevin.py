"""Langevin MD at a flow's budget: the chemist's baseline for alanine dipeptide.

What a chemist would run instead of a Boltzmann generator for a molecule is molecular dynamics,
not Metropolis moves in Cartesian coordinates. The budget's force evaluations become Langevin
steps (``eqbg.data.md.run_langevin``: the reference data's integrator, time step and friction,
OpenMM's Reference platform) of ``plan.n_chains`` trajectories from the shipped structure (the
flows' Gaussian prior would overlap atoms). Each trajectory equilibrates for ``plan.burn_in``
steps, then records a frame every ``plan.thin`` steps; it runs in the plan's segments, each
starting from the last frame with velocities redrawn at the bath temperature (a full velocity
resampling, which leaves the canonical distribution invariant), so that a killed job resumes at
its last checkpointed segment bit-identically. MD needs no start evaluation per segment: it spends
``n_segments`` fewer evaluations per trajectory than the plan allows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from eqbg.baselines.mcmc import BudgetPlan, ChainResult, MCMCBaselineSettings, load_checkpoint, save_checkpoint
from eqbg.data.md import KB_KJ_PER_MOL_K, run_langevin, trajectory_seeds
from eqbg.geometry import remove_mean

__all__ = ["run_budgeted_md", "MD_DEFAULTS"]

log = logging.getLogger(__name__)

#: integrator of the reference data (eqbg.data.settings MD defaults)
MD_DEFAULTS = {"timestep_fs": 1.0, "friction_per_ps": 1.0, "platform": "Reference"}


def run_budgeted_md(
    system,
    plan: BudgetPlan,
    s: MCMCBaselineSettings,
    *,
    seed: int,
    checkpoint: str | Path | None = None,
) -> ChainResult:
    """Langevin trajectories of an OpenMM-backed system (``system.system``, ``positions``,
    ``temperature``) spending ``plan``; frames CoM-free, energies reduced (``U / kT``)."""
    import openmm  # a heavy import, only for alanine dipeptide's baseline

    xml = openmm.XmlSerializer.serialize(system.system)
    start = np.asarray(system.positions, dtype=np.float64).reshape(system.n_particles, 3)
    kt = float(getattr(system, "kt_kj_per_mol", KB_KJ_PER_MOL_K * float(system.temperature)))
    seeds = trajectory_seeds(seed, plan.n_chains * len(plan.segments))
    timestep = MD_DEFAULTS["timestep_fs"]
    state = load_checkpoint(checkpoint, plan, s, seed) or {
        "done": 0, "x": np.repeat(start[None], plan.n_chains, axis=0), "samples": [], "energies": [],
        "evals": 0, "wall": 0.0,
    }
    for k in range(state["done"], len(plan.segments)):
        first = k == 0
        frames, energies = [], []
        for c in range(plan.n_chains):
            traj = run_langevin(
                xml, state["x"][c], temperature_k=float(system.temperature),
                n_frames=plan.segments[k] // plan.thin, frame_interval_ps=plan.thin * timestep / 1000.0,
                equilibration_ps=(plan.burn_in if first else 0) * timestep / 1000.0, timestep_fs=timestep,
                friction_per_ps=MD_DEFAULTS["friction_per_ps"], platform=MD_DEFAULTS["platform"],
                seed=seeds[k * plan.n_chains + c],
            )
            frames.append(traj.positions)
            energies.append(traj.potential_kj / kt)
            state["wall"] += traj.wall_time_s
        state["samples"].append(np.stack(frames))
        state["energies"].append(np.stack(energies))
        state["x"] = state["samples"][-1][:, -1] if state["samples"][-1].shape[1] else state["x"]
        state["evals"] += plan.n_chains * ((plan.burn_in if first else 0) + plan.segments[k])
        state["done"] = k + 1
        save_checkpoint(checkpoint, state, plan, s, seed)
    samples = torch.from_numpy(np.concatenate(state["samples"], axis=1))
    return ChainResult(
        samples=remove_mean(samples),
        energies=torch.from_numpy(np.concatenate(state["energies"], axis=1)),
        acceptance=np.full(plan.n_chains, np.nan),
        step_size=np.full(plan.n_chains, timestep),
        n_energy_evals=int(state["evals"]),
        wall_time_s=float(state["wall"]),
        plan=plan,
    )
