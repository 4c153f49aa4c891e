"""Histogram figures: energies, interatomic distances, Ramachandran free energies
(precomputed per run in ``eval.npz``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from eqbg.plots.style import KIND_COLOURS, empty_figure, length_unit, method_label, paper_style

__all__ = ["distance_histograms", "energy_histograms", "ramachandran_plot"]


def _hist_frame(evals: Sequence[Mapping[str, Any]], prefix: str) -> pd.DataFrame:
    rows = []
    for ev in evals:
        edges = np.asarray(ev.get(f"{prefix}_edges", []), dtype=float)
        if edges.size < 2:
            continue
        centres = 0.5 * (edges[1:] + edges[:-1])
        for kind in ("data", "flow", "reweighted"):
            key = f"{prefix}_hist_{kind}"
            if key not in ev:
                continue
            rows.append(
                pd.DataFrame(
                    {
                        "x": centres,
                        "density": np.asarray(ev[key], dtype=float),
                        "samples": kind,
                        "method": method_label(ev.get("model"), ev.get("loss"), ev.get("variant")),
                        "seed": str(ev.get("seed")),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _hist_figure(df: pd.DataFrame, title: str, xlabel: str) -> plt.Figure:
    axes_style, context = paper_style()
    with axes_style, context:
        grid = sns.relplot(
            data=df, x="x", y="density", hue="samples", units="seed", estimator=None,
            col="method", col_wrap=min(3, df["method"].nunique()), kind="line",
            palette=KIND_COLOURS, drawstyle="steps-mid", height=2.8, aspect=1.3,
            facet_kws={"sharex": False, "sharey": False}, linewidth=1.0, alpha=0.85,
        )
        grid.set_axis_labels(xlabel, "density")
        grid.set_titles("{col_name}")
        grid.figure.suptitle(title, y=1.03)
    return grid.figure


def energy_histograms(evals: Sequence[Mapping[str, Any]], system: str) -> plt.Figure:
    """Energy histograms of test data, flow samples and reweighted flow samples, one panel per
    method (every seed drawn; histograms precomputed in ``eval.npz``)."""
    df = _hist_frame(evals, "energy")
    title = f"{system}: energy distributions"
    if df.empty:
        return empty_figure(title, "no evaluation data")
    return _hist_figure(df, title, "u(x) (kT)")


def distance_histograms(evals: Sequence[Mapping[str, Any]], system: str) -> plt.Figure:
    """Histograms of all interatomic distances (pooled over pairs), data vs flow vs reweighted."""
    df = _hist_frame(evals, "distance")
    title = f"{system}: interatomic distances"
    if df.empty:
        return empty_figure(title, "no evaluation data")
    return _hist_figure(df, title, f"r_ij ({length_unit(system)})")


def ramachandran_plot(evals: Sequence[Mapping[str, Any]], system: str = "aldp") -> plt.Figure:
    """Ramachandran free energies ``-log p(phi, psi)`` (kT) of data, flow and reweighted flow,
    one row per method (first seed of each method)."""
    title = f"{system}: Ramachandran free energy"
    chosen: dict[str, Mapping[str, Any]] = {}
    for ev in sorted(evals, key=lambda e: str(e.get("seed"))):
        if "rama_hist_data" in ev:
            chosen.setdefault(method_label(ev.get("model"), ev.get("loss"), ev.get("variant")), ev)
    if not chosen:
        return empty_figure(title, "no dihedral data")
    axes_style, context = paper_style()
    with sns.axes_style("white"), context:
        fig, axes = plt.subplots(len(chosen), 3, figsize=(10, 3.3 * len(chosen)), squeeze=False,
                                 layout="constrained")
        for row, (method, ev) in enumerate(chosen.items()):
            for col, kind in enumerate(("data", "flow", "reweighted")):
                ax = axes[row, col]
                hist = np.asarray(ev[f"rama_hist_{kind}"], dtype=float)
                with np.errstate(divide="ignore"):
                    free = -np.log(hist)
                free -= np.nanmin(free[np.isfinite(free)]) if np.isfinite(free).any() else 0.0
                im = ax.imshow(free.T, origin="lower", extent=(-np.pi, np.pi, -np.pi, np.pi),
                               cmap="viridis", vmin=0, vmax=10, aspect="equal")
                ax.set_title({"data": "test data", "flow": "flow", "reweighted": "flow, reweighted"}[kind])
                ax.set_xlabel("φ (rad)")
                ax.set_ylabel(f"{method} (seed {ev.get('seed')})\nψ (rad)" if col == 0 else "ψ (rad)")
            fig.colorbar(im, ax=axes[row].tolist(), label="F (kT)", shrink=0.8)
        fig.suptitle(title)
    return fig
