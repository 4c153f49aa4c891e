"""Run scales: a configuration as written (``full``) or every one of its jobs at smoke size.

``scale: smoke`` (in a config file, or ``--config scale=smoke`` on the command line) runs any
grid -- the paper preset included -- through every stage in seconds per job, without editing it:
a shape error in a 12-block float64 flow, or a setting only one preset uses, then fails in
minutes instead of hours into a cluster run. Settings resolution applies it last
(:func:`eqbg.pipeline.run_settings` and the data, population and coupling settings of
:mod:`eqbg.pipeline`), so that it wins over every default and override.

What smoke changes is sizes and nothing else: a few hundred reference configurations from short
chains or a short MD (convergence checks off: such data are not converged), 2 optimiser steps,
8 samples, the smallest AIS (one intermediate distribution, two leapfrog steps) and umbrella
sampling, small evaluation subsets; and the device is
the CPU (``smoke_device: cuda`` for a GPU check). On the CPU every ODE solve is also at its
smallest (one Euler step, :data:`SMOKE_CPU_SOLVER`; validation by a Hutchinson trace) and the samples and test points with exact log q shrink with the dimension
(:data:`SMOKE_CPU_TRACE_BUDGET`); on CUDA the config's solvers and tolerances stay. The models' sizes, dtypes, losses and their options
stay those of the config. ``scale`` is recorded in each
run's ``config.json`` (``training.scale``) and ``metrics.json``, and the tables mark smoke rows.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqbg.data.settings import MCMC_DEFAULTS
from eqbg.flows.solver import SolverSettings

__all__ = [
    "SCALES",
    "scale_of",
    "smoke_run_settings",
    "smoke_data_settings",
    "smoke_population_settings",
    "smoke_coupling_settings",
    "full_size_results",
    "check_smoke_directory",
]

#: Known scales: the config as written, and every job at smoke size.
SCALES = ("full", "smoke")

#: Reference-data split sizes at smoke size (every sampler).
SMOKE_SPLITS = {"train": 256, "val": 64, "test": 64}
#: Training at smoke size: what is capped (``min`` with the config's value) and what is set.
SMOKE_TRAIN_CAPS = {"steps": 2, "batch_size": 16, "val_size": 4, "warmup_steps": 0}
#: Loss settings at smoke size, capped where the run's loss has them (FAB's buffer and AIS).
SMOKE_LOSS_CAPS = {"buffer_batches": 4, "buffer_min_batches": 2, "updates_per_ais": 2}
SMOKE_LOSS_AIS_CAPS = {"n_intermediate": 1, "n_leapfrog": 2}
SMOKE_SAMPLES = 8
#: Samples and test points with exact log q at smoke size on the CPU: at most this many
#: coordinates' worth (at least 2), since the exact trace scales with the dimension:
#: (degrees of freedom, CoM-free): DW4, GMM-40, Many-Well-32 8, LJ13 7, alanine dipeptide 4, LJ55 2.
SMOKE_CPU_TRACE_BUDGET = 256
#: Evaluation at smoke size (capped; ``None`` in the config means "all" and is capped too).
SMOKE_EVALUATE_CAPS = {"nll_n": 8, "bootstrap_reps": 50, "distance_n": 64, "path_subset_n": 2,
                       "energy_test_n": 64}
SMOKE_AIS_CAPS = {"n": 8, "batch_size": 8, "tune_passes": 1, "n_intermediate": 1, "n_leapfrog": 2}
#: MCMC reference data at smoke size (capped).
SMOKE_MCMC_CAPS = {"n_chains": 12, "burn_in": 200, "thin": 2, "minimise_steps": 50,
                   "anneal_steps": 0, "conf_temp_samples": 64}
#: MD reference data at smoke size: ~20 ps per trajectory.
SMOKE_MD = {"equilibration_ps": 1.0, "frame_interval_ps": 0.05, "gap_ps": 0.5, "split_cycles": 1}
#: Umbrella sampling at smoke size: 8 windows of 2 ps.
SMOKE_POPULATION = {"n_windows": 8, "ns_per_window": 0.002, "equilibration_ps": 0.5,
                    "frame_interval_ps": 0.05}
#: Transport-cost measurement at smoke size (set).
SMOKE_COUPLING = {"batch_size": 16, "n_batches": 2}
#: ODE integration at smoke size on the CPU: one Euler step (one exact-trace evaluation per
#: solve), validation by a Hutchinson trace (it only ranks checkpoints). An exact trace costs
#: (n-1)d backward passes per evaluation, ~8 s per configuration for the paper's LJ55 EGNN
#: (64 x 7, float64, one core): adaptive solves of 8 samples took over 15 minutes per run.
#: On CUDA (the GPU check) the config's solvers stay.
SMOKE_CPU_SOLVER = {"method": "euler", "n_steps": 1, "log_q_quadrature": "solver"}


def scale_of(config: Mapping[str, Any]) -> str:
    """The config's ``scale`` (``full`` when absent); an unknown value raises, naming it."""
    scale = config.get("scale", "full")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    return scale


