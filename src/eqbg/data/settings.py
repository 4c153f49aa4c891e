"""Reference-data settings: every key, its default, and validation.

Settings are a plain dict (from the Snakemake config). :func:`resolve_settings` merges the
user's dict over the defaults for the system's sampler and rejects unknown keys, so a typo fails
loudly instead of silently using a default.

Three samplers exist, chosen by the system's ``reference_sampler`` (``sampler`` may be given
but must agree). The tables list the generic defaults; each registered system's
``SystemSpec.data_defaults`` (``eqbg.systems``; see :func:`system_defaults`) overrides them for
that system (e.g. the MCMC systems' proposal, step, chains, burn-in, thinning, placement and
LJ55's R-hat threshold):

``"mcmc"`` -- :data:`MCMC_DEFAULTS`:

=========================  =================  =====================================================
key                        default            meaning
=========================  =================  =====================================================
``splits``                 train 10000,       samples per split; chains are assigned to splits
                           val 1000,          in proportion to these sizes (disjoint chains)
                           test 2000
``n_chains``               128                parallel chains (all advanced in one batched call)
``burn_in``                2000               steps per chain discarded; step sizes adapt only here
``n_steps``                None               post-burn-in steps per chain (before thinning);
                                              None = just enough for the split sizes
``thin``                   10                 keep every ``thin``-th state
``proposal``               "rw"               "rw" (random-walk Metropolis) or "mala"
                                              (Metropolis-adjusted Langevin, one gradient/step)
``step_size``              0.1                initial Gaussian proposal std per coordinate
``target_acceptance``      0.5                Robbins-Monro target during burn-in
``adapt_gain``             1.0                RM gain ``adapt_gain / (t + 10) ** adapt_decay``
``adapt_decay``            0.6                RM decay exponent in (0.5, 1]
``init``                   "minimised"        "random": non-overlapping random placement in a
                                              ball; "minimised": the same, then steepest descent
``init_radius``            system default     ball radius of the random placement
``init_min_dist``          system default     minimum pair distance of the random placement
``minimise_steps``         300                steepest-descent iterations for "minimised"
``anneal_t0``              1.0                start temperature of simulated annealing at the
                                              beginning of burn-in (1.0 = off)
``anneal_steps``           0                  annealing length (steps, <= burn_in)
``conf_temp_samples``      1000               samples used for the configurational temperature
``iat_method``             "sokal"            "sokal" or "geyer"
``rank_normalised_rhat``   True               report max(bulk, tail) rank-normalised split R-hat
``check_convergence``      True               raise NotConvergedError on failed checks
``convergence``            see below          thresholds
``system_options``         {}                 passed to ``get_system`` (e.g. pair_convention)
``device``                 "cpu"              torch device
``num_threads``            1                  torch intra-op threads while sampling (restored
                                              afterwards; None = leave as is). One thread is
                                              faster for these small batched ops and does not
                                              collapse when other jobs share the cores
=========================  =================  =====================================================

``convergence`` (all samplers; unused keys are ignored by a sampler that has no such check):
``rhat_max`` 1.05 (split R-hat of the energy), ``conf_temp_k_se`` 4.0 and ``conf_temp_tol`` 0.03
(fail only if ``|T_conf - 1|`` exceeds both ``k`` standard errors and the tolerance),
``min_ess`` 500 (total effective samples of the energy over all kept samples),
``acceptance_min`` 0.1 / ``acceptance_max`` 0.9 (every chain's post-burn-in acceptance),
``max_phi_positive`` 0.15 (MD of alanine dipeptide: fraction of frames with phi > 0),
``phi_agreement_z_max`` 3.0 and ``phi_agreement`` "warn" or "fail" (MD of alanine dipeptide:
trajectories and splits agree on the phi > 0 fraction within that many autocorrelated standard
errors; the energy R-hat cannot see this slow coordinate).

The configurational temperature (``conf_temp`` of the MD sampler, ``conf_temp_samples`` > 0 of
the others) needs the Laplacian of the energy, i.e. second derivatives by double backward
through autograd; systems whose energy is only once differentiable (``second_derivatives``
false: alanine dipeptide, whose OpenMM energy supplies forces but no Hessian) reject it.

``"md"`` (OpenMM systems) -- :data:`MD_DEFAULTS`: ``splits`` (frames per split, summed over trajectories;
default train 4000 / val 500 / test 1000, ~3 ns per trajectory, ~1.5 min on 2 cores),
``n_trajectories`` 2, ``n_workers`` 2 (processes), ``platform`` "Reference", ``timestep_fs`` 1.0,
``friction_per_ps`` 1.0, ``equilibration_ps`` 20, ``frame_interval_ps`` 1.0, ``gap_ps`` 10
(frames skipped after every train/val/test block), ``split_cycles`` 10 (each trajectory is cut
into that many cycles of ``[train][gap][val][gap][test][gap]``, so that every split gets its
share of each slow excursion; 1 = one contiguous block per split), ``conf_temp`` False,
``iat_method``, ``rank_normalised_rhat``, ``check_convergence``, ``convergence``,
``system_options``, ``num_threads`` (also the OpenMM CPU-platform thread count per trajectory).

``"exact"`` (systems with an exact sampler) -- :data:`EXACT_DEFAULTS`: ``splits``, ``conf_temp_samples``,
``check_convergence``, ``convergence``, ``system_options``, ``device``, ``num_threads``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from eqbg.systems import SYSTEM_SPECS

__all__ = [
    "MCMC_DEFAULTS",
    "MD_DEFAULTS",
    "EXACT_DEFAULTS",
    "CONVERGENCE_DEFAULTS",
    "system_defaults",
    "resolve_settings",
    "SPLITS",
]

SPLITS = ("train", "val", "test")

CONVERGENCE_DEFAULTS: dict[str, Any] = {
    "rhat_max": 1.05,
    "conf_temp_k_se": 4.0,
    "conf_temp_tol": 0.03,
    "min_ess": 500.0,
    "acceptance_min": 0.1,
    "acceptance_max": 0.9,
    "max_phi_positive": 0.15,
    # alanine dipeptide MD: trajectories and splits must agree on the phi > 0 fraction within
    # this many standard errors (autocorrelated; eqbg.data.diagnostics.slow_fraction_agreement)
    "phi_agreement_z_max": 3.0,
    # what a disagreement does: "warn" (recorded in the diagnostics as
    # converged_slow_coordinate: false and logged) or "fail" (a failed convergence check)
    "phi_agreement": "warn",
}

_COMMON: dict[str, Any] = {
    "sampler": None,
    "splits": {"train": 10_000, "val": 1_000, "test": 2_000},
    "check_convergence": True,
    "convergence": CONVERGENCE_DEFAULTS,
    "system_options": {},
    "num_threads": 1,
}

MCMC_DEFAULTS: dict[str, Any] = {
    **_COMMON,
    "n_chains": 128,
    "burn_in": 2_000,
    "n_steps": None,
    "thin": 10,
    "proposal": "rw",
    "step_size": 0.1,
    "target_acceptance": 0.5,
    "adapt_gain": 1.0,
    "adapt_decay": 0.6,
    "init": "minimised",
    "init_radius": None,
    "init_min_dist": None,
    "minimise_steps": 300,
    "anneal_t0": 1.0,
    "anneal_steps": 0,
    "conf_temp_samples": 1_000,
    "iat_method": "sokal",
    "rank_normalised_rhat": True,
    "device": "cpu",
}

MD_DEFAULTS: dict[str, Any] = {
    **_COMMON,
    "splits": {"train": 4_000, "val": 500, "test": 1_000},
    "n_trajectories": 2,
    "n_workers": 2,
    "platform": "Reference",
    "timestep_fs": 1.0,
    "friction_per_ps": 1.0,
    "equilibration_ps": 20.0,
    "frame_interval_ps": 1.0,
    "gap_ps": 10.0,
    "split_cycles": 10,
    "conf_temp": False,
    "iat_method": "sokal",
    "rank_normalised_rhat": True,
}

EXACT_DEFAULTS: dict[str, Any] = {
    **_COMMON,
    "conf_temp_samples": 1_000,
    "device": "cpu",
}

def system_defaults(system_name: str) -> dict[str, Any]:
    """Per-system reference-data defaults of a registered system (its
    ``SystemSpec.data_defaults``, copied); ``{}`` for a name the registry does not know."""
    spec = SYSTEM_SPECS.get(system_name)
    if spec is None:
        return {}
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in spec.data_defaults.items()}


_ALLOWED_INIT = ("random", "minimised")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(over) - set(base))
    if unknown:
        raise ValueError(
            f"unknown {where} key(s) {unknown}; allowed: {sorted(base)}"
        )
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if key == "convergence":
            out[key] = _merge(base[key], value or {}, "convergence")
        elif key == "splits":
            if not isinstance(value, Mapping):
                raise ValueError(f"splits must be a mapping {{train, val, test}}, got {value!r}")
            bad = sorted(set(value) - set(SPLITS))
            if bad:
                raise ValueError(f"unknown split name(s) {bad}; allowed: {list(SPLITS)}")
            out[key] = {**base[key], **dict(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_settings(
    system: str | Any, sampler: str, settings: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Defaults for ``sampler`` + per-system defaults + the user's ``settings`` (validated).

    Args:
        system: a system name, or a system object (its ``name`` selects the per-system
            defaults, its ``second_derivatives`` whether the configurational temperature is
            possible; for a name both come from the registry's spec, and an unregistered name
            has no per-system defaults and is assumed twice differentiable).
        sampler: ``"mcmc"``, ``"md"`` or ``"exact"``.
        settings: the user's settings (unknown keys raise).

    Raises:
        ValueError: unknown key, wrong sampler, or an invalid value (message names it).
    """
    base = {"mcmc": MCMC_DEFAULTS, "md": MD_DEFAULTS, "exact": EXACT_DEFAULTS}.get(sampler)
    if base is None:
        raise ValueError(f"unknown sampler {sampler!r}; use 'mcmc', 'md' or 'exact'")
    system_name, second = _system_facts(system)
    base = copy.deepcopy(base)
    for key, value in system_defaults(system_name).items():
        if key not in base:
            raise ValueError(f"system {system_name!r}: its default {key!r} is no {sampler} setting")
        base[key] = {**base[key], **value} if key == "convergence" else value
    user = dict(settings or {})
    requested = user.get("sampler")
    if requested is not None and requested != sampler:
        raise ValueError(
            f"system {system_name!r} is sampled with {sampler!r}, but settings ask for sampler={requested!r}"
        )
    out = _merge(base, user, f"data settings ({sampler} sampler)")
    out["sampler"] = sampler
    _validate(out, sampler)
    if not second:
        _reject_conf_temp(out, system_name)
    return out


