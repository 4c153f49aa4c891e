"""Training curves: loss and validation NLL against the step, from the runs' ``train.csv``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from eqbg.plots.style import empty_figure, method_label, paper_style
from eqbg.rundir import RunDir, run_identifiers

__all__ = ["load_training_curves", "training_curves_plot"]


def load_training_curves(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate ``train.csv`` files, adding ``system``, ``model``, ``loss_name``, ``seed``
    (string) and ``method`` from the run's identity in the ``config.json`` beside each file
    (``loss`` keeps the curve's values)."""
    frames = []
    for path in paths:
        path = Path(path)
        df = pd.read_csv(path)
        ident = run_identifiers(RunDir(path.parent).read_config())
        # "loss" is the curve's loss *value*; the run's loss name goes to "loss_name"
        df["system"] = ident["system"]
        df["model"] = ident["model"]
        df["loss_name"] = ident["loss"]
        df["seed"] = str(ident["seed"])
        df["method"] = method_label(ident["model"], ident["loss"], ident["variant"])
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def training_curves_plot(curves: pd.DataFrame, system: str) -> plt.Figure:
    """Training loss and validation NLL versus step; one line per seed, colour per method.

    Args:
        curves: tidy frame with ``method``, ``seed``, ``step``, ``loss`` and optionally
            ``val_nll`` (rows with NaN are skipped per panel).
    """
    title = f"{system}: training curves"
    if curves.empty or "step" not in curves:
        return empty_figure(title, "no training curves")
    panels = [c for c in ("loss", "val_nll") if c in curves and pd.to_numeric(curves[c], errors="coerce").notna().any()]
    if not panels:
        return empty_figure(title, "no loss or val_nll values")
    labels = {"loss": "training loss", "val_nll": "validation NLL (nats, eqbg conv.)"}
    axes_style, context = paper_style()
    with axes_style, context:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
        for ax, col in zip(axes[0], panels):
            sub = curves[["method", "seed", "step", col]].copy()
            sub[col] = pd.to_numeric(sub[col], errors="coerce")
            sub = sub.dropna(subset=[col])
            sns.lineplot(data=sub, x="step", y=col, hue="method", units="seed", estimator=None,
                         ax=ax, linewidth=1.0, alpha=0.8, palette="colorblind")
            ax.set_ylabel(labels[col])
            ax.set_xlabel("training step")
            if col == "loss" and (sub[col] > 0).all() and sub[col].max() / max(sub[col].min(), 1e-300) > 100:
                ax.set_yscale("log")
        fig.suptitle(title)
        fig.tight_layout()
    return fig
