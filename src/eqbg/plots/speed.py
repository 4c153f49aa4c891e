"""The sampling-speed figure: samples and effective samples per second of wall time."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from eqbg.plots.style import empty_figure, paper_style, with_method

__all__ = ["SPEED_QUANTITIES", "sampling_speed_plot"]


#: What the sampling-speed figure shows: metrics.json key -> legend label.
SPEED_QUANTITIES: dict[str, str] = {
    "samples_per_s": "samples/s",
    "ess_per_s": "effective samples/s",
}


def _speed_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """Long frame ``method, seed, quantity, value`` of the finite speed metrics present."""
    df = with_method(metrics)
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
        return empty_figure(title, "no samples_per_s or ess_per_s values")
    methods = list(dict.fromkeys(df["method"]))
    quantities = [q for q in SPEED_QUANTITIES.values() if q in set(df["quantity"])]
    palette = dict(zip(SPEED_QUANTITIES.values(), ("0.75", "tab:orange")))
    axes_style, context = paper_style()
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