def _system_facts(system: str | Any) -> tuple[str, bool]:
    """``(name, second_derivatives)`` of a system object or a (registered) name."""
    if not isinstance(system, str):
        return str(system.name), bool(getattr(system, "second_derivatives", True))

    spec = SYSTEM_SPECS.get(system)
    return system, (spec.second_derivatives if spec is not None else True)


def _reject_conf_temp(s: Mapping[str, Any], system_name: str) -> None:
    """The configurational temperature ``<|grad u|^2> / <laplacian u>`` needs the Laplacian
    (trace of the Hessian), which :func:`eqbg.data.diagnostics.grad_and_laplacian` takes by
    double backward through the energy: refuse it for a once-differentiable energy."""
    key = "conf_temp" if "conf_temp" in s else "conf_temp_samples"
    if s.get(key):
        off = "false" if key == "conf_temp" else "0"
        raise ValueError(
            f"{key}: {s[key]!r} is not possible for system {system_name!r}: the configurational "
            "temperature needs the Laplacian of the energy (its second derivatives, taken by "
            "double backward through autograd), but this system's energy is only once "
            f"differentiable (OpenMM supplies energies and forces, no Hessian); set {key}: {off}"
        )


def _validate(s: dict[str, Any], sampler: str) -> None:
    for name in SPLITS:
        n = s["splits"][name]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"splits.{name} must be a positive integer, got {n!r}")
    for key, value in s["convergence"].items():
        if key == "phi_agreement":
            if value not in ("warn", "fail"):
                raise ValueError(f"convergence.phi_agreement must be 'warn' or 'fail', got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"convergence.{key} must be a number, got {value!r}")
    nt = s["num_threads"]
    if nt is not None and (not isinstance(nt, int) or isinstance(nt, bool) or nt < 1):
        raise ValueError(f"num_threads must be a positive integer or null, got {nt!r}")
    if not isinstance(s["system_options"], Mapping):
        raise ValueError(f"system_options must be a mapping, got {s['system_options']!r}")
    if sampler == "mcmc":
        ints = ("n_chains", "burn_in", "thin", "minimise_steps", "anneal_steps", "conf_temp_samples")
        for key in ints:
            if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 0:
                raise ValueError(f"{key} must be a non-negative integer, got {s[key]!r}")
        if s["n_chains"] < 3:
            raise ValueError(f"n_chains must be >= 3 (one chain per split at least), got {s['n_chains']}")
        if s["thin"] < 1:
            raise ValueError(f"thin must be >= 1, got {s['thin']}")
        if s["n_steps"] is not None and (not isinstance(s["n_steps"], int) or s["n_steps"] < 1):
            raise ValueError(f"n_steps must be a positive integer or null, got {s['n_steps']!r}")
        if not 0.0 < float(s["target_acceptance"]) < 1.0:
            raise ValueError(f"target_acceptance must be in (0, 1), got {s['target_acceptance']}")
        if not float(s["step_size"]) > 0:
            raise ValueError(f"step_size must be > 0, got {s['step_size']}")
        if not 0.5 < float(s["adapt_decay"]) <= 1.0:
            raise ValueError(f"adapt_decay must be in (0.5, 1], got {s['adapt_decay']}")
        if s["proposal"] not in ("rw", "mala"):
            raise ValueError(f"proposal must be 'rw' or 'mala', got {s['proposal']!r}")
        if s["init"] not in _ALLOWED_INIT:
            raise ValueError(f"init must be one of {_ALLOWED_INIT}, got {s['init']!r}")
        if s["init_radius"] is None or s["init_min_dist"] is None:
            raise ValueError("init_radius and init_min_dist have no default for this system; set them")
        if s["anneal_steps"] > s["burn_in"]:
            raise ValueError(f"anneal_steps ({s['anneal_steps']}) must be <= burn_in ({s['burn_in']})")
        if float(s["anneal_t0"]) < 1.0:
            raise ValueError(f"anneal_t0 must be >= 1, got {s['anneal_t0']}")
        if s["iat_method"] not in ("sokal", "geyer"):
            raise ValueError(f"iat_method must be 'sokal' or 'geyer', got {s['iat_method']!r}")
    if sampler == "md":
        for key in ("n_trajectories", "n_workers"):
            if not isinstance(s[key], int) or s[key] < 1:
                raise ValueError(f"{key} must be a positive integer, got {s[key]!r}")
        for key in ("timestep_fs", "friction_per_ps", "frame_interval_ps"):
            if not float(s[key]) > 0:
                raise ValueError(f"{key} must be > 0, got {s[key]!r}")
        for key in ("equilibration_ps", "gap_ps"):
            if not float(s[key]) >= 0:
                raise ValueError(f"{key} must be >= 0, got {s[key]!r}")
        if not isinstance(s["split_cycles"], int) or isinstance(s["split_cycles"], bool) or s["split_cycles"] < 1:
            raise ValueError(f"split_cycles must be a positive integer, got {s['split_cycles']!r}")
        if s["platform"] not in ("Reference", "CPU", "CUDA", "OpenCL"):
            raise ValueError(f"platform must be Reference, CPU, CUDA or OpenCL, got {s['platform']!r}")
