"""Molecular-dynamics reference data (alanine dipeptide): OpenMM Langevin trajectories, each cut
into cycles of train / val / test time blocks with gaps between them, and the slow coordinate's
(phi) convergence checked across trajectories and splits."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from eqbg.data import diagnostics as dg
from eqbg.data.convergence import energy_chain_diagnostics
from eqbg.data.md import KB_KJ_PER_MOL_K, run_trajectories, trajectory_seeds
from eqbg.data.settings import SPLITS
from eqbg.data.splits import md_split_blocks

__all__ = ["describe", "sample"]

log = logging.getLogger(__name__)


def describe(settings: Mapping[str, Any]) -> str:
    """One line for ``provenance.json``."""
    return ("OpenMM LangevinMiddleIntegrator, no constraints; each trajectory cut into split_cycles "
            "cycles of [train][gap][val][gap][test][gap] time blocks")


def sample(system, s: dict[str, Any], seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(splits {train, val, test: (N, 22, 3)} nm, diagnostics)`` from ``s["n_trajectories"]``
    trajectories of the system's OpenMM system."""
    import mdtraj  # heavy imports, only for MD reference data
    import openmm

    omm_system = getattr(system, "openmm_system", None) or getattr(system, "system", None)
    if omm_system is None:
        raise ValueError(f"system {system.name!r} exposes no OpenMM system (openmm_system)")
    pos0 = getattr(system, "positions", None)
    if pos0 is None:
        pos0 = system.initial_positions
    pos0 = np.asarray(pos0.detach().cpu().numpy() if isinstance(pos0, torch.Tensor) else pos0, dtype=np.float64)
    pos0 = pos0.reshape(system.n_particles, 3)
    n_traj = s["n_trajectories"]
    fi = float(s["frame_interval_ps"])
    gap = int(round(float(s["gap_ps"]) / fi))
    blocks = md_split_blocks(s["splits"], n_traj, int(s["split_cycles"]), gap)
    n_frames = max(b for ranges in blocks.values() for _, b in ranges)
    seeds = trajectory_seeds(seed, n_traj)
    temperature = float(system.temperature)
    trajs = run_trajectories(
        openmm.XmlSerializer.serialize(omm_system), pos0, seeds, n_workers=s["n_workers"],
        temperature_k=temperature, n_frames=n_frames, frame_interval_ps=fi,
        equilibration_ps=float(s["equilibration_ps"]), timestep_fs=float(s["timestep_fs"]),
        friction_per_ps=float(s["friction_per_ps"]), platform=s["platform"], threads=s["num_threads"],
    )
    kt = float(getattr(system, "kt_kj_per_mol", KB_KJ_PER_MOL_K * temperature))
    e = np.stack([t.potential_kj for t in trajs]) / kt  # (n_traj, n_frames), reduced
    pos = np.stack([t.positions for t in trajs])  # (n_traj, n_frames, n, 3)
    data = {k: dg.block_frames(pos, blocks[k]).reshape(-1, system.n_particles, 3)[: s["splits"][k]] for k in SPLITS}
    topology = getattr(system, "mdtraj_topology", None)
    topology = topology() if callable(topology) else topology
    if topology is None:
        topology = mdtraj.Topology.from_openmm(system.topology)
    traj = mdtraj.Trajectory(pos.reshape(-1, system.n_particles, 3), topology)
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    phi = phi[:, 0].reshape(n_traj, n_frames)
    psi = psi[:, 0].reshape(n_traj, n_frames)
    diag: dict[str, Any] = {"sampler": "md", "n_trajectories": n_traj, "seeds": seeds,
                            "frames_per_trajectory": n_frames, "blocks": blocks, "gap_frames": gap}
    ec = energy_chain_diagnostics(e, 1, s["iat_method"], s["rank_normalised_rhat"])
    ec["iat"]["unit"] = "frames"
    ec["iat"]["mean_in_ps"] = ec["iat"]["mean"] * fi
    del ec["iat"]["mean_in_steps"]
    diag.update(ec)
    diag["phi_positive_fraction"] = float((phi > 0).mean())
    diag["phi_positive_fraction_per_trajectory"] = (phi > 0).mean(axis=1).tolist()
    diag["phi_positive_fraction_per_split"] = {k: float((dg.block_frames(phi, blocks[k]) > 0).mean()) for k in SPLITS}
    conv = s.get("convergence") or {}
    diag["phi_positive_agreement"] = dg.slow_fraction_agreement(
        phi > 0, blocks, z_max=float(conv.get("phi_agreement_z_max", 3.0)),
        method=s["iat_method"],
    )
    diag["converged_slow_coordinate"] = diag["phi_positive_agreement"]["agree"]
    if not diag["converged_slow_coordinate"]:
        agreement = diag["phi_positive_agreement"]
        log.warning(
            "alanine dipeptide MD: the slow coordinate is not converged: the phi > 0 state was "
            "entered %d times (at least %d needed), and trajectories / splits differ by up to %.1f / "
            "%.1f standard errors (at most %.1f allowed; per trajectory %s, per split %s); longer or "
            "more trajectories are needed (convergence.phi_agreement: fail makes this an error)",
            agreement["entries"], agreement["min_entries"], agreement["max_z_trajectories"],
            agreement["max_z_splits"], agreement["z_max"],
            [round(e["fraction"], 3) for e in agreement["per_trajectory"]],
            {k: round(v["fraction"], 3) for k, v in agreement["per_split"].items()},
        )
    diag["phi_psi"] = {
        "phi_mean_deg": float(np.degrees(np.angle(np.exp(1j * phi).mean()))),
        "psi_mean_deg": float(np.degrees(np.angle(np.exp(1j * psi).mean()))),
        "cos_phi_iat_frames": float(np.mean(dg.integrated_autocorrelation_time(np.cos(phi)))),
        "cos_psi_iat_frames": float(np.mean(dg.integrated_autocorrelation_time(np.cos(psi)))),
    }
    diag["ns_per_day"] = [t.ns_per_day for t in trajs]
    diag["platform"] = s["platform"]
    diag["simulated_ns_total"] = n_traj * (n_frames * fi + float(s["equilibration_ps"])) * 1e-3
    if s["conf_temp"]:
        x = torch.as_tensor(pos.reshape(-1, system.n_particles, 3)[:: max(1, n_traj * n_frames // 500)])
        diag["conf_temp"] = dg.configurational_temperature(system.energy, x)
    diag["md_wall_time_s"] = max(t.wall_time_s for t in trajs)
    return data, diag
