"""Quality against cost: every flow and the budget-matched MCMC of a system in one plane.

x: target-energy evaluations of everything a run cost (``cost_energy_evals_total``,
``eqbg.evaluation.cost``; the MCMC runs: their budget); y: the reweighted energy W2 to the test
data (the quality the claims compare). A flow left of and below the MCMC points beats MCMC.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from eqbg.plots.style import empty_figure, paper_style, with_method

__all__ = ["cost_plot", "X_COLUMN", "Y_COLUMN"]

X_COLUMN, Y_COLUMN = "cost_energy_evals_total", "energy_w2_reweighted"


def cost_plot(metrics: pd.DataFrame, system: str) -> plt.Figure:
    """Reweighted energy W2 against total energy evaluations, one marker per run (seed)."""
    title = f"{system}: quality against target-energy evaluations"
    if metrics.empty or not {X_COLUMN, Y_COLUMN} <= set(metrics):
        return empty_figure(title, "no cost or energy W2 values")
    df = with_method(metrics)
    for column in (X_COLUMN, Y_COLUMN):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df = df[np.isfinite(df[X_COLUMN]) & np.isfinite(df[Y_COLUMN]) & (df[X_COLUMN] > 0)]
    if df.empty:
        return empty_figure(title, "no run with a finite cost and energy W2")
    df["kind"] = np.where(df["model"] == "mcmc", "MCMC (budget-matched)", "flow")
    axes_style, context = paper_style()
    with axes_style, context:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        sns.scatterplot(data=df, x=X_COLUMN, y=Y_COLUMN, hue="method", style="kind",
                        markers={"flow": "o", "MCMC (budget-matched)": "X"}, s=70, ax=ax)
        ax.set_xscale("log")
        if (df[Y_COLUMN] > 0).all() and df[Y_COLUMN].max() / df[Y_COLUMN].min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel("target-energy evaluations, everything the run cost")
        ax.set_ylabel("energy W2 to test data, reweighted (kT)")
        ax.set_title(f"{title}\n(flows: data pro rata + training + sampling + refinement; MCMC: its budget)")
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left", borderaxespad=0)
        fig.tight_layout()
    return fig
