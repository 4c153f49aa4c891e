"""Figures of per-run scalars: ESS with its interval, path length, NLL against the
training-set size."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from eqbg.plots.style import empty_figure, length_unit, method_label, paper_style, with_method

__all__ = ["ess_plot", "path_length_plot", "training_size_plot"]


def ess_plot(metrics: pd.DataFrame, system: str) -> plt.Figure:
    """Kish ESS per run (one marker per seed) with its bootstrap interval, grouped by method."""
    title = f"{system}: effective sample size"
    if metrics.empty or "ess" not in metrics or not np.isfinite(metrics["ess"].astype(float)).any():
        return empty_figure(title, "no ESS values")
    df = with_method(metrics)
    df = df[np.isfinite(df["ess"].astype(float))]  # runs without a Kish ESS (MCMC) have none to show
    methods = list(dict.fromkeys(df["method"]))
    axes_style, context = paper_style()
    with axes_style, context:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(methods) + 2), 3.4))
        palette = sns.color_palette("colorblind", n_colors=max(3, len(methods)))
        for i, method in enumerate(methods):
            sub = df[df["method"] == method]
            offsets = np.linspace(-0.15, 0.15, len(sub)) if len(sub) > 1 else [0.0]
            ess = sub["ess"].astype(float).to_numpy()
            low = sub.get("ess_ci_low", sub["ess"]).astype(float).to_numpy()
            high = sub.get("ess_ci_high", sub["ess"]).astype(float).to_numpy()
            yerr = np.vstack([np.clip(ess - low, 0, None), np.clip(high - ess, 0, None)])
            ax.errorbar(i + np.asarray(offsets), ess, yerr=yerr, fmt="o", color=palette[i],
                        capsize=3, label=method)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel("Kish ESS (fraction)")
        ax.set_xlabel("model/loss")
        positive = df["ess"].astype(float)
        if (positive > 0).all() and positive.max() / max(positive.min(), 1e-300) > 20:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1.05)
        level = df["ess_ci_level"].iloc[0] if "ess_ci_level" in df else float("nan")
        n = df["ess_n"].iloc[0] if "ess_n" in df else "?"
        ax.set_title(f"{title}\n(markers: seeds; bars: {level:.0%} bootstrap interval; n={n:,} samples)"
                     if isinstance(level, float) and math.isfinite(level) and isinstance(n, (int, np.integer, float))
                     else title)
        fig.tight_layout()
    return fig


def _scalar_plot(metrics: pd.DataFrame, column: str, system: str, title: str, ylabel: str,
                 log: bool = False) -> plt.Figure:
    if metrics.empty or column not in metrics:
        return empty_figure(f"{system}: {title}", f"no {column} values")
    df = with_method(metrics)
    df[column] = pd.to_numeric(df[column], errors="coerce")
    df = df[np.isfinite(df[column])]
    if df.empty:
        return empty_figure(f"{system}: {title}", f"no finite {column} values")
    axes_style, context = paper_style()
    with axes_style, context:
        n_methods = df["method"].nunique()
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * n_methods + 2), 3.4))
        sns.barplot(data=df, x="method", y=column, errorbar="se", ax=ax, color="0.8", edgecolor="0.3")
        sns.stripplot(data=df, x="method", y=column, ax=ax, color="tab:blue", size=5, jitter=0.1)
        if log and (df[column] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("model/loss")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", rotation=30)
        for label in ax.get_xticklabels():
            label.set_ha("right")
        ax.set_title(f"{system}: {title}\n(bars: mean ± sem over seeds; dots: seeds)")
        fig.tight_layout()
    return fig


def training_size_plot(metrics: pd.DataFrame, system: str) -> plt.Figure:
    """Test NLL against the number of training configurations (Satorras et al. 2021): mean ±
    sem over seeds per model/loss, for the runs that asked for a training-set size."""
    title = f"{system}: NLL vs training-set size"
    need = {"n_train_setting", "n_train", "nll"}
    if metrics.empty or not need <= set(metrics):
        return empty_figure(title, "no training-set-size runs")
    df = metrics[pd.to_numeric(metrics["n_train_setting"], errors="coerce").notna()].copy()
    df["nll"] = pd.to_numeric(df["nll"], errors="coerce")
    df = df[np.isfinite(df["nll"])]
    if df.empty:
        return empty_figure(title, "no training-set-size runs")
    df["method"] = [method_label(m, l) for m, l in zip(df["model"], df["loss"])]
    axes_style, context = paper_style()
    with axes_style, context:
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
        palette = sns.color_palette("colorblind", n_colors=max(3, df["method"].nunique()))
        for colour, (method, sub) in zip(palette, df.groupby("method", sort=True)):
            stats = sub.groupby("n_train")["nll"].agg(["mean", "std", "count"]).reset_index()
            sem = (stats["std"] / np.sqrt(stats["count"])).fillna(0.0)
            ax.errorbar(stats["n_train"], stats["mean"], yerr=sem, fmt="o-", capsize=3,
                        color=colour, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("training configurations")
        ax.set_ylabel("test NLL (nats, eqbg convention)")
        ax.legend(fontsize="small")
        ax.set_title(f"{title}\n(mean ± sem over seeds)")
        fig.tight_layout()
    return fig


def path_length_plot(metrics: pd.DataFrame, system: str) -> plt.Figure:
    """Mean integration path length ``E|x_1 - x_0|`` of generated samples per method."""
    return _scalar_plot(metrics, "path_length", system, "integration path length",
                        f"mean path length ({length_unit(system)})")
