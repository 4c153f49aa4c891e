"""Reference datasets: generation (MCMC, MD, exact), chain-aware splits, files and validation.

``make_reference_data`` writes ``out_dir/{train,val,test}.npz`` and ``out_dir/provenance.json``
atomically. Splits never share a chain (MCMC), a time block (MD) or a draw (exact samplers),
because MCMC output contains correlated and repeated states: a random split of pooled chains puts
near-copies of test configurations into the training set (in the DW4 data shipped with DEM, 86 %
of the distinct test configurations also appear in the training set).

MCMC initialisation (``init="minimised"``, the default): particles are placed at random in a
ball with no pair closer than ``init_min_dist``, then every chain runs per-chain steepest
descent to a nearby local minimum (:func:`eqbg.data.mcmc.minimise`). Burn-in then starts from
low-energy structures and heats them to kT = 1 -- LJ55 from random starts was measured to be
still drifting after 10k steps. Optional simulated annealing (``anneal_t0``,
``anneal_steps``) runs the first burn-in steps at a temperature decaying to 1. Whatever the
start, the diagnostics (split R-hat, IAT/ESS, configurational temperature, acceptance) decide
whether the chains converged.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqbg import io
from eqbg.data import diagnostics as dg
from eqbg.data.mcmc import metropolis, minimise, random_nonoverlapping
from eqbg.data.md import KB_KJ_PER_MOL_K, run_trajectories, trajectory_seeds
from eqbg.data.settings import SPLITS, resolve_settings
from eqbg.geometry import remove_mean
from eqbg.systems import get_system, system_spec

__all__ = [
    "DatasetError",
    "NotConvergedError",
    "make_reference_data",
    "load_dataset",
    "sampler_for",
    "sampler_description",
    "assign_chains",
    "check_disjoint",
    "check_convergence",
]

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, or does not match what the caller expects."""


