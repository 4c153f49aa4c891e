"""Langevin molecular dynamics with OpenMM for the alanine dipeptide reference data.

Protocol (EFM/TBG line, see PAPERS.md): ``LangevinMiddleIntegrator``, 1 fs, friction 1/ps,
300 K, no constraints, starting from the shipped minimised structure; velocities drawn at the
target temperature with a per-trajectory seed, an equilibration period discarded, then one frame
every ``frame_interval_ps``. Several independent trajectories (same start, different velocity
and noise seeds) run in separate processes.

OpenMM seeds: a seed of 0 means "pick one at random" in OpenMM, so seeds here are drawn in
``[1, 2**31 - 1)`` from a NumPy ``SeedSequence`` of the user's seed. The Reference platform is
deterministic for fixed seeds; the CPU platform may not be bit-reproducible.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = ["MDTrajectory", "run_langevin", "run_trajectories", "trajectory_seeds", "KB_KJ_PER_MOL_K"]

#: Boltzmann constant times Avogadro, kJ/(mol K) (CODATA 2018 value used by OpenMM).
KB_KJ_PER_MOL_K = 0.00831446261815324


@dataclass
class MDTrajectory:
    """One trajectory.

    Attributes:
        positions: ``(n_frames, n_atoms, 3)`` float64, nm (not CoM-centred).
        potential_kj: ``(n_frames,)`` potential energy, kJ/mol.
        seed: OpenMM seed of velocities and Langevin noise.
        wall_time_s: time of equilibration + production.
        ns_per_day: production speed.
        platform: OpenMM platform used.
    """

    positions: np.ndarray
    potential_kj: np.ndarray
    seed: int
    wall_time_s: float
    ns_per_day: float
    platform: str


def trajectory_seeds(seed: int, n: int) -> list[int]:
    """``n`` distinct OpenMM seeds (never 0) derived from ``seed``."""
    states = np.random.SeedSequence(seed).generate_state(n, dtype=np.uint64)
    return [int(s % (2**31 - 2)) + 1 for s in states]


def run_langevin(
    system_xml: str,
    positions_nm: np.ndarray,
    *,
    temperature_k: float,
    n_frames: int,
    frame_interval_ps: float = 1.0,
    equilibration_ps: float = 0.0,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    platform: str = "Reference",
    seed: int = 1,
    threads: int | None = None,
    minimise: bool = False,
) -> MDTrajectory:
    """Run one Langevin trajectory and record ``n_frames`` frames.

    Args:
        system_xml: ``openmm.XmlSerializer.serialize(system)`` (a string travels to worker
            processes; Swig objects do not).
        positions_nm: ``(n_atoms, 3)`` start structure, nm.
        temperature_k: bath temperature, K.
        n_frames: frames recorded after equilibration.
        frame_interval_ps: time between frames.
        equilibration_ps: time simulated and discarded first.
        timestep_fs, friction_per_ps: integrator settings.
        platform: OpenMM platform name.
        seed: non-zero seed for velocities and the integrator noise.
        threads: CPU-platform thread count (ignored elsewhere).
        minimise: minimise the energy (OpenMM's L-BFGS) before drawing velocities, e.g. for a
            start structure built far from the system's minimum or under a new bias.
    """
    import openmm  # a heavy import, only when MD runs
    from openmm import unit

    if seed == 0:
        raise ValueError("OpenMM seed 0 means 'random'; pass a non-zero seed")
    system = openmm.XmlSerializer.deserialize(system_xml)
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_k * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    plat = openmm.Platform.getPlatformByName(platform)
    props = {"Threads": str(threads)} if (platform == "CPU" and threads) else {}
    context = openmm.Context(system, integrator, plat, props)
    context.setPositions(np.asarray(positions_nm, dtype=np.float64) * unit.nanometer)
    if minimise:
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
    context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    steps_per_frame = int(round(frame_interval_ps * 1000.0 / timestep_fs))
    if steps_per_frame < 1:
        raise ValueError(f"frame_interval_ps={frame_interval_ps} is shorter than one time step")
    n_eq = int(round(equilibration_ps * 1000.0 / timestep_fs))
    t0 = time.perf_counter()
    if n_eq:
        integrator.step(n_eq)
    t1 = time.perf_counter()
    n_atoms = system.getNumParticles()
    pos = np.empty((n_frames, n_atoms, 3), dtype=np.float64)
    pot = np.empty(n_frames, dtype=np.float64)
    for i in range(n_frames):
        integrator.step(steps_per_frame)
        state = context.getState(getPositions=True, getEnergy=True)
        pos[i] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        pot[i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    t2 = time.perf_counter()
    prod_ns = n_frames * steps_per_frame * timestep_fs * 1e-6
    ns_day = prod_ns / max(t2 - t1, 1e-9) * 86400.0
    del context, integrator
    return MDTrajectory(pos, pot, seed, t2 - t0, ns_day, platform)


def _run_one(kwargs: dict) -> MDTrajectory:
    return run_langevin(**kwargs)


def run_trajectories(
    system_xml: str | Sequence[str],
    positions_nm: np.ndarray | Sequence[np.ndarray],
    seeds: list[int],
    *,
    n_workers: int = 1,
    **kwargs,
) -> list[MDTrajectory]:
    """Independent trajectories (one per seed), ``n_workers`` processes at a time.

    ``system_xml`` and ``positions_nm`` are shared by all trajectories, or given per trajectory
    (a sequence of one XML string, or one ``(n_atoms, 3)`` array, per seed: e.g. the windows of
    umbrella sampling, each with its own bias and start structure).

    Workers are forked by default: spawn/forkserver re-import ``__main__``, which would re-run
    an unguarded Snakemake script. The workers only run NumPy and OpenMM (never torch), so the
    usual fork-after-threads hazards do not apply. ``EQBG_MP_START_METHOD`` overrides it.
    """
    n = len(seeds)
    xmls = [system_xml] * n if isinstance(system_xml, str) else list(system_xml)
    shared_start = isinstance(positions_nm, np.ndarray) and positions_nm.ndim == 2
    starts = [positions_nm] * n if shared_start else list(positions_nm)
    if len(xmls) != n or len(starts) != n:
        raise ValueError(f"{n} seeds but {len(xmls)} systems and {len(starts)} start structures")
    jobs = [dict(system_xml=x, positions_nm=p, seed=s, **kwargs) for x, p, s in zip(xmls, starts, seeds)]
    if n_workers <= 1 or len(jobs) == 1 or mp.current_process().daemon:
        return [_run_one(j) for j in jobs]
    method = os.environ.get("EQBG_MP_START_METHOD") or (
        "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    )
    with ProcessPoolExecutor(max_workers=min(n_workers, len(jobs)), mp_context=mp.get_context(method)) as ex:
        return list(ex.map(_run_one, jobs))
