"""Seaborn figures of the evaluation (Agg backend; PNG and PDF, written atomically)."""

from __future__ import annotations

from eqbg.plots.figures import (
    ALDP_FIGURE_KINDS,
    FIGURE_KINDS,
    distance_histograms,
    energy_histograms,
    ess_plot,
    figure_kinds,
    load_eval_npz,
    load_training_curves,
    make_figures,
    path_length_plot,
    ramachandran_plot,
    sampling_speed_plot,
    save_figure,
    training_curves_plot,
)

__all__ = [
    "ALDP_FIGURE_KINDS",
    "FIGURE_KINDS",
    "distance_histograms",
    "energy_histograms",
    "ess_plot",
    "figure_kinds",
    "load_eval_npz",
    "load_training_curves",
    "make_figures",
    "path_length_plot",
    "ramachandran_plot",
    "sampling_speed_plot",
    "save_figure",
    "training_curves_plot",
]
