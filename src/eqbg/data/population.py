"""The converged population of alanine dipeptide's slow phi > 0 basin: umbrella sampling + MBAR.

Plain MD cannot measure it on a laptop: with amber99sbildn + OBC at 300 K the phi > 0 basins
(alpha_L, C7ax) are entered about once per tens of ns (two 10-ns trajectories from the
minimised structure never entered them), so the laptop reference data's phi > 0 fraction says
nothing about the force field's value, which is what a Boltzmann generator's reweighted
free-energy difference should be compared with. Umbrella sampling along phi, as the TBG/EFM
line computed its reference free-energy difference, samples every phi window directly.

Protocol: ``n_windows`` windows with centres evenly spaced on the circle, each with the
periodic harmonic bias ``0.5 k d(phi, phi_k)^2`` (an OpenMM ``CustomTorsionForce`` on the phi
atoms; ``d`` the shortest angular distance), started from the internal-coordinate structure at
``phi_k`` (psi 150 degrees), minimised under the bias, equilibrated, then ``ns_per_window`` of
Langevin MD with phi recorded every ``frame_interval_ps``. The windows are unbiased jointly by
MBAR (``pymbar``) on decorrelated subsamples (``pymbar.timeseries``), which gives the population
of each phi interval with its asymptotic error and the free-energy profile F(phi).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eqbg import io
from eqbg.data.md import KB_KJ_PER_MOL_K, run_trajectories, trajectory_seeds
from eqbg.systems import HasDihedrals, get_system

__all__ = [
    "PHI_WINDOWS",
    "POPULATION_DEFAULTS",
    "PopulationSettings",
    "mbar_populations",
    "phi_population",
    "write_phi_population",
]

log = logging.getLogger(__name__)

#: phi intervals (radians, ``lo < phi < hi``) whose population is reported: the whole phi > 0
#: half (the convention of the pipeline's ``delta_f_*`` metrics) and ``0 < phi < 2`` rad (the
#: TBG/BoltzNCE convention, which leaves the phi ~ +pi edge of the beta basin on the negative side).
PHI_WINDOWS: dict[str, tuple[float, float]] = {"phi_positive": (0.0, math.pi), "phi_0_to_2": (0.0, 2.0)}

@dataclass
class PopulationSettings:
    """Umbrella sampling along phi for the converged phi > 0 population (config
    ``systems.<name>.population``; :func:`phi_population`)."""

    seed: int = 1000  #: seeds the windows' trajectories
    n_windows: int = 36  #: umbrella windows evenly spaced in phi
    force_constant_kj_per_mol_rad2: float = 100.0  #: harmonic bias on phi, kJ/mol/rad^2
    ns_per_window: float = 0.5  #: sampled time per window, ns
    equilibration_ps: float = 50.0  #: discarded at the start of each window, ps
    frame_interval_ps: float = 0.5  #: time between saved frames, ps
    psi_start_deg: float = 150.0  #: psi of the starting structure of every window, degrees
    timestep_fs: float = 1.0  #: integration step, fs
    friction_per_ps: float = 1.0  #: Langevin friction, 1/ps
    n_workers: int = 2  #: processes running the windows
    platform: str = "Reference"  #: OpenMM platform: Reference, CPU, CUDA or OpenCL
    profile_bins: int = 72  #: bins of the reported free-energy profile along phi


#: :class:`PopulationSettings`' defaults as a dict
POPULATION_DEFAULTS: dict[str, Any] = dataclasses.asdict(PopulationSettings())


def _angular_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shortest distance on the circle, radians, in ``[0, pi]``."""
    d = np.abs(np.asarray(a) - np.asarray(b)) % (2.0 * math.pi)
    return np.minimum(d, 2.0 * math.pi - d)


