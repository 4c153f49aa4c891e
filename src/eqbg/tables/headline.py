"""The headline table across systems: one row per ``system x model x loss``, ESS with its bootstrap
interval, the headline metrics and the cost columns, in Markdown, CSV and reStructuredText.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from eqbg.io import atomic_path
from eqbg.tables.runs import (
    fmt_value,
    mean_sem_cell,
    mean_sem_table,
    numeric_column,
    smoke_notes,
    with_variant,
)
from eqbg.evaluation.cost import COST_NOTES
from eqbg.tables.system import TABLE_METRICS

__all__ = [
    "HEADLINE_METRICS",
    "HEADLINE_NOTES",
    "HEADLINE_TITLE",
    "headline_counts",
    "headline_display",
    "headline_table",
    "rst_csv_table",
    "write_headline_table",
]


#: Metrics of the headline table shown as mean ± sem beside the ESS, with their column labels.
HEADLINE_METRICS: dict[str, str] = {
    "ess_per_s": TABLE_METRICS["ess_per_s"],
    "nll": TABLE_METRICS["nll"],
    "energy_w2": TABLE_METRICS["energy_w2"],
    "energy_w2_reweighted": TABLE_METRICS["energy_w2_reweighted"],
    "energy_evals_per_effective_sample_sampling": TABLE_METRICS["energy_evals_per_effective_sample_sampling"],
    "energy_evals_per_effective_sample_total": TABLE_METRICS["energy_evals_per_effective_sample_total"],
    "cost_per_effective_sample_total_time_s": TABLE_METRICS["cost_per_effective_sample_total_time_s"],
}


#: What every headline number means (written under the table in Markdown and in the report).
HEADLINE_NOTES = (
    "One row per system × model × loss: the mean over its seeds (seeds column), ± sem = sd(ddof=0)/sqrt(seeds) "
    "with several seeds; (n=k) marks a metric finite in only k seeds.",
    "ESS: Kish (Σw)²/(nΣw²) as a fraction of the n generated samples of each run (n samples column), failed "
    "samples kept with weight ≈ 0. Brackets: the run's percentile bootstrap interval; with several seeds, from "
    "the lowest lower to the highest upper bound over the seeds.",
    "eff. samples/s: ESS × n / (sampling + target-energy seconds), effective samples per second of the whole "
    "sampling stage (exact log q included).",
    "NLL (eqbg): −mean log q(x) over test configurations in nats, exact divergence, CoM-free Gaussian prior "
    "normalised over (n−1)d dimensions (E-NF/EACF convention); the per-system tables add the EFM convention.",
    "E-W2: 1-D Wasserstein-2 distance between the reduced energies (kT) of flow samples and test data; rew.: "
    "flow samples importance-weighted.",
    *COST_NOTES,
)


def _finite_extreme(values: np.ndarray, reduce: Callable[[np.ndarray], float]) -> float:
    """``reduce`` (``np.min`` or ``np.max``) of the finite ``values``; NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(reduce(finite)) if finite.size else float("nan")


