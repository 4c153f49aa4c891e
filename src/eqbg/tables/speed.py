"""The sampling-speed table: samples and effective samples per second, as ratios to the EGNN CNF of the
same system measured in the same pipeline run.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from eqbg.tables.runs import fmt_value, numeric_column, with_variant

__all__ = [
    "SPEED_NOTES",
    "SPEED_REFERENCE_MODEL",
    "sampling_speed_table",
]


#: The reference of the sampling-speed ratios: the equivariant CNF of the same system.
SPEED_REFERENCE_MODEL = "egnn"


def sampling_speed_table(df: pd.DataFrame, system: str) -> pd.DataFrame:
    """Samples per second with their log density, and effective samples per second, per method,
    as ratios to the EGNN CNF of the same system measured in the same pipeline run.

    ``samples/s`` is n over the sampling wall time with ``log q`` (exact for CNFs; for augmented
    flows the joint-weight estimate of one pass, ``log q kind`` says which); ``eff. samples/s`` is
    ESS x n over sampling plus target-energy time. The ratios divide by the mean over the EGNN
    CNF runs (all losses, no variant) of the system. The budget-matched MCMC runs are left out.

    Returns:
        The display table (empty when no run of the system has a sampling speed).
    """
    sub = df[df["system"] == system] if "system" in df else df.iloc[:0]
    # flows only: MCMC states come without a density (the cost columns compare them)
    sub = sub[sub["model"] != "mcmc"] if "model" in sub else sub
    if sub.empty or "samples_per_s" not in sub:
        return pd.DataFrame()
    frame = with_variant(sub)
    reference = frame[(frame["model"] == SPEED_REFERENCE_MODEL) & (frame["variant"] == "")]
    ref_speed = float(np.nanmean(numeric_column(reference, "samples_per_s"))) if len(reference) else float("nan")
    ref_eff = float(np.nanmean(numeric_column(reference, "ess_per_s"))) if len(reference) else float("nan")
    rows = []
    keys = ["model", "loss"] + (["variant"] if (frame["variant"] != "").any() else [])
    for key, group in frame.groupby(keys, sort=True):
        key = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        kinds = sorted({
            f"{d}" + (f" (K={int(k)})" if d == "estimate" and pd.notna(k) else "")
            for d, k in zip(group.get("log_q_density", pd.Series(["exact"] * len(group))),
                            group.get("log_q_k", pd.Series([None] * len(group))))
        })
        speed = float(np.nanmean(numeric_column(group, "samples_per_s")))
        eff = float(np.nanmean(numeric_column(group, "ess_per_s")))
        ess = float(np.nanmean(numeric_column(group, "ess")))

        def ratio(value: float, ref: float) -> str:
            return f"×{fmt_value(value / ref)}" if math.isfinite(value) and math.isfinite(ref) and ref > 0 else ""

        rows.append({
            **key,
            "seeds": int(len(group)),
            "log q kind": ", ".join(kinds),
            "samples/s": fmt_value(speed),
            "ESS (frac.)": fmt_value(ess),
            "eff. samples/s": fmt_value(eff),
            f"samples/s ÷ {SPEED_REFERENCE_MODEL} CNF": ratio(speed, ref_speed),
            f"eff. samples/s ÷ {SPEED_REFERENCE_MODEL} CNF": ratio(eff, ref_eff),
        })
    return pd.DataFrame(rows)


SPEED_NOTES = (
    "samples/s: n / sampling wall time with log q (CNF: exact divergence integrated with the ODE; "
    "augmented flows: one pass, log q(x, a) - log π(a|x), whose importance weights are the joint "
    "weights p(x)π(a|x)/q(x, a)); all runs of this table sampled on the same machine in the same pipeline run.",
    "eff. samples/s: ESS × n / (sampling + target-energy seconds). Ratios divide by the mean of the "
    "EGNN CNF runs of this system (all losses).",
)
