"""Evaluate one trained run: reweighting, ESS, NLL, distribution metrics, observables and cost.

:func:`evaluate_samples` does the computation on arrays (no files), as a loop over the metric
registry (:mod:`eqbg.evaluation.metrics`); :func:`evaluate_run` reads a run folder
(``samples.npz``, ``model.pt`` via ``eqbg.rundir.load_flow``, ``train.csv``, ``config.json``) and
the test split, adds what needs the run folder (integration paths, AIS refinement, the reference
populations, cost) and writes ``metrics.json`` plus ``eval.npz`` (everything the figures need, so
they regenerate without the model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import eqbg.evaluation.metrics  # noqa: F401  (registers the metrics)
from eqbg.data import load_dataset
from eqbg.evaluation.context import EvaluationContext, log_q_density
from eqbg.evaluation.metric import METRICS, always, compute_metrics
from eqbg.evaluation.run_metrics import RUN_METRICS, RunContext, compute_run_metrics
from eqbg.evaluation.settings import resolve_settings, split_run_settings
from eqbg.io import provenance
from eqbg.rundir import IDENTITY_KEYS, DataDir, RunDir, load_flow, run_identifiers
from eqbg.systems import get_system

__all__ = ["METRIC_KEYS", "evaluate_run", "evaluate_samples", "metric_labels"]

log = logging.getLogger(__name__)

#: Keys every metrics.json written by :func:`evaluate_run` holds: the run's identity and
#: records, the density kind, and the keys of every metric that applies to every system
#: (:data:`eqbg.evaluation.metric.METRICS`; the others add theirs where they apply, e.g.
#: ``log_z_*`` for targets with a known normaliser, ``delta_f_*`` for alanine dipeptide; with
#: ``evaluate.ais`` also ``ess_ais`` and ``ais_*``). Values that could not be computed are
#: ``null`` (JSON has no NaN).
METRIC_KEYS: tuple[str, ...] = (
    *IDENTITY_KEYS, "run_dir", "provenance", "n_train", "n_train_setting",
    "log_q_density", "log_q_k",
    *(key for spec in METRICS.values() if spec.applies is always for key in spec.keys),
)

def metric_notes() -> tuple[str, ...]:
    """What the tables' metric columns mean: the notes of the samples' metrics, then of the
    run-folder metrics, each in registration order."""
    return tuple(note for spec in [*METRICS.values(), *RUN_METRICS.values()] for note in spec.notes)


def metric_labels() -> dict[str, str]:
    """Table column labels of every labelled metric: of the samples' metrics, then of the
    run-folder metrics (AIS refinement, reference, cost), each in registration order."""
    specs = [*METRICS.values(), *RUN_METRICS.values()]
    return {key: label for spec in specs for key, label in spec.labels.items()}


#: Arrays in eval.npz (figures regenerate from these without the model).  Always:
#: ``energy_data``/``energy_flow`` (kT), ``log_w``, ``failed`` (bool), ``ess_bootstrap``,
#: ``energy_edges`` + ``energy_hist_{data,flow,reweighted}`` (densities), identifiers
#: ``system``/``model``/``loss``/``seed`` (0-d strings); with a model: ``log_q_test``; particle
#: systems: ``distance_edges`` + ``distance_hist_{data,flow,reweighted}``; aldp:
#: ``phi_*``/``psi_*`` (rad), ``rama_hist_{data,flow,reweighted}`` (probability per bin),
#: ``chirality_flow``.


def evaluate_samples(
    system,
    samples: Mapping[str, Any],
    x_test: np.ndarray | torch.Tensor,
    *,
    flow=None,
    settings: Mapping[str, Any] | None = None,
    loss: str | None = None,
    train_curve: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All metrics of one set of flow samples against the test split.

    Args:
        system: ``eqbg.systems.System`` (energy in kT).
        samples: mapping with ``x`` ``(N, n, d)``, ``log_q`` ``(N,)`` and optionally
            ``density`` (``exact``, ``estimate`` with ``density_k``, or ``stochastic``; see
            :func:`log_q_density`), ``nfe``, ``path_length``, ``wall_time_s`` (the
            ``samples.npz`` contents).
        x_test: ``(M, n, d)`` test configurations (CoM-free where the system is).
        flow: model with ``log_prob(x, batch_size=...)``; needed for ``nll`` and
            ``forward_ess`` (both NaN when None or ``compute_nll`` is False).
        settings: overrides of :data:`eqbg.evaluation.settings.DEFAULT_SETTINGS`.
        loss: training loss name (decides the training energy-evaluation count when the curve
            does not record it).
        train_curve: ``train.csv`` as a data frame (training time, energy evaluations).

    Returns:
        ``(metrics, arrays)``: JSON-ready scalar metrics and the arrays for ``eval.npz``.

    Raises:
        ValueError: the samples' ``log_q`` is ``stochastic`` (a noisy estimate cannot enter
            importance weights), or the arrays do not fit together.
    """
    cfg = resolve_settings(settings)
    density, density_k = log_q_density(samples)
    ctx = EvaluationContext.build(system, samples, x_test, cfg, flow=flow, loss=loss, train_curve=train_curve)
    # an estimated log q (importance-sampled marginal) gives consistent but, for finite K,
    # biased weights: every metric built on it is labelled with its kind and K
    metrics: dict[str, Any] = {"log_q_density": density, "log_q_k": density_k}
    values, arrays = compute_metrics(ctx)
    metrics.update(values)
    return metrics, arrays