class NotConvergedError(RuntimeError):
    """The reference sampler failed a convergence check; ``diagnostics`` holds all values."""

    def __init__(self, message: str, diagnostics: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics or {}


# ----------------------------------------------------------------------------------------- #
# system lookup


def _get_system(system: Any, options: Mapping[str, Any]):
    if isinstance(system, str):
        return get_system(system, **dict(options))
    if options:
        raise ValueError("system_options can only be applied when the system is given by name")
    return system


def sampler_for(system: Any) -> str:
    """The system's ``reference_sampler``: ``"mcmc"``, ``"md"`` or ``"exact"``.

    Accepts a ``System`` (or any object with that attribute) or a registered name.
    """
    if isinstance(system, str):
        return system_spec(system).reference_sampler
    sampler = getattr(system, "reference_sampler", None)
    if sampler not in ("mcmc", "md", "exact"):
        raise ValueError(
            f"system {getattr(system, 'name', system)!r} declares no valid reference_sampler "
            f"('mcmc', 'md' or 'exact'), got {sampler!r}"
        )
    return str(sampler)


# ----------------------------------------------------------------------------------------- #
# splits


def assign_chains(n_chains: int, sizes: Mapping[str, int], generator: np.random.Generator) -> dict[str, np.ndarray]:
    """Assign whole chains to splits (at least one chain each), minimising the samples needed
    per chain, ``max_s ceil(size_s / chains_s)`` (D'Hondt allocation: each further chain goes to
    the split with the most samples per chain so far). Which chain goes where is random.

    Returns:
        ``{split: sorted chain indices}``; the index sets are disjoint and cover ``range(n_chains)``.
    """
    if n_chains < len(SPLITS):
        raise ValueError(f"n_chains={n_chains} too small for {len(SPLITS)} splits")
    counts = {s: 1 for s in SPLITS}
    for _ in range(n_chains - len(SPLITS)):
        best = max(SPLITS, key=lambda s: sizes[s] / counts[s])
        counts[best] += 1
    perm = generator.permutation(n_chains)
    out, start = {}, 0
    for s in SPLITS:
        out[s] = np.sort(perm[start : start + counts[s]])
        start += counts[s]
    return out


def check_disjoint(chains: Mapping[str, np.ndarray], data: Mapping[str, np.ndarray]) -> None:
    """Assert that no chain and no configuration (bytewise) is shared between splits.

    Raises:
        AssertionError: naming the splits and the shared item.
    """
    names = list(chains)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = np.intersect1d(chains[a], chains[b])
            if len(shared):
                raise AssertionError(f"splits {a} and {b} share chains {shared[:10].tolist()}")
    hashes = {s: {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in data[s]} for s in data}
    names = list(data)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = hashes[a] & hashes[b]
            if both:
                raise AssertionError(f"splits {a} and {b} share {len(both)} identical configurations")


def _duplicate_fraction(x: np.ndarray) -> float:
    n = len(x)
    if n == 0:
        return 0.0
    uniq = len({hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x})
    return 1.0 - uniq / n


# ----------------------------------------------------------------------------------------- #
# convergence


def check_convergence(diag: Mapping[str, Any], thresholds: Mapping[str, float]) -> list[str]:
    """List of failed checks (empty when converged); each entry names the diagnostic and value."""
    fails: list[str] = []
    rhat = diag.get("rhat")
    if rhat is not None and not (rhat <= thresholds["rhat_max"]):
        fails.append(f"split R-hat of the energy {rhat:.4f} > rhat_max {thresholds['rhat_max']}")
    ct = diag.get("conf_temp")
    if ct is not None:
        v, se = ct["value"], ct["se"]
        dev = abs(v - 1.0)
        if not math.isfinite(v):
            fails.append(f"configurational temperature is not finite ({v})")
        elif dev > thresholds["conf_temp_k_se"] * se and dev > thresholds["conf_temp_tol"]:
            fails.append(
                f"configurational temperature {v:.4f} +- {se:.4f} is more than "
                f"{thresholds['conf_temp_k_se']} SE and {thresholds['conf_temp_tol']} away from 1"
            )
    ess = diag.get("ess")
    if ess is not None and not (ess >= thresholds["min_ess"]):
        fails.append(f"effective sample size of the energy {ess:.1f} < min_ess {thresholds['min_ess']}")
    acc = diag.get("acceptance")
    if acc is not None:
        if acc["min"] < thresholds["acceptance_min"]:
            fails.append(f"lowest chain acceptance {acc['min']:.3f} < acceptance_min {thresholds['acceptance_min']}")
        if acc["max"] > thresholds["acceptance_max"]:
            fails.append(f"highest chain acceptance {acc['max']:.3f} > acceptance_max {thresholds['acceptance_max']}")
    agreement = diag.get("phi_positive_agreement")
    if agreement is not None and not agreement["agree"] and thresholds.get("phi_agreement") == "fail":
        fails.append(
            f"the phi > 0 state was entered {agreement.get('entries', '?')} times and trajectories "
            f"or splits disagree on its fraction by up to "
            f"{max(agreement['max_z_trajectories'], agreement['max_z_splits']):.1f} standard errors "
            f"(limit {agreement['z_max']}; per split: "
            + ", ".join(f"{k} {v['fraction']:.3f}" for k, v in agreement["per_split"].items())
            + "): the slow coordinate is not converged"
        )
    phi = diag.get("phi_positive_fraction")
    if phi is not None and phi > thresholds["max_phi_positive"]:
        fails.append(
            f"fraction of frames with phi > 0 is {phi:.3f} > max_phi_positive {thresholds['max_phi_positive']} "
            "(D-alanine or a broken setup?)"
        )
    return fails


def _energy_chain_diagnostics(e: np.ndarray, thin: int, method: str, rank: bool) -> dict[str, Any]:
    """IAT / ESS / R-hat of ``(n_chains, n)`` energies sampled every ``thin`` steps."""
    tau = np.atleast_1d(dg.integrated_autocorrelation_time(e, method=method))
    pooled = float(dg.integrated_autocorrelation_time(e, method=method, pooled=True))
    return {
        "iat": {
            "unit": "saved samples",
            "mean": float(tau.mean()),
            "median": float(np.median(tau)),
            "max": float(tau.max()),
            "pooled": pooled,
            "mean_in_steps": float(tau.mean() * thin),
        },
        "ess": float(np.sum(e.shape[1] / np.maximum(tau, 1e-12))),
        "rhat": dg.split_rhat(e, rank_normalised=False),
        "rhat_rank": dg.split_rhat(e, rank_normalised=True) if rank else None,
        "energy": {
            "mean": float(e.mean()),
            "std": float(e.std()),
            "min": float(e.min()),
            "max": float(e.max()),
            # drift: mean of the second minus the first half of the saved samples, in units of
            # its standard error (chains as independent replicas)
            "half_drift_z": _half_drift_z(e),
        },
    }


def _half_drift_z(e: np.ndarray) -> float:
    n = e.shape[1] // 2
    if n < 1 or e.shape[0] < 2:
        return math.nan
    d = e[:, n:].mean(axis=1) - e[:, :n].mean(axis=1)
    se = d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() / se) if se > 0 else 0.0


