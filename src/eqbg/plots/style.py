"""The figures' shared look: style, method labels, the empty figure, atomic saving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from eqbg.io import atomic_path
from eqbg.systems import system_spec

__all__ = ["FORMATS", "KIND_COLOURS", "empty_figure", "length_unit", "method_label", "paper_style",
           "save_figure", "with_method"]

FORMATS: tuple[str, ...] = ("png", "pdf")

#: colour of test data, flow samples and reweighted flow samples in every figure
KIND_COLOURS = {"data": "0.2", "flow": "tab:blue", "reweighted": "tab:orange"}


def length_unit(system: str) -> str:
    """Axis label unit of positions of ``system`` (a registered name): its ``length_unit``
    (e.g. nm), with ``reduced`` spelt out as "reduced units"."""
    unit = system_spec(system).length_unit
    return "reduced units" if unit == "reduced" else unit


def paper_style():
    """``(axes style, plotting context)`` of every figure: use both as context managers."""
    return sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1)


def method_label(model: Any, loss: Any, variant: Any = None) -> str:
    """``"model/loss[/variant]"``, the label every figure uses for a training method."""
    variant = "" if variant is None or (isinstance(variant, float) and math.isnan(variant)) else str(variant)
    return f"{model}/{loss}/{variant}" if variant else f"{model}/{loss}"


def empty_figure(fig_title: str, message: str) -> plt.Figure:
    """A figure saying why it has nothing to show (workflow outputs are fixed files)."""
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


def with_method(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` with a ``method`` column (:func:`method_label`), sorted by method and seed."""
    df = metrics.copy()
    variants = df["variant"] if "variant" in df else [None] * len(df)
    df["method"] = [method_label(m, l, v) for m, l, v in zip(df["model"], df["loss"], variants)]
    return df.sort_values(["method", "seed"] if "seed" in df else ["method"])
