"""Seaborn figures of the evaluation: one function per figure kind, taking data frames/arrays.

Every function returns a ``matplotlib.figure.Figure``; :func:`save_figure` writes it as PNG and
PDF atomically; :func:`make_figures` builds all kinds for one system from the files the
evaluation stage wrote (``metrics.json`` table, ``eval.npz``, ``train.csv``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from eqbg.io import atomic_path  # noqa: E402
from eqbg.systems import system_spec  # noqa: E402

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
FORMATS: tuple[str, ...] = ("png", "pdf")

_KIND_COLOURS = {"data": "0.2", "flow": "tab:blue", "reweighted": "tab:orange"}


def figure_kinds(system: str) -> tuple[str, ...]:
    """The figure kinds :func:`make_figures` writes for ``system`` (a registered name): the
    Ramachandran figure is added when the system has the ``"dihedrals"`` observable."""
    dihedrals = "dihedrals" in system_spec(system).observables
    return FIGURE_KINDS + (ALDP_FIGURE_KINDS if dihedrals else ())


def length_unit(system: str) -> str:
    """Axis label unit of positions of ``system`` (a registered name): its ``length_unit``
    (e.g. nm), with ``reduced`` spelt out as "reduced units"."""
    unit = system_spec(system).length_unit
    return "reduced units" if unit == "reduced" else unit


def _style():
    return sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1)


def method_label(model: Any, loss: Any, variant: Any = None) -> str:
    """``"model/loss[/variant]"``, the label every figure uses for a training method."""
    variant = "" if variant is None or (isinstance(variant, float) and math.isnan(variant)) else str(variant)
    return f"{model}/{loss}/{variant}" if variant else f"{model}/{loss}"


def _empty(fig_title: str, message: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    fig.suptitle(fig_title)
    return fig


def save_figure(fig: plt.Figure, stem: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` to ``stem.png`` and ``stem.pdf`` (atomically) and close it."""
    paths = []
    for ext in formats:
        path = Path(f"{stem}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- histograms


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
    axes_style, context = _style()
    with axes_style, context:
        grid = sns.relplot(
            data=df, x="x", y="density", hue="samples", units="seed", estimator=None,
            col="method", col_wrap=min(3, df["method"].nunique()), kind="line",
            palette=_KIND_COLOURS, drawstyle="steps-mid", height=2.8, aspect=1.3,
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
        return _empty(title, "no evaluation data")
    return _hist_figure(df, title, "u(x) (kT)")


def distance_histograms(evals: Sequence[Mapping[str, Any]], system: str) -> plt.Figure:
    """Histograms of all interatomic distances (pooled over pairs), data vs flow vs reweighted."""
    df = _hist_frame(evals, "distance")
    title = f"{system}: interatomic distances"
    if df.empty:
        return _empty(title, "no evaluation data")
    return _hist_figure(df, title, f"r_ij ({length_unit(system)})")


# ----------------------------------------------------------------------------- per-run scalars


def _with_method(metrics: pd.DataFrame) -> pd.DataFrame:
    df = metrics.copy()
    variants = df["variant"] if "variant" in df else [None] * len(df)
    df["method"] = [method_label(m, l, v) for m, l, v in zip(df["model"], df["loss"], variants)]
    return df.sort_values(["method", "seed"] if "seed" in df else ["method"])


def ess_plot(metrics: pd.DataFrame, system: str) -> plt.Figure:
    """Kish ESS per run (one marker per seed) with its bootstrap interval, grouped by method."""
    title = f"{system}: effective sample size"
    if metrics.empty or "ess" not in metrics or not np.isfinite(metrics["ess"].astype(float)).any():
        return _empty(title, "no ESS values")
    df = _with_method(metrics)
    df = df[np.isfinite(df["ess"].astype(float))]  # runs without a Kish ESS (MCMC) have none to show
    methods = list(dict.fromkeys(df["method"]))
    axes_style, context = _style()
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
        return _empty(f"{system}: {title}", f"no {column} values")
    df = _with_method(metrics)
    df[column] = pd.to_numeric(df[column], errors="coerce")
    df = df[np.isfinite(df[column])]
    if df.empty:
        return _empty(f"{system}: {title}", f"no finite {column} values")
    axes_style, context = _style()
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
        return _empty(title, "no training-set-size runs")
    df = metrics[pd.to_numeric(metrics["n_train_setting"], errors="coerce").notna()].copy()
    df["nll"] = pd.to_numeric(df["nll"], errors="coerce")
    df = df[np.isfinite(df["nll"])]
    if df.empty:
        return _empty(title, "no training-set-size runs")
    df["method"] = [method_label(m, l) for m, l in zip(df["model"], df["loss"])]
    axes_style, context = _style()
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


#: What the sampling-speed figure shows: metrics.json key -> legend label.
SPEED_QUANTITIES: dict[str, str] = {
    "samples_per_s": "samples/s",
    "ess_per_s": "effective samples/s",
}


def _speed_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """Long frame ``method, seed, quantity, value`` of the finite speed metrics present."""
    df = _with_method(metrics)
    frames = []
    for key, label in SPEED_QUANTITIES.items():
        if key not in df:
            continue
        values = pd.to_numeric(df[key], errors="coerce")
        keep = np.isfinite(values)
        frames.append(pd.DataFrame({
            "method": df["method"][keep].to_numpy(),
            "seed": df["seed"][keep].astype(str).to_numpy() if "seed" in df else "",
            "quantity": label,
            "value": values[keep].to_numpy(dtype=float),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sampling_speed_plot(metrics: pd.DataFrame, system: str) -> plt.Figure:
    """Samples per second (exact log q included) and effective samples per second (the ESS
    fraction times n over the sampling plus target-energy time), per method.

    Bars are means over seeds with sem, dots are seeds, one colour per quantity.  The y axis
    is logarithmic when every value is positive and they span more than a factor 10.
    """
    title = f"{system}: sampling speed"
    df = _speed_frame(metrics) if not metrics.empty else pd.DataFrame()
    if df.empty:
        return _empty(title, "no samples_per_s or ess_per_s values")
    methods = list(dict.fromkeys(df["method"]))
    quantities = [q for q in SPEED_QUANTITIES.values() if q in set(df["quantity"])]
    palette = dict(zip(SPEED_QUANTITIES.values(), ("0.75", "tab:orange")))
    axes_style, context = _style()
    with axes_style, context:
        fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(methods) + 2.5), 3.8))
        sns.barplot(data=df, x="method", y="value", hue="quantity", order=methods,
                    hue_order=quantities, errorbar="se", ax=ax, palette=palette, edgecolor="0.3")
        sns.stripplot(data=df, x="method", y="value", hue="quantity", order=methods,
                      hue_order=quantities, dodge=True, ax=ax, palette=["tab:blue"] * len(quantities),
                      size=4, jitter=0.05, legend=False)
        values = df["value"]
        if (values > 0).all() and values.max() / values.min() > 10:
            ax.set_yscale("log")
        ax.set_xlabel("model/loss")
        ax.set_ylabel("per second of wall time")
        ax.tick_params(axis="x", rotation=30)
        for label in ax.get_xticklabels():
            label.set_ha("right")
        ax.legend(title=None, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title(f"{title}\nsamples/s: n / sampling time (exact log q included); effective: "
                     "ESS × n / (sampling + target-energy time)\nbars: mean ± sem over seeds; dots: seeds",
                     fontsize="small")
        fig.tight_layout()
    return fig


def training_curves_plot(curves: pd.DataFrame, system: str) -> plt.Figure:
    """Training loss and validation NLL versus step; one line per seed, colour per method.

    Args:
        curves: tidy frame with ``method``, ``seed``, ``step``, ``loss`` and optionally
            ``val_nll`` (rows with NaN are skipped per panel).
    """
    title = f"{system}: training curves"
    if curves.empty or "step" not in curves:
        return _empty(title, "no training curves")
    panels = [c for c in ("loss", "val_nll") if c in curves and pd.to_numeric(curves[c], errors="coerce").notna().any()]
    if not panels:
        return _empty(title, "no loss or val_nll values")
    labels = {"loss": "training loss", "val_nll": "validation NLL (nats, eqbg conv.)"}
    axes_style, context = _style()
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


def ramachandran_plot(evals: Sequence[Mapping[str, Any]], system: str = "aldp") -> plt.Figure:
    """Ramachandran free energies ``-log p(phi, psi)`` (kT) of data, flow and reweighted flow,
    one row per method (first seed of each method)."""
    title = f"{system}: Ramachandran free energy"
    chosen: dict[str, Mapping[str, Any]] = {}
    for ev in sorted(evals, key=lambda e: str(e.get("seed"))):
        if "rama_hist_data" in ev:
            chosen.setdefault(method_label(ev.get("model"), ev.get("loss"), ev.get("variant")), ev)
    if not chosen:
        return _empty(title, "no dihedral data")
    axes_style, context = _style()
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


# ----------------------------------------------------------------------------- driver


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


def load_training_curves(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate ``train.csv`` files, adding ``system``, ``model``, ``loss_name``, ``seed``
    (string) and ``method`` from the run's identity in the ``config.json`` beside each file
    (``loss`` keeps the curve's values)."""
    from eqbg.evaluation.run import run_identifiers
    from eqbg.io import read_json

    frames = []
    for path in paths:
        path = Path(path)
        df = pd.read_csv(path)
        ident = run_identifiers(read_json(path.parent / "config.json"))
        # "loss" is the curve's loss *value*; the run's loss name goes to "loss_name"
        df["system"] = ident["system"]
        df["model"] = ident["model"]
        df["loss_name"] = ident["loss"]
        df["seed"] = str(ident["seed"])
        df["method"] = method_label(ident["model"], ident["loss"], ident["variant"])
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


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
    from eqbg.plots.cost import cost_plot  # the cost figure builds on this module's helpers

    out_dir = Path(out_dir)
    metrics = metrics_df[metrics_df["system"] == system] if "system" in metrics_df else metrics_df
    evals = [load_eval_npz(p) for p in eval_npz_paths]
    evals = [e for e in evals if e.get("system", system) in (system, "")]
    curves = load_training_curves(train_csv_paths)
    builders = {
        "energy_hist": lambda: energy_histograms(evals, system),
        "distance_hist": lambda: distance_histograms(evals, system),
        "ess": lambda: ess_plot(metrics, system),
        "training_curves": lambda: training_curves_plot(curves, system),
        "path_length": lambda: path_length_plot(metrics, system),
        "sampling_speed": lambda: sampling_speed_plot(metrics, system),
        "training_size": lambda: training_size_plot(metrics, system),
        "ramachandran": lambda: ramachandran_plot(evals, system),
        "cost": lambda: cost_plot(metrics, system),
    }
    return {kind: save_figure(builders[kind](), out_dir / kind) for kind in figure_kinds(system)}
