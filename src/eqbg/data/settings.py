"""Reference-data settings: every key, its default, and validation.

Each reference sampler's settings are a dataclass below, every field with its default and a
comment that documents it (the config schema's ``systems.<name>.data`` is generated from them):
:class:`MCMCDataSettings` (``mcmc``), :class:`MDDataSettings` (``md``), :class:`ExactDataSettings`
(``exact``), each a :class:`DataSettings` (splits, convergence thresholds, threads). The samplers
read plain dicts: :data:`MCMC_DEFAULTS`, :data:`MD_DEFAULTS`, :data:`EXACT_DEFAULTS` are the
dataclasses' defaults as dicts. :func:`resolve_settings` merges the user's dict over the defaults
of the system's sampler and the system's own (``SystemSpec.data_defaults``, :func:`system_defaults`:
e.g. the MCMC systems' proposal, step, chains, burn-in, thinning, placement and LJ55's R-hat
threshold) and rejects unknown keys, so a typo fails loudly instead of silently using a default.
The sampler is the system's ``reference_sampler`` (``sampler`` may be given but must agree).

The configurational temperature (``conf_temp`` of the MD sampler, ``conf_temp_samples`` > 0 of
the others) needs the Laplacian of the energy, i.e. second derivatives by double backward
through autograd; systems whose energy is only once differentiable (``second_derivatives``
false: alanine dipeptide, whose OpenMM energy supplies forces but no Hessian) reject it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eqbg.systems import SYSTEM_SPECS

__all__ = [
    "MCMC_DEFAULTS",
    "MD_DEFAULTS",
    "EXACT_DEFAULTS",
    "SAMPLER_DEFAULTS",
    "Splits",
    "ConvergenceThresholds",
    "DataSettings",
    "MCMCDataSettings",
    "MDDataSettings",
    "ExactDataSettings",
    "CONVERGENCE_DEFAULTS",
    "system_defaults",
    "resolve_settings",
    "SPLITS",
]

SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    """Samples per split; chains (MCMC) or trajectory blocks (MD) are assigned to splits in
    proportion to these sizes, so that no two splits share one."""

    train: int = 10_000  #: training configurations
    val: int = 1_000  #: validation configurations
    test: int = 2_000  #: test configurations


@dataclass
class ConvergenceThresholds:
    """Thresholds that decide whether reference data passes (every sampler; a sampler ignores
    the ones it has no check for)."""

    rhat_max: float = 1.05  #: split R-hat of the energy at most
    #: the configurational temperature fails only if |T_conf - 1| exceeds both this many
    #: standard errors and conf_temp_tol
    conf_temp_k_se: float = 4.0
    conf_temp_tol: float = 0.03  #: see conf_temp_k_se
    min_ess: float = 500.0  #: total effective samples of the energy over all kept samples
    acceptance_min: float = 0.1  #: every chain's post-burn-in acceptance at least
    acceptance_max: float = 0.9  #: and at most
    max_phi_positive: float = 0.15  #: MD of alanine dipeptide: fraction of frames with phi > 0 at most
    #: alanine dipeptide MD: trajectories and splits must agree on the phi > 0 fraction within
    #: this many (autocorrelated) standard errors (eqbg.data.diagnostics.slow_fraction_agreement)
    phi_agreement_z_max: float = 3.0
    #: what a disagreement does: warn (recorded in the diagnostics as converged_slow_coordinate:
    #: false and logged) or fail (a failed convergence check)
    phi_agreement: str = "warn"


@dataclass
class DataSettings:
    """Settings every reference sampler has."""

    sampler: str | None = None  #: the system's reference sampler (may be given; must agree)
    splits: Splits = field(default_factory=Splits)  #: configurations per split
    check_convergence: bool = True  #: raise NotConvergedError on failed checks (else warn)
    #: thresholds of the convergence checks
    convergence: ConvergenceThresholds = field(default_factory=ConvergenceThresholds)
    system_options: dict[str, Any] = field(default_factory=dict)  #: passed to get_system (set by the pipeline)
    #: torch intra-op threads while sampling (restored afterwards; None = leave as is). One thread
    #: is faster for these small batched ops and does not collapse when other jobs share the cores
    num_threads: int | None = 1


@dataclass
class MCMCDataSettings(DataSettings):
    """Reference data by parallel MCMC chains (sampler ``mcmc``: DW4, LJ13, LJ55); each system's
    own defaults (proposal, step, chains, burn-in, thinning, placement) override these."""

    n_chains: int = 128  #: parallel chains (all advanced in one batched call)
    burn_in: int = 2_000  #: steps per chain discarded; step sizes adapt only here
    #: post-burn-in steps per chain (before thinning); None = just enough for the split sizes
    n_steps: int | None = None
    thin: int = 10  #: keep every thin-th state
    #: rw (random-walk Metropolis) or mala (Metropolis-adjusted Langevin, one gradient a step)
    proposal: str = "rw"
    step_size: float = 0.1  #: initial Gaussian proposal std per coordinate
    target_acceptance: float = 0.5  #: Robbins-Monro target during burn-in
    adapt_gain: float = 1.0  #: Robbins-Monro gain: adapt_gain / (t + 10) ** adapt_decay
    adapt_decay: float = 0.6  #: Robbins-Monro decay exponent in (0.5, 1]
    #: random (non-overlapping random placement in a ball) or minimised (the same, then steepest
    #: descent)
    init: str = "minimised"
    init_radius: float | None = None  #: ball radius of the random placement (system default)
    init_min_dist: float | None = None  #: minimum pair distance of that placement (system default)
    minimise_steps: int = 300  #: steepest-descent iterations of the minimised start
    anneal_t0: float = 1.0  #: start temperature of annealing at the beginning of burn-in (1 = off)
    anneal_steps: int = 0  #: annealing length, steps (<= burn_in)
    #: samples of the configurational temperature check (needs the energy's Laplacian; 0 = off)
    conf_temp_samples: int = 1_000
    iat_method: str = "sokal"  #: integrated autocorrelation time: sokal or geyer
    rank_normalised_rhat: bool = True  #: report max(bulk, tail) rank-normalised split R-hat
    device: str = "cpu"  #: torch device of the chains


@dataclass
class MDDataSettings(DataSettings):
    """Reference data by Langevin MD in OpenMM (sampler ``md``: alanine dipeptide): ~3 ns per
    trajectory at the defaults, ~1.5 min on 2 cores."""

    #: frames per split, summed over trajectories
    splits: Splits = field(default_factory=lambda: Splits(train=4_000, val=500, test=1_000))
    n_trajectories: int = 2  #: independent trajectories
    n_workers: int = 2  #: processes running them
    platform: str = "Reference"  #: OpenMM platform: Reference, CPU, CUDA or OpenCL
    timestep_fs: float = 1.0  #: integration step, fs
    friction_per_ps: float = 1.0  #: Langevin friction, 1/ps
    equilibration_ps: float = 20.0  #: discarded at the start of each trajectory, ps
    frame_interval_ps: float = 1.0  #: time between saved frames, ps
    gap_ps: float = 10.0  #: frames skipped after every train/val/test block, ps
    #: each trajectory is cut into this many cycles of [train][gap][val][gap][test][gap], so that
    #: every split gets its share of each slow excursion; 1 = one contiguous block per split
    split_cycles: int = 10
    conf_temp: bool = False  #: configurational temperature check (needs second derivatives)
    iat_method: str = "sokal"  #: integrated autocorrelation time: sokal or geyer
    rank_normalised_rhat: bool = True  #: report max(bulk, tail) rank-normalised split R-hat


@dataclass
class ExactDataSettings(DataSettings):
    """Reference data drawn exactly (sampler ``exact``: GMM-40, Many-Well-32)."""

    #: samples of the configurational temperature check (a check of the energy; 0 = off)
    conf_temp_samples: int = 1_000
    device: str = "cpu"  #: torch device of the draws


CONVERGENCE_DEFAULTS: dict[str, Any] = dataclasses.asdict(ConvergenceThresholds())
MCMC_DEFAULTS: dict[str, Any] = dataclasses.asdict(MCMCDataSettings())
MD_DEFAULTS: dict[str, Any] = dataclasses.asdict(MDDataSettings())
EXACT_DEFAULTS: dict[str, Any] = dataclasses.asdict(ExactDataSettings())
#: Each reference sampler's settings and their defaults (before the system's own).
SAMPLER_DEFAULTS: dict[str, dict[str, Any]] = {"mcmc": MCMC_DEFAULTS, "md": MD_DEFAULTS, "exact": EXACT_DEFAULTS}


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
    base = SAMPLER_DEFAULTS.get(sampler)
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