def _log_diagnostics(name: str, diag: Mapping[str, Any]) -> None:
    parts = [f"{name}: sampler={diag.get('sampler')}"]
    if "acceptance" in diag:
        a = diag["acceptance"]
        parts.append(f"acceptance mean {a['mean']:.3f} [{a['min']:.3f}, {a['max']:.3f}]")
    if "iat" in diag:
        parts.append(f"IAT(energy) mean {diag['iat']['mean']:.2f} {diag['iat']['unit']}")
    if "ess" in diag:
        parts.append(f"ESS {diag['ess']:.0f}")
    if diag.get("rhat") is not None:
        parts.append(f"split R-hat {diag['rhat']:.4f}")
    if diag.get("rhat_rank") is not None:
        parts.append(f"rank R-hat {diag['rhat_rank']:.4f}")
    if diag.get("conf_temp") is not None:
        ct = diag["conf_temp"]
        parts.append(f"T_conf {ct['value']:.4f} +- {ct['se']:.4f} (n={ct['n']})")
    if diag.get("phi_positive_fraction") is not None:
        parts.append(f"phi>0 fraction {diag['phi_positive_fraction']:.4f}")
    if "energy" in diag:
        parts.append(f"energy {diag['energy']['mean']:.3f} +- {diag['energy']['std']:.3f}")
    if "wall_time_s" in diag:
        parts.append(f"wall {diag['wall_time_s']:.1f} s")
    log.info("; ".join(parts))


# ----------------------------------------------------------------------------------------- #
# samplers