def _cap(section: dict[str, Any], caps: Mapping[str, int]) -> None:
    """Cap ``section``'s values in place at ``caps`` (keys the section has; ``None`` = all)."""
    for key, cap in caps.items():
        if key in section:
            value = section[key]
            section[key] = cap if value is None else min(value, cap)


def smoke_run_settings(
    settings: Mapping[str, Any], device: str = "cpu", dim: int = 1, loss_settings: type | None = None
) -> dict[str, Any]:
    """A run's resolved settings (:func:`eqbg.pipeline.run_settings`) at smoke size, on
    ``device`` (the config's ``smoke_device``: the CPU unless a GPU check asks for CUDA).

    Training: 2 steps at a batch of at most 16 (and at most ``n_train``), validation (if the
    run validates) on 4 configurations at the last step, a FAB buffer of 2-4 batches; 8
    samples; evaluation subsets of 8 test points, 64 energies and distances, 2 path solves and
    an AIS of 8 samples; ``device`` everywhere. On the CPU also every ODE solve by
    :data:`SMOKE_CPU_SOLVER`, and samples and test points with exact log q in proportion to the
    ``dim`` degrees of freedom (:data:`SMOKE_CPU_TRACE_BUDGET`). ``loss_settings`` is the run's
    loss's settings class: the keys of :data:`SMOKE_LOSS_CAPS` it has are capped, and a loss
    that integrates an ODE (a :class:`~eqbg.flows.solver.SolverSettings`) gets the smoke solver.
    Everything else is unchanged.
    """
    s = copy.deepcopy(dict(settings))
    train = s["train"]
    train.update(steps=2, checkpoint_every=1, scale="smoke")
    for key, cap in SMOKE_TRAIN_CAPS.items():
        train[key] = min(train.get(key, cap), cap)
    if loss_settings is not None:
        _smoke_loss(s, loss_settings)
    if train.get("n_train"):
        train["n_train"] = min(train["n_train"], SMOKE_SPLITS["train"])
        train["batch_size"] = min(train["batch_size"], train["n_train"])
    if train.get("val_every", 1) > 0:
        train["val_every"] = 2
    n_exact = SMOKE_SAMPLES if device != "cpu" else max(2, min(SMOKE_SAMPLES, SMOKE_CPU_TRACE_BUDGET // dim))
    s["sample"]["n_samples"] = n_exact
    evaluate = s["evaluate"]
    _cap(evaluate, {k: v for k, v in SMOKE_EVALUATE_CAPS.items() if k != "energy_test_n"})
    evaluate["energy_test_n"] = min(evaluate.get("energy_test_n") or SMOKE_SPLITS["test"],
                                    SMOKE_EVALUATE_CAPS["energy_test_n"])
    if evaluate.get("ais"):
        evaluate["ais"] = {**dict(evaluate["ais"]),
                           **{k: min(evaluate["ais"].get(k, cap), cap) for k, cap in SMOKE_AIS_CAPS.items()}}
    evaluate["nll_n"] = min(evaluate["nll_n"], n_exact)
    if device == "cpu":
        _smallest_integration(s, loss_settings is not None and issubclass(loss_settings, SolverSettings))
    s["device"] = device
    for section in ("train", "sample", "evaluate"):
        if "device" in s[section]:
            s[section]["device"] = device
    return s


def _smoke_loss(s: dict[str, Any], settings_cls: type) -> None:
    """Cap the loss settings of ``s`` that :data:`SMOKE_LOSS_CAPS` names (in place)."""
    loss, fields = s.setdefault("loss", {}), {f.name for f in dataclasses.fields(settings_cls)}
    for key, cap in SMOKE_LOSS_CAPS.items():
        if key in fields:
            loss[key] = min(loss.get(key, cap), cap)
    if {"updates_per_ais", "buffer_min_batches"} <= fields:
        # FAB draws that many distinct batches per AIS pass from a buffer of at least min_batches
        loss["updates_per_ais"] = min(loss["updates_per_ais"], loss["buffer_min_batches"])
    if "ais" in fields:
        ais = loss.setdefault("ais", {})
        for key, cap in SMOKE_LOSS_AIS_CAPS.items():
            ais[key] = min(ais.get(key, cap), cap)


def _smallest_integration(s: dict[str, Any], loss_integrates: bool) -> None:
    """Every ODE solve of ``s`` (training, validation, sampling, test NLL) by
    :data:`SMOKE_CPU_SOLVER`, validation traces by Hutchinson's estimator (in place)."""
    method, n_steps = SMOKE_CPU_SOLVER["method"], SMOKE_CPU_SOLVER["n_steps"]
    s["ode"] = {**s.get("ode", {}), **SMOKE_CPU_SOLVER}
    if loss_integrates:
        s["loss"].update(method=method, n_steps=n_steps)
    s["train"]["val_solver"] = {**s["train"].get("val_solver", {}), "method": method, "n_steps": n_steps}
    s["train"]["val_exact"] = False
    s["sample"].update(SMOKE_CPU_SOLVER)
    s["evaluate"]["nll_ode"] = {**(s["evaluate"].get("nll_ode") or {}), **SMOKE_CPU_SOLVER}


def _smoke_mcmc(out: dict[str, Any]) -> None:
    for key, cap in SMOKE_MCMC_CAPS.items():
        out[key] = min(out.get(key, MCMC_DEFAULTS[key]), cap)
    out.pop("n_steps", None)
    out["device"] = "cpu"


def _smoke_md(out: dict[str, Any]) -> None:
    out.update(SMOKE_MD, platform="Reference")


def _smoke_exact(out: dict[str, Any]) -> None:
    out["conf_temp_samples"] = min(out.get("conf_temp_samples", 64), 64)
    out["device"] = "cpu"


#: What smoke size changes in the data settings of each reference sampler (in place).
SMOKE_SAMPLER_SETTINGS = {"mcmc": _smoke_mcmc, "md": _smoke_md, "exact": _smoke_exact}


def smoke_data_settings(sampler: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A system's ``data`` settings at smoke size for its reference ``sampler`` (``mcmc``, ``md``
    or ``exact``): small splits, short chains or MD, no convergence checks, the CPU."""
    if sampler not in SMOKE_SAMPLER_SETTINGS:
        raise ValueError(f"unknown reference sampler {sampler!r}; known: {sorted(SMOKE_SAMPLER_SETTINGS)}")
    out = copy.deepcopy(dict(settings))
    out["splits"] = dict(SMOKE_SPLITS)
    out["check_convergence"] = False
    SMOKE_SAMPLER_SETTINGS[sampler](out)
    return out


def smoke_population_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Umbrella-sampling settings (``systems.<name>.population``) at smoke size."""
    return {**dict(settings), **SMOKE_POPULATION, "platform": "Reference"}


def smoke_coupling_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Transport-cost settings (``systems.<name>.coupling``) at smoke size."""
    return {**dict(settings), **SMOKE_COUPLING}


def full_size_results(results: str | Path) -> list[Path]:
    """The records under ``results`` of work made at full size: runs whose ``config.json`` does
    not say ``training.scale: smoke``, and reference data whose splits are not smoke's."""
    results = Path(results)
    found = [p for p in sorted(results.glob("runs/**/config.json"))
             if json.loads(p.read_text()).get("training", {}).get("scale", "full") != "smoke"]
    found += [p for p in sorted(results.glob("data/*/provenance.json"))
              if json.loads(p.read_text()).get("settings", {}).get("splits") != SMOKE_SPLITS]
    return found


def check_smoke_directory(config: Mapping[str, Any], results: str | Path = "results") -> None:
    """Refuse a smoke-size run where it would overwrite full-size results (hours of work),
    naming them and the way to run it elsewhere; nothing to check at full size."""
    if scale_of(config) != "smoke":
        return
    found = full_size_results(results)
    if found:
        raise ValueError(
            f"scale=smoke would overwrite full-size results in {results}/ ({len(found)} runs or "
            f"data sets, e.g. {found[0]}); run the smoke check in a directory of its own: "
            "snakemake --directory DIR --configfile config.yaml [PRESET] --config scale=smoke"
        )