def headline_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The numbers of the headline table: one row per ``system x model x loss``, over seeds.

    Args:
        runs: per-run rows (the per-system ``runs.csv`` files concatenated), with ``system``,
            ``model``, ``loss`` and any of ``ess``, ``ess_ci_low``, ``ess_ci_high``,
            ``ess_ci_level``, ``ess_n`` and the :data:`HEADLINE_METRICS`.

    Returns:
        Rows sorted by system, model, loss with ``n_seeds``; ``n_samples`` / ``n_samples_max``
        (smallest / largest ``ess_n`` over the seeds); ``ess_mean``, ``ess_sem``; ``ess_ci_low``
        / ``ess_ci_high`` (lowest lower and highest upper bootstrap bound over the seeds with a
        finite ESS); ``ess_ci_level`` (NaN unless one level); and ``{m}_mean``, ``{m}_sem``
        (as in :func:`mean_sem_table`) and ``{m}_n_seeds`` (seeds where ``m`` is finite) for
        ``m`` = ``ess`` and every headline metric.
    """
    missing = [c for c in ("system", "model", "loss") if c not in runs]
    if missing:
        raise ValueError(f"headline_table: runs lack columns {missing}")
    if runs.empty:
        raise ValueError("headline_table: no runs")
    rows = []
    for system, sub in runs.groupby("system", sort=True):
        stats = mean_sem_table(sub, ["ess", *HEADLINE_METRICS])
        for _, stat in stats.iterrows():
            group = sub[
                (sub["model"] == stat["model"]) & (sub["loss"] == stat["loss"])
                & (with_variant(sub)["variant"] == stat["variant"])
            ]
            finite = np.isfinite(numeric_column(group, "ess"))
            low, high = numeric_column(group, "ess_ci_low")[finite], numeric_column(group, "ess_ci_high")[finite]
            n, level = numeric_column(group, "ess_n")[finite], numeric_column(group, "ess_ci_level")[finite]
            levels = {float(x) for x in level[np.isfinite(level)]}
            row = {"system": system, "model": stat["model"], "loss": stat["loss"],
                   "variant": stat["variant"], "n_seeds": stat["n_seeds"]}
            row.update(
                n_samples=_finite_extreme(n, np.min),
                n_samples_max=_finite_extreme(n, np.max),
                ess_mean=stat["ess_mean"],
                ess_sem=stat["ess_sem"],
                ess_ci_low=_finite_extreme(low, np.min),
                ess_ci_high=_finite_extreme(high, np.max),
                ess_ci_level=levels.pop() if len(levels) == 1 else float("nan"),
                ess_n_seeds=stat["ess_n"],
            )
            for m in HEADLINE_METRICS:
                row.update({f"{m}_mean": stat[f"{m}_mean"], f"{m}_sem": stat[f"{m}_sem"],
                            f"{m}_n_seeds": stat[f"{m}_n"]})
            rows.append(row)
    return pd.DataFrame(rows)


def _count(low: float, high: float) -> str:
    if not math.isfinite(low):
        return "–"
    return f"{low:.0f}" if high == low else f"{low:.0f}–{high:.0f}"


def headline_display(table: pd.DataFrame) -> pd.DataFrame:
    """The headline table as people read it: string cells, one row per system × model × loss.

    Args:
        table: output of :func:`headline_table`.

    Returns:
        Columns ``system``, ``model``, ``loss``, ``seeds``, ``ESS [L interval]`` (``mean
        [low, high]``, ``L`` the bootstrap level when all rows share it), ``n samples`` and
        one ``mean ± sem`` column per :data:`HEADLINE_METRICS` label.
    """
    levels = set(table["ess_ci_level"].dropna())
    ess_label = f"ESS [{levels.pop():.0%} interval]" if len(levels) == 1 else "ESS [interval]"
    out = pd.DataFrame({"system": table["system"], "model": table["model"], "loss": table["loss"]})
    if "variant" in table and (with_variant(table)["variant"] != "").any():
        out["variant"] = with_variant(table)["variant"]
    out["seeds"] = table["n_seeds"].astype(int)
    ess_cells = []
    for _, r in table.iterrows():
        cell = mean_sem_cell(r["ess_mean"], r["ess_sem"], r["ess_n_seeds"], r["n_seeds"])
        if math.isfinite(r["ess_ci_low"]) and math.isfinite(r["ess_ci_high"]):
            cell += f" [{fmt_value(r['ess_ci_low'], 3)}, {fmt_value(r['ess_ci_high'], 3)}]"
        ess_cells.append(cell)
    out[ess_label] = ess_cells
    out["n samples"] = [_count(r["n_samples"], r["n_samples_max"]) for _, r in table.iterrows()]
    for m, label in HEADLINE_METRICS.items():
        out[label] = [mean_sem_cell(r[f"{m}_mean"], r[f"{m}_sem"], r[f"{m}_n_seeds"], r["n_seeds"])
                      for _, r in table.iterrows()]
    return out.reset_index(drop=True)


def _rst_cell(text: str) -> str:
    """A quoted csv-table cell whose text reStructuredText reads literally."""
    for char in ("\\", "*", "`", "_", "|"):
        text = text.replace(char, "\\" + char)
    return '"' + text.replace('"', '""') + '"'


def rst_csv_table(frame: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> str:
    """``frame`` as a reStructuredText ``csv-table`` directive (header row, every cell quoted),
    followed by ``notes`` as a bullet list; for ``.. include::`` in a report description."""
    lines = [f".. csv-table:: {title}", "   :header: " + ", ".join(_rst_cell(str(c)) for c in frame.columns),
             "   :widths: auto", ""]
    lines += ["   " + ", ".join(_rst_cell(str(v)) for v in row) for row in frame.itertuples(index=False)]
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


HEADLINE_TITLE = "Headline: every system × model × loss (mean over seeds)"


def write_headline_table(
    runs_csvs: Sequence[str | Path],
    out_md: str | Path,
    out_csv: str | Path,
    out_rst: str | Path,
) -> pd.DataFrame:
    """Write the headline table across systems from the per-system ``runs.csv`` files.

    Args:
        runs_csvs: ``results/tables/{system}/runs.csv`` of every system (one row per run).
        out_md: Markdown table with :data:`HEADLINE_NOTES` under it.
        out_csv: the numbers (:func:`headline_table`), one row per system × model × loss.
        out_rst: the same display table as a reStructuredText ``csv-table`` with the notes,
            which the report's workflow description includes.

    Returns:
        The display table (:func:`headline_display`).
    """
    if not runs_csvs:
        raise ValueError("write_headline_table: no runs.csv files given")
    runs = pd.concat([pd.read_csv(p, dtype={"model": str, "loss": str, "system": str}) for p in runs_csvs],
                     ignore_index=True)
    table = headline_table(runs)
    display = headline_display(table)
    notes = [*smoke_notes(runs), *HEADLINE_NOTES]
    md = [f"# {HEADLINE_TITLE}", "", display.to_markdown(index=False, disable_numparse=True), ""] + [f"- {n}" for n in notes]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out_rst) as tmp:
        tmp.write_text(rst_csv_table(display, HEADLINE_TITLE, notes))
    return display


def headline_counts(table: pd.DataFrame) -> dict[str, int]:
    """How much the headline table covers, for the report's front page: the number of systems,
    of ``system x model x loss`` rows and of runs (seeds summed).

    Args:
        table: output of :func:`headline_table` (or its CSV read back).
    """
    return {
        "systems": int(table["system"].nunique()),
        "system × model × loss": int(len(table)),
        "runs (all seeds)": int(pd.to_numeric(table["n_seeds"]).sum()),
    }