def mbar_populations(
    phi: list[np.ndarray],
    centres: np.ndarray,
    kappa_kt: float,
    intervals: Mapping[str, tuple[float, float]],
    *,
    profile_bins: int = 72,
    decorrelate: bool = True,
) -> dict[str, Any]:
    """Unbias umbrella windows along an angle with MBAR.

    Args:
        phi: per window its angle series (radians), in time order.
        centres: ``(K,)`` window centres (radians).
        kappa_kt: force constant of the bias ``0.5 kappa d^2`` in kT/rad^2.
        intervals: name -> ``(lo, hi)``; the unbiased population of ``lo < phi < hi`` is reported.
        profile_bins: bins of the free-energy profile on ``[-pi, pi]``.
        decorrelate: keep only every statistical-inefficiency-th frame of each window
            (``pymbar.timeseries``), so that MBAR's errors, which assume independent samples,
            hold.

    Returns:
        ``intervals``: name -> ``fraction``, ``se``, ``delta_f_kt`` = ``-log(P / (1 - P))`` and
        ``delta_f_se`` (delta method); ``n_samples_per_window`` used; ``statistical_inefficiency``
        per window; ``profile``: ``edges``, ``f_kt`` (F(phi) in kT, minimum 0, NaN where
        unsampled), ``f_se``.
    """
    logging.getLogger("pymbar").setLevel(logging.ERROR)  # its JAX and timeseries banners
    from pymbar import MBAR, timeseries

    if len(phi) != len(centres):
        raise ValueError(f"{len(phi)} windows of data but {len(centres)} centres")
    kept, g = [], []
    for series in phi:
        series = np.asarray(series, dtype=np.float64)
        if decorrelate and series.size > 10:
            # of the raw angle: in a window at +-pi, where phi wraps, the jumps inflate the
            # inefficiency, so more frames are dropped (larger errors, never smaller ones)
            idx = timeseries.subsample_correlated_data(series)
            g.append(series.size / max(len(idx), 1))
            series = series[idx]
        else:
            g.append(1.0)
        kept.append(series)
    n_k = np.array([s.size for s in kept])
    x = np.concatenate(kept)
    u_kn = 0.5 * kappa_kt * _angular_distance(x[None, :], np.asarray(centres)[:, None]) ** 2
    mbar = MBAR(u_kn, n_k, solver_protocol="robust")
    u_unbiased = np.zeros_like(x)

    def population(inside: np.ndarray) -> tuple[float, float]:
        with np.errstate(divide="ignore"):  # pymbar takes log of the 0/1 indicator
            res = mbar.compute_expectations(inside.astype(np.float64), u_kn=u_unbiased)
        return float(np.ravel(res["mu"])[0]), float(np.ravel(res["sigma"])[0])

    out: dict[str, Any] = {}
    for name, (lo, hi) in intervals.items():
        p, se = population((x > lo) & (x < hi))
        if 0.0 < p < 1.0:
            df, df_se = -math.log(p / (1.0 - p)), se / (p * (1.0 - p))
        else:
            df, df_se = (math.inf if p <= 0 else -math.inf), float("nan")
        out[name] = {"window_rad": [float(lo), float(hi)], "fraction": p, "se": se,
                     "delta_f_kt": df, "delta_f_se": df_se}
    edges = np.linspace(-math.pi, math.pi, profile_bins + 1)
    f_kt, f_se = np.full(profile_bins, np.nan), np.full(profile_bins, np.nan)
    for b in range(profile_bins):
        inside = (x >= edges[b]) & (x < edges[b + 1])
        p, se = population(inside) if inside.any() else (0.0, float("nan"))
        if p > 0:
            f_kt[b], f_se[b] = -math.log(p / (edges[1] - edges[0])), se / p
    f_kt -= np.nanmin(f_kt)
    return {
        "intervals": out,
        "n_samples_per_window": n_k.tolist(),
        "statistical_inefficiency": g,
        "profile": {"edges": edges, "f_kt": f_kt, "f_se": f_se},
    }


def _biased_system_xml(system: Any, centre: float, k_kj: float) -> str:
    import openmm  # OpenMM and alanine dipeptide's module (mdtraj) only where used

    from eqbg.systems.aldp import PHI_ATOMS

    biased = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system.system))
    force = openmm.CustomTorsionForce(
        "0.5*k*d^2; d = min(dt, 2*3.141592653589793 - dt); dt = abs(theta - theta0)"
    )
    force.addGlobalParameter("k", k_kj)
    force.addGlobalParameter("theta0", centre)
    force.addTorsion(*PHI_ATOMS, [])
    biased.addForce(force)
    return openmm.XmlSerializer.serialize(biased)


