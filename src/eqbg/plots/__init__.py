"""Seaborn figures of the evaluation (Agg backend; PNG and PDF, written atomically)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless, before any pyplot import: figures are files, never windows

from eqbg.plots.cost import cost_plot  # noqa: E402
from eqbg.plots.curves import load_training_curves, training_curves_plot  # noqa: E402
from eqbg.plots.figures import (  # noqa: E402
    ALDP_FIGURE_KINDS,
    FIGURE_BUILDERS,
    FIGURE_KINDS,
    figure_kinds,
    load_eval_npz,
    make_figures,
)
from eqbg.plots.histograms import distance_histograms, energy_histograms, ramachandran_plot  # noqa: E402
from eqbg.plots.per_run import ess_plot, path_length_plot, training_size_plot  # noqa: E402
from eqbg.plots.speed import sampling_speed_plot  # noqa: E402
from eqbg.plots.style import method_label, save_figure  # noqa: E402

__all__ = [
    "ALDP_FIGURE_KINDS",
    "FIGURE_BUILDERS",
    "FIGURE_KINDS",
    "cost_plot",
    "distance_histograms",
    "energy_histograms",
    "ess_plot",
    "figure_kinds",
    "load_eval_npz",
    "load_training_curves",
    "make_figures",
    "method_label",
    "path_length_plot",
    "ramachandran_plot",
    "sampling_speed_plot",
    "save_figure",
    "training_curves_plot",
    "training_size_plot",
]