def _sample_mcmc(system, s: dict[str, Any], seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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
    diag.update(_energy_chain_diagnostics(e, s["thin"], s["iat_method"], s["rank_normalised_rhat"]))
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


def _sample_exact(system, s: dict[str, Any], seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for split in SPLITS:
        data[split] = system.sample(s["splits"][split], generator=gen).detach().to(torch.float64).cpu().numpy()
    diag: dict[str, Any] = {"sampler": "exact", "log_z": float(system.log_z)}
    all_x = torch.as_tensor(np.concatenate([data[k] for k in SPLITS]))
    with torch.no_grad():
        e = system.energy(all_x).numpy()
    diag["energy"] = {"mean": float(e.mean()), "std": float(e.std()), "min": float(e.min()), "max": float(e.max()),
                      "se": float(e.std() / math.sqrt(len(e)))}
    exact_mean = getattr(system, "mean_energy", None)  # System.mean_energy: None if unknown
    if exact_mean is not None:
        m = float(exact_mean)
        diag["energy"]["exact_mean"] = m
        diag["energy"]["mean_z"] = (diag["energy"]["mean"] - m) / diag["energy"]["se"]
    n_ct = min(s["conf_temp_samples"], len(all_x))
    if n_ct > 0:
        # independent draws: a batch-means error is exact enough; this checks sample() against energy()
        diag["conf_temp"] = dg.configurational_temperature(system.energy, all_x[:n_ct])
    return data, diag


def md_split_blocks(
    sizes: Mapping[str, int], n_trajectories: int, cycles: int, gap: int
) -> dict[str, list[list[int]]]:
    """Frame ranges of each split in every MD trajectory: ``cycles`` repetitions of
    ``[train][gap][val][gap][test][gap]`` (the last gap dropped).

    Contiguous blocks (``cycles`` 1) put each slow excursion (alanine dipeptide's phi > 0 basin
    lives for ~100 ps) into one split only, so the splits disagree on its population; cycling
    the blocks gives every split a share of every stretch of the trajectory, while the gaps keep
    them decorrelated (no frame is shared, neighbours are ``gap`` frames apart).

    Args:
        sizes: frames per split, summed over trajectories.
        n_trajectories: trajectories the frames are spread over.
        cycles: block cycles per trajectory (>= 1).
        gap: frames skipped after each block.

    Returns:
        split -> list of ``[start, stop)`` frame ranges, the same in every trajectory; the
        ranges of a split hold at least ``ceil(sizes[split] / n_trajectories)`` frames.
    """
    if cycles < 1 or n_trajectories < 1 or gap < 0:
        raise ValueError(f"need cycles >= 1, n_trajectories >= 1, gap >= 0; got {cycles}, {n_trajectories}, {gap}")
    per = {k: math.ceil(sizes[k] / (n_trajectories * cycles)) for k in SPLITS}
    blocks: dict[str, list[list[int]]] = {k: [] for k in SPLITS}
    t = 0
    for _ in range(cycles):
        for k in SPLITS:
            blocks[k].append([t, t + per[k]])
            t += per[k] + gap
    return blocks


def _sample_md(system, s: dict[str, Any], seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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
    ec = _energy_chain_diagnostics(e, 1, s["iat_method"], s["rank_normalised_rhat"])
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


# ----------------------------------------------------------------------------------------- #
# public entry points

#: How each MCMC proposal is described in ``provenance.json`` (``settings["proposal"]``).
MCMC_PROPOSALS: dict[str, str] = {
    "rw": "random-walk Metropolis, CoM-free Gaussian proposals",
    "mala": "Metropolis-adjusted Langevin (MALA): CoM-free Gaussian proposals drifted along "
            "-grad u, with the Hastings correction",
}


def sampler_description(sampler: str, settings: Mapping[str, Any]) -> str:
    """One-line description of the reference sampler for ``provenance.json``, naming the MCMC
    proposal actually used (``settings["proposal"]``)."""
    if sampler == "mcmc":
        return (f"{MCMC_PROPOSALS[settings['proposal']]}; per-chain Robbins-Monro step size "
                "during burn-in then frozen; chains split disjointly")
    return {
        "md": "OpenMM LangevinMiddleIntegrator, no constraints; each trajectory cut into split_cycles "
              "cycles of [train][gap][val][gap][test][gap] time blocks",
        "exact": "exact sampler of the system",
    }[sampler]



def make_reference_data(
    system: Any, settings: Mapping[str, Any] | None, seed: int, out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Generate reference samples, split them, check convergence and write the dataset.

    Args:
        system: a name from ``eqbg.systems.KNOWN_SYSTEMS`` (``settings["system_options"]`` goes
            to ``get_system``) or a ``System`` instance.
        settings: see :mod:`eqbg.data.settings` (unknown keys raise ``ValueError``).
        seed: seeds every random number (torch, NumPy, OpenMM).
        out_dir: folder for ``{train,val,test}.npz`` and ``provenance.json``.

    Returns:
        The diagnostics dict (also in ``provenance.json``).

    Raises:
        NotConvergedError: a convergence check failed (``check_convergence`` true); the
            diagnostics are then written to ``out_dir/diagnostics.failed.json`` and no dataset
            file is written.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    options = dict((settings or {}).get("system_options", {}) or {})
    sys_obj = _get_system(system, options)
    name = sys_obj.name
    sampler = sampler_for(sys_obj)
    s = resolve_settings(sys_obj, sampler, settings)
    log.info("%s: generating reference data with %s (seed %d)", name, sampler, seed)
    torch.manual_seed(seed)
    fn = {"mcmc": _sample_mcmc, "md": _sample_md, "exact": _sample_exact}[sampler]
    old_threads = torch.get_num_threads()
    if s["num_threads"] is not None:
        torch.set_num_threads(s["num_threads"])
    try:
        data, diag = fn(sys_obj, s, seed)
    finally:
        torch.set_num_threads(old_threads)
    for k in SPLITS:
        x = torch.as_tensor(data[k])
        if sys_obj.com_free:
            x = remove_mean(x)
        data[k] = x.numpy().astype(np.float32)
    check_disjoint(
        {k: np.asarray(v) for k, v in diag.get("chains", {}).items()}, data
    )
    diag["n_samples"] = {k: len(data[k]) for k in SPLITS}
    diag["duplicate_fraction"] = {k: _duplicate_fraction(data[k]) for k in SPLITS}
    diag["wall_time_s"] = time.perf_counter() - t0
    fails = check_convergence(diag, s["convergence"])
    diag["converged"] = not fails
    diag["failed_checks"] = fails
    _log_diagnostics(name, diag)
    failed_path = out / "diagnostics.failed.json"
    if fails and s["check_convergence"]:
        io.write_json(failed_path, io.provenance(system=name, system_options=options, settings=s, seed=seed,
                                                 diagnostics=io.jsonable(diag)))
        msg = f"{name} reference data not converged: " + "; ".join(fails) + f" (diagnostics in {failed_path})"
        log.error(msg)
        raise NotConvergedError(msg, diag)
    if fails:
        log.warning("%s: convergence checks failed but check_convergence is off: %s", name, "; ".join(fails))
    files = {}
    for k in SPLITS:
        path = out / f"{k}.npz"
        io.save_npz(path, x=data[k], system=np.array(name), split=np.array(k))
        files[k] = {"n": len(data[k]), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    sampler_desc = sampler_description(sampler, s)
    io.write_json(out / "provenance.json", io.provenance(
        system=name, system_options=options, pair_convention=getattr(sys_obj, "pair_convention", None),
        sampler=sampler, sampler_description=sampler_desc, settings=s, seed=seed,
        diagnostics=io.jsonable(diag), files=files,
    ))
    if failed_path.exists():
        failed_path.unlink()
    return diag


def load_dataset(
    path: str | os.PathLike[str], system: Any = None, split: str | None = None
) -> torch.Tensor:
    """Load and validate a dataset file.

    Args:
        path: ``.npz`` written by :func:`make_reference_data`.
        system: expected system (``System`` or name); checks the recorded name, ``(n, d)``
            and, for CoM-free systems, that every configuration has zero mean.
        split: expected split name recorded in the file.

    Returns:
        ``(N, n, d)`` float32 tensor.

    Raises:
        DatasetError: naming the problem and the file.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: dataset file not found")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(
            f"{p}: truncated, corrupt or unreadable dataset file ({type(exc).__name__}: {exc}); "
            "delete it to regenerate it"
        ) from exc
    if "x" not in arrays:
        raise DatasetError(f"{p}: no 'x' array (found {sorted(arrays)})")
    x = arrays["x"]
    if x.ndim != 3:
        raise DatasetError(f"{p}: 'x' must have shape (N, n, d), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(f"{p}: 'x' must be floating point, got {x.dtype}")
    if x.shape[0] == 0:
        raise DatasetError(f"{p}: 'x' is empty")
    if split is not None:
        got = str(arrays["split"]) if "split" in arrays else None
        if got != split:
            raise DatasetError(f"{p}: expected split {split!r}, file says {got!r}")
    sys_obj = None
    if system is not None:
        if isinstance(system, str):
            sys_obj = get_system(system)
        else:
            sys_obj = system
        got = str(arrays["system"]) if "system" in arrays else None
        if got != sys_obj.name:
            raise DatasetError(f"{p}: expected system {sys_obj.name!r}, file says {got!r}")
        expected = (sys_obj.n_particles, sys_obj.spatial_dim)
        if tuple(x.shape[1:]) != expected:
            raise DatasetError(f"{p}: shape {x.shape} does not match system {sys_obj.name} (N, {expected[0]}, {expected[1]})")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)))
        raise DatasetError(f"{p}: {bad} configuration(s) contain NaN or inf")
    if sys_obj is not None and sys_obj.com_free:
        com = np.abs(x.astype(np.float64).mean(axis=1)).max()
        scale = max(1.0, float(np.abs(x).max()))
        if com > 1e-4 * scale:
            raise DatasetError(f"{p}: not centre-of-mass free (max |mean position| = {com:.3g}) for CoM-free system {sys_obj.name}")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
