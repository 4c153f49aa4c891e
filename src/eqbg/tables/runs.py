"""Per-run metrics as one tidy table, and the cells every table shows: ``mean ± sem`` over seeds.

``sem = sd(ddof=0) / sqrt(n_seeds)`` (a single seed shows the value alone): the population standard
deviation, as FAB and EACF report theirs (``latex_table.py``: ``sem(ddof=0)``), so our values and the
published ones beside them have the same kind of error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "METHOD_KEYS",
    "SEM_DDOF",
    "SMOKE_NOTE",
    "collect_metrics",
    "fmt_value",
    "mean_sem_cell",
    "mean_sem_table",
    "numeric_column",
    "seed_sem",
    "smoke_notes",
    "with_variant",
]


#: What identifies a method in the tables (seeds of a method are averaged): ``variant`` is ""
#: for runs without one.
METHOD_KEYS = ("model", "loss", "variant")


#: ddof of the seeds' standard deviation in every sem (FAB's and EACF's convention; 1.22x
#: narrower than ddof=1 at 3 seeds)
SEM_DDOF = 0


def seed_sem(values: np.ndarray) -> float:
    """``sd(ddof=SEM_DDOF) / sqrt(n)`` of the finite per-seed ``values`` (NaN for one seed)."""
    return float(values.std(ddof=SEM_DDOF) / math.sqrt(values.size)) if values.size > 1 else float("nan")


def _flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if key == "provenance":
            continue  # large nested record; the file keeps it
        if isinstance(value, dict):
            out.update(_flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            continue
        else:
            out[name] = value
    return out


def collect_metrics(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Tidy table of runs: one row per ``metrics.json`` (nested provenance dropped), with the
    file path in column ``metrics_path``; ``None`` in JSON becomes NaN."""
    rows = []
    for path in paths:
        record = json.loads(Path(path).read_text())
        row = _flatten(record)
        row["metrics_path"] = str(path)
        rows.append(row)
    if not rows:
        raise ValueError("collect_metrics: no metrics files given")
    df = pd.DataFrame(rows)
    for col in df.columns:
        if col in ("system", "model", "loss", "variant", "nll_convention", "log_q_density", "metrics_path", "run_dir"):
            continue
        converted = pd.to_numeric(df[col], errors="coerce")
        if converted.notna().sum() >= df[col].notna().sum():
            df[col] = converted
    df = with_variant(df)
    sort_cols = [c for c in ("system", *METHOD_KEYS, "seed") if c in df]
    return df.sort_values(sort_cols).reset_index(drop=True)


def with_variant(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a string ``variant`` column ("" where a run has none; CSV files read the
    empty string back as NaN)."""
    df = df.copy()
    variant = df["variant"] if "variant" in df else pd.Series("", index=df.index)
    df["variant"] = variant.astype(object).where(variant.notna(), "").astype(str)
    return df


def mean_sem_table(df: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per ``(model, loss, variant)``: ``n_seeds`` and, for each metric, columns ``{m}_mean``
    and ``{m}_sem`` (:func:`seed_sem`; NaN for one seed).  Non-finite values
    (e.g. a failed NLL) are excluded from mean and sem and counted in ``{m}_n``."""
    rows = []
    for (model, loss, variant), group in with_variant(df).groupby(list(METHOD_KEYS), sort=True):
        row = {"model": model, "loss": loss, "variant": variant, "n_seeds": int(len(group))}
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce").to_numpy(dtype=float) if m in group else np.array([])
            values = values[np.isfinite(values)]
            row[f"{m}_n"] = int(values.size)
            row[f"{m}_mean"] = float(values.mean()) if values.size else float("nan")
            row[f"{m}_sem"] = seed_sem(values)
        rows.append(row)
    return pd.DataFrame(rows)


def fmt_value(x: float, digits: int = 4) -> str:
    """A number as a table shows it: ``digits`` significant digits, scientific beyond
    ``[1e-3, 1e5)``, an en dash for a missing or non-finite value."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def mean_sem_cell(mean: float, sem: float, n_finite: int, n_seeds: int) -> str:
    """``mean ± sem`` over seeds (the value alone when ``sem`` is NaN, i.e. one seed), with
    ``(n=k)`` when the metric is finite in only ``k = n_finite`` of the ``n_seeds`` seeds."""
    cell = fmt_value(mean) if not math.isfinite(sem) else f"{fmt_value(mean)} ± {fmt_value(sem, 2)}"
    if 0 < n_finite < n_seeds:
        cell += f" (n={int(n_finite)})"
    return cell


def numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """``frame[column]`` as floats (NaN where absent or not a number)."""
    if column not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


#: Written above every table that holds smoke-size runs (``scale: smoke``, eqbg.scale).
SMOKE_NOTE = ("SMOKE SIZE (scale: smoke): these runs trained 2 steps on a few hundred "
              "configurations and drew at most 8 samples; their numbers show that the pipeline runs, "
              "nothing else.")


def smoke_notes(runs: pd.DataFrame) -> list[str]:
    """``[SMOKE_NOTE]`` when any of ``runs`` was made at smoke size, else ``[]``."""
    return [SMOKE_NOTE] if "scale" in runs and bool((runs["scale"] == "smoke").any()) else []