def _resolve(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    s = dict(POPULATION_DEFAULTS)
    unknown = sorted(set(settings or {}) - set(s))
    if unknown:
        raise ValueError(f"unknown population setting(s) {unknown}; allowed: {sorted(s)}")
    s.update(settings or {})
    for key in ("n_windows", "n_workers", "profile_bins"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise ValueError(f"population.{key} must be a positive integer, got {s[key]!r}")
    for key in ("force_constant_kj_per_mol_rad2", "ns_per_window", "frame_interval_ps", "timestep_fs",
                "friction_per_ps"):
        if not float(s[key]) > 0:
            raise ValueError(f"population.{key} must be > 0, got {s[key]!r}")
    if not float(s["equilibration_ps"]) >= 0:
        raise ValueError(f"population.equilibration_ps must be >= 0, got {s['equilibration_ps']!r}")
    return s


def phi_population(system: Any, settings: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Umbrella sampling along phi of alanine dipeptide and its MBAR populations.

    Args:
        system: :class:`eqbg.systems.aldp.AlanineDipeptide` (its OpenMM ``system``,
            ``temperature`` and ``dihedrals``).
        settings: keys of :data:`POPULATION_DEFAULTS` (unknown keys raise).

    Returns:
        ``(report, phi)``: the report (settings, seeds, window centres, simulated ns, MD time,
        and the result of :func:`mbar_populations` for :data:`PHI_WINDOWS`, profile as lists)
        and the phi series ``(n_windows, n_frames)`` float32, radians.
    """
    from eqbg.systems.aldp import internal_coordinate_structure  # mdtraj, OpenMM: only here

    s = _resolve(settings)
    k_windows = int(s["n_windows"])
    centres = -math.pi + (np.arange(k_windows) + 0.5) * (2.0 * math.pi / k_windows)
    k_kj = float(s["force_constant_kj_per_mol_rad2"])
    xmls = [_biased_system_xml(system, float(c), k_kj) for c in centres]
    starts = [internal_coordinate_structure(math.degrees(c), float(s["psi_start_deg"])) for c in centres]
    n_frames = int(round(float(s["ns_per_window"]) * 1000.0 / float(s["frame_interval_ps"])))
    seeds = trajectory_seeds(int(s["seed"]), k_windows)
    trajs = run_trajectories(
        xmls, starts, seeds, n_workers=int(s["n_workers"]), temperature_k=float(system.temperature),
        n_frames=n_frames, frame_interval_ps=float(s["frame_interval_ps"]),
        equilibration_ps=float(s["equilibration_ps"]), timestep_fs=float(s["timestep_fs"]),
        friction_per_ps=float(s["friction_per_ps"]), platform=str(s["platform"]), minimise=True,
    )
    phi = np.stack([system.dihedrals(t.positions)[0] for t in trajs])
    kt = float(getattr(system, "kt_kj_per_mol", KB_KJ_PER_MOL_K * float(system.temperature)))
    result = mbar_populations(list(phi), centres, k_kj / kt, PHI_WINDOWS, profile_bins=int(s["profile_bins"]))
    result["profile"] = {k: np.asarray(v).tolist() for k, v in result["profile"].items()}
    report = {
        "method": "umbrella sampling along phi (periodic harmonic bias), MBAR (pymbar) on decorrelated frames",
        "settings": s,
        "seeds": seeds,
        "centres_rad": centres.tolist(),
        "temperature_K": float(system.temperature),
        "simulated_ns": float(k_windows * (s["ns_per_window"] + s["equilibration_ps"] * 1e-3)),
        # summed over windows (they run n_workers at a time, so the wall time is shorter)
        "md_time_s_summed": float(sum(t.wall_time_s for t in trajs)),
        "ns_per_day": [t.ns_per_day for t in trajs],
        **result,
    }
    return report, phi.astype(np.float32)


def write_phi_population(
    system_name: str,
    settings: Mapping[str, Any],
    options: Mapping[str, Any],
    *,
    report_path: str | Path,
    phi_path: str | Path,
) -> dict[str, Any]:
    """:func:`phi_population` of a registered system, written atomically with its provenance
    (``report_path``, JSON) and the windows' phi series (``phi_path``, npz ``phi`` radians and
    ``centres``)."""
    system = get_system(system_name, **dict(options))
    if not isinstance(system, HasDihedrals) or not hasattr(system, "system"):
        raise ValueError(f"system {system_name!r} has no OpenMM system with backbone dihedrals")
    report, phi = phi_population(system, settings)
    record = io.provenance(system=system_name, system_options=dict(options), **report)
    io.save_npz(phi_path, phi=phi, centres=np.asarray(report["centres_rad"]))
    io.write_json(report_path, record)
    for name, w in report["intervals"].items():
        log.info("%s: population of %s (%.2f < phi < %.2f rad) %.4f +- %.4f, dF = %.2f +- %.2f kT "
                 "(%.1f ns of umbrella sampling)", system_name, name, *w["window_rad"], w["fraction"],
                 w["se"], w["delta_f_kt"], w["delta_f_se"], report["simulated_ns"])
    return record
