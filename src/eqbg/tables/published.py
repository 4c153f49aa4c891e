"""Published numbers (``workflow/resources/published.csv``) beside ours: read, checked, converted to our
NLL convention and marked with a dagger (†) where not verified against their source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eqbg.evaluation.nll import NLL_CONVENTIONS, convert_nll
from eqbg.systems import system_spec
from eqbg.tables.runs import fmt_value

__all__ = [
    "DAGGER",
    "PUBLISHED_COLUMNS",
    "PUBLISHED_REQUIRED",
    "load_published",
    "published_for",
    "published_value",
]


#: Published metrics that are compared in the main table (others appear in the reference list).
#: FAB's published biases sit beside the FAB-convention columns only (eqbg.evaluation.expectation).
PUBLISHED_COLUMNS = ("ess", "nll", "energy_w2", "distance_w2", "samples_per_s",
                     "quadratic_bias_weighted_fab", "quadratic_bias_unweighted_fab")


PUBLISHED_REQUIRED = (
    "paper", "table", "system", "setting", "method", "model", "loss", "metric", "value",
    "value_low", "value_high", "convention", "verified", "source",
)


DAGGER = "†"


def load_published(path: str | Path) -> pd.DataFrame:
    """Read ``published.csv`` and check its columns; ``verified`` becomes a bool column."""
    df = pd.read_csv(path, dtype={"model": str, "loss": str})
    missing = [c for c in PUBLISHED_REQUIRED if c not in df]
    if missing:
        raise ValueError(f"{path}: published table lacks columns {missing}")
    df["verified"] = df["verified"].astype(str).str.lower().isin(["true", "1", "yes"])
    for col in ("model", "loss", "convention", "error", "error_kind", "unit", "note", "evidence"):
        if col in df:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    bad = df[~df["convention"].isin(["", *NLL_CONVENTIONS])]
    if len(bad):
        raise ValueError(f"{path}: unknown NLL conventions {sorted(set(bad['convention']))}")
    return df


def published_for(pub: pd.DataFrame, system: str) -> pd.DataFrame:
    """The published rows of ``system``, numbered from 1 (``ref``) in file order."""
    p = pub[pub["system"] == system].copy().reset_index(drop=True)
    p["ref"] = np.arange(1, len(p) + 1)
    return p


def published_value(row: pd.Series, system: str) -> str:
    """A published value converted to our NLL convention where needed, with its reference."""
    def conv(v: float) -> float:
        if row["metric"] in ("nll",) and row["convention"] and row["convention"] != "eqbg":
            return convert_nll(v, system_spec(system).dim, source=row["convention"], target="eqbg")
        return v

    if pd.notna(row["value"]):
        text = fmt_value(conv(float(row["value"])))
    else:
        text = f"{fmt_value(conv(float(row['value_low'])))}–{fmt_value(conv(float(row['value_high'])))}"
    mark = "" if row["verified"] else DAGGER
    return f"{text}{mark} [{row['ref']}]"