def evaluate_run(
    system: str,
    run_dir: str | Path | RunDir,
    data_dir: str | Path | DataDir,
    settings: Mapping[str, Any] | None,
    out_path: str | Path,
    *,
    samples_path: str | Path | None = None,
    eval_npz_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate one run and write ``metrics.json`` (atomically) and ``eval.npz`` beside it.

    Reads ``run_dir/samples.npz`` (or ``samples_path``), ``data_dir/test.npz``, the model via
    ``eqbg.rundir.load_flow(run_dir)`` (for the exact-divergence test NLL and forward ESS),
    ``run_dir/train.csv`` and the run's config.

    Args:
        system: system name (``eqbg.systems.get_system``).
        run_dir: ``results/runs/{system}/{model}/{loss}/seed{seed}``, or a :class:`RunDir` of the
            files the evaluate rule declared.
        data_dir: ``results/data/{system}`` holding ``test.npz`` (and the data stage's
            provenance, the umbrella-sampling reference where there is one), or a
            :class:`DataDir` of the files the rule declared.
        settings: overrides of :data:`eqbg.evaluation.settings.DEFAULT_SETTINGS`, flat, or a
            full run-settings dict (see :func:`eqbg.evaluation.settings.split_run_settings`; its
            ``system_options`` go to ``get_system``).
        out_path: ``metrics.json`` path.
        eval_npz_path: where the figure arrays go (default ``out_path`` with name ``eval.npz``).

    Returns:
        The metrics dict that was written.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    data = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
    eval_settings, system_options = split_run_settings(settings)
    cfg = resolve_settings(eval_settings)
    sys_obj = get_system(system, **system_options)

    samples_path = Path(samples_path) if samples_path else run.samples
    samples = run.read_samples(samples_path)
    x_test = load_dataset(data.split("test"), system=sys_obj, split="test")

    flow = None
    if cfg["compute_nll"]:
        flow, _ = load_flow(run, ode=cfg["nll_ode"], device=cfg["device"], dtype=cfg["nll_dtype"])
    config = run.read_config()
    ident = run_identifiers(config)
    if ident["system"] != system:
        raise ValueError(f"run {run.root} is for system {ident['system']!r}, not {system!r}")

    curve = run.read_train_curve()
    log.info("evaluating %s (%d samples)", run.root, len(samples["log_q"]))
    metrics, arrays = evaluate_samples(
        sys_obj, samples, x_test, flow=flow, settings=cfg, loss=ident.get("loss"), train_curve=curve
    )
    ctx = RunContext(run, data, sys_obj, flow, cfg, config)
    compute_run_metrics(ctx, metrics, arrays)
    metrics["provenance"] = provenance(
        stage="evaluate",
        settings=cfg,
        system_options=system_options,
        samples=str(samples_path),
        test_data=str(data.split("test")),
        run_config=config,
    )
    run.write_evaluation(metrics, arrays, ident, metrics_path=out_path, eval_npz_path=eval_npz_path)
    return metrics

