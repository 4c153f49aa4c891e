"""The figures of one system: which kinds it gets, and :func:`make_figures`, which builds them
all from the files the evaluation stage wrote (``metrics.json`` table, ``eval.npz``,
``train.csv``). One figure kind a module: histograms, per-run scalars, speed, curves, cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from eqbg.plots.cost import cost_plot
from eqbg.plots.curves import load_training_curves, training_curves_plot
from eqbg.plots.histograms import distance_histograms, energy_histograms, ramachandran_plot
from eqbg.plots.per_run import ess_plot, path_length_plot, training_size_plot
from eqbg.plots.speed import sampling_speed_plot
from eqbg.plots.style import save_figure
from eqbg.systems import system_spec

__all__ = ["ALDP_FIGURE_KINDS", "FIGURE_BUILDERS", "FIGURE_KINDS", "figure_kinds", "load_eval_npz",
           "make_figures"]


#: Figure kinds written for every system, and the extra ones for systems with backbone
#: dihedrals (alanine dipeptide).
FIGURE_KINDS: tuple[str, ...] = (
    "energy_hist",
    "distance_hist",
    "ess",
    "training_curves",
    "path_length",
    "sampling_speed",
    "training_size",
    "cost",
)

ALDP_FIGURE_KINDS: tuple[str, ...] = ("ramachandran",)


#: ``(metrics of the system, its runs' eval.npz arrays, training curves, system) -> figure``
FigureBuilder = Callable[[pd.DataFrame, Sequence[Mapping[str, Any]], pd.DataFrame, str], plt.Figure]

#: figure kind -> its builder (:func:`make_figures` writes the kinds of :func:`figure_kinds`)
FIGURE_BUILDERS: dict[str, FigureBuilder] = {
    "energy_hist": lambda metrics, evals, curves, system: energy_histograms(evals, system),
    "distance_hist": lambda metrics, evals, curves, system: distance_histograms(evals, system),
    "ess": lambda metrics, evals, curves, system: ess_plot(metrics, system),
    "training_curves": lambda metrics, evals, curves, system: training_curves_plot(curves, system),
    "path_length": lambda metrics, evals, curves, system: path_length_plot(metrics, system),
    "sampling_speed": lambda metrics, evals, curves, system: sampling_speed_plot(metrics, system),
    "training_size": lambda metrics, evals, curves, system: training_size_plot(metrics, system),
    "ramachandran": lambda metrics, evals, curves, system: ramachandran_plot(evals, system),
    "cost": lambda metrics, evals, curves, system: cost_plot(metrics, system),
}


def figure_kinds(system: str) -> tuple[str, ...]:
    """The figure kinds :func:`make_figures` writes for ``system`` (a registered name): the
    Ramachandran figure is added when the system has the ``"dihedrals"`` observable."""
    dihedrals = "dihedrals" in system_spec(system).observables
    return FIGURE_KINDS + (ALDP_FIGURE_KINDS if dihedrals else ())


def load_eval_npz(path: str | Path) -> dict[str, Any]:
    """Arrays of an ``eval.npz``; 0-d identifier arrays become Python strings/ints."""
    with np.load(path, allow_pickle=False) as f:
        out: dict[str, Any] = {}
        for key in f.files:
            value = f[key]
            out[key] = value.item() if value.ndim == 0 else value
    if "seed" in out:
        try:
            out["seed"] = int(out["seed"])
        except (TypeError, ValueError):
            pass
    return out


def make_figures(
    system: str,
    metrics_df: pd.DataFrame,
    eval_npz_paths: Iterable[str | Path],
    train_csv_paths: Iterable[str | Path],
    out_dir: str | Path,
) -> dict[str, list[Path]]:
    """Write every figure kind of :func:`figure_kinds` for ``system`` to ``out_dir``.

    Args:
        system: system name; ``metrics_df`` is filtered to it.
        metrics_df: ``eqbg.evaluation.collect_metrics`` output.
        eval_npz_paths: the runs' ``eval.npz`` files.
        train_csv_paths: the runs' ``train.csv`` files.
        out_dir: folder receiving ``{kind}.png`` and ``{kind}.pdf``.

    Returns:
        ``{kind: [png_path, pdf_path]}``.  Every kind is always written (a figure saying
        "no data" when its inputs are empty) so workflow outputs are fixed.
    """
    out_dir = Path(out_dir)
    metrics = metrics_df[metrics_df["system"] == system] if "system" in metrics_df else metrics_df
    evals = [load_eval_npz(p) for p in eval_npz_paths]
    evals = [e for e in evals if e.get("system", system) in (system, "")]
    curves = load_training_curves(train_csv_paths)
    return {kind: save_figure(FIGURE_BUILDERS[kind](metrics, evals, curves, system), out_dir / kind) for kind in figure_kinds(system)}
