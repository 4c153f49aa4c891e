"""The metrics of a run folder beside those of its samples: integration paths of a fixed subset,
AIS refinement, the umbrella-sampling reference, the run's identity and records, and its cost.

They read what the samples' metrics cannot: the trained flow, the run's ``config.json`` and
checkpoint path, the data folder, and the metrics computed before them (the cost record sums
what the others counted). :func:`eqbg.evaluation.run.evaluate_run` runs them in registration
order after :func:`eqbg.evaluation.metric.compute_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eqbg.evaluation.ais import ais_refinement, supports_ais
from eqbg.evaluation.cost import COST_LABELS, COST_NOTES, run_cost
from eqbg.evaluation.paths import integration_subset
from eqbg.io import read_json
from eqbg.rundir import DataDir, RunDir, run_identifiers
from eqbg.systems.observables import HasDihedrals

__all__ = ["RUN_METRICS", "RunContext", "RunMetricSpec", "compute_run_metrics", "register_run_metric"]

MetricResult = tuple[dict[str, Any], dict[str, np.ndarray]]


@dataclass(frozen=True)
class RunContext:
    """A run folder under evaluation."""

    run: RunDir
    data: DataDir  #: the system's reference-data files (``results/data/{system}``)
    system: Any  #: the target
    flow: Any | None  #: the trained flow (None when the evaluation does not load it)
    cfg: dict[str, Any]  #: resolved evaluation settings
    config: dict[str, Any]  #: the run's ``config.json``


@dataclass(frozen=True)
class RunMetricSpec:
    """A registered run-folder metric: ``compute(ctx, metrics so far) -> (metrics, arrays)``."""

    compute: Callable[[RunContext, dict[str, Any]], MetricResult]
    applies: Callable[[RunContext], bool]
    description: str
    labels: dict[str, str] = field(default_factory=dict)  #: table column labels, as for metrics
    notes: tuple[str, ...] = ()  #: what its columns mean, as for metrics


#: name -> run-folder metric, in evaluation order
RUN_METRICS: dict[str, RunMetricSpec] = {}


def register_run_metric(name: str, compute: Callable[[RunContext, dict[str, Any]], MetricResult],
                        description: str, *, applies: Callable[[RunContext], bool] = lambda ctx: True,
                        labels: dict[str, str] | None = None, notes: tuple[str, ...] = ()) -> None:
    """Add ``name`` to every run evaluation where ``applies(ctx)``, after those before it."""
    if name in RUN_METRICS:
        raise ValueError(f"run metric {name!r} is already registered")
    RUN_METRICS[name] = RunMetricSpec(compute, applies, description, dict(labels or {}), tuple(notes))


def compute_run_metrics(ctx: RunContext, metrics: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Every registered run metric that applies, merged into ``metrics`` and ``arrays`` in order."""
    for spec in RUN_METRICS.values():
        if spec.applies(ctx):
            values, arrs = spec.compute(ctx, metrics)
            metrics.update(values)
            arrays.update(arrs)


def _paths(ctx: RunContext, metrics: dict[str, Any]) -> MetricResult:
    """NFE and path length per draw of ``path_subset_n`` single-sample solves (ODE flows)."""
    paths = integration_subset(ctx.flow, ctx.cfg["path_subset_n"], seed=ctx.cfg["nll_seed"])
    if not paths:
        return {}, {}
    return {"nfe_subset": float(paths["nfe_subset"].mean()),
            "path_length_subset": float(paths["path_length_subset"].mean()),
            "path_subset_n": int(ctx.cfg["path_subset_n"])}, paths


def _ais(ctx: RunContext, metrics: dict[str, Any]) -> MetricResult:
    """AIS from the flow towards the target (``evaluate.ais``), coupling flows only."""
    if ctx.flow is None or not supports_ais(ctx.flow):
        return {"ais_skipped": "the flow has no cheap differentiable density (AIS needs a coupling flow)"}, {}
    values, log_w = ais_refinement(ctx.flow, ctx.system.energy, ctx.cfg["ais"], checkpoint=ctx.run.checkpoint,
                                   log_z=getattr(ctx.system, "log_z", None))
    return values, {"log_w_ais": log_w}


def _has_reference_population(ctx: RunContext) -> bool:
    return isinstance(ctx.system, HasDihedrals) and ctx.data.population.is_file()


def _reference_population(ctx: RunContext, metrics: dict[str, Any]) -> MetricResult:
    """The converged phi > 0 free-energy difference by umbrella sampling (eqbg.data.population):
    the laptop MD test data hardly visit phi > 0, so ``delta_f_data`` says little."""
    pop = read_json(ctx.data.population)["intervals"]["phi_positive"]
    return {"delta_f_reference": pop["delta_f_kt"], "delta_f_reference_err": pop["delta_f_se"]}, {}


def _records(ctx: RunContext, metrics: dict[str, Any]) -> MetricResult:
    """The run's identity, its scale (smoke runs are marked in every table), the training
    configurations it used and the ``n_train`` it asked for (None: all), its folder."""
    training = ctx.config.get("training") or {}
    return {
        **run_identifiers(ctx.config),
        "scale": ctx.config.get("training", {}).get("scale", "full"),
        "n_train": ctx.config.get("n_train"),
        "n_train_setting": training.get("n_train"),
        "run_dir": str(ctx.run.root),
    }, {}


def _cost(ctx: RunContext, metrics: dict[str, Any]) -> MetricResult:
    """The cost record (eqbg.evaluation.cost) from the metrics so far and the data's provenance."""
    data_provenance = ctx.data.provenance
    return run_cost(metrics, read_json(data_provenance) if data_provenance.is_file() else None), {}


register_run_metric("paths", _paths, "NFE and path length of single-sample solves",
                    applies=lambda ctx: ctx.flow is not None and bool(ctx.cfg["path_subset_n"]))
register_run_metric("ais", _ais, "AIS refinement of a coupling flow", applies=lambda ctx: bool(ctx.cfg["ais"]),
                    labels={"ess_ais": "ESS flow+AIS"})
register_run_metric("reference_population", _reference_population, "umbrella-sampling phi > 0 free energy",
                    applies=_has_reference_population, labels={"delta_f_reference": "ΔF ref. US (kT)"})
register_run_metric("records", _records, "identity, scale, training-set size, folder")
register_run_metric("cost", _cost, "energy evaluations and seconds, per effective sample", labels=COST_LABELS,
                    notes=COST_NOTES)
