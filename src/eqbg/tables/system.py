"""The per-system comparison table (Markdown and LaTeX): rows ``model x loss``, each metric as
``mean ± sem`` over seeds, published numbers beside ours with a reference number; the NLL against the
training-set size and the sampling speed under it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from eqbg.evaluation.expectation import exact_sample_quadratic_bias
from eqbg.evaluation.nll import convert_nll
from eqbg.evaluation.run import metric_labels, metric_notes
from eqbg.io import atomic_path
from eqbg.systems import SYSTEM_SPECS, get_system, system_spec
from eqbg.tables.published import (
    DAGGER,
    PUBLISHED_COLUMNS,
    load_published,
    published_for,
    published_value,
)
from eqbg.tables.runs import (
    fmt_value,
    mean_sem_cell,
    mean_sem_table,
    seed_sem,
    smoke_notes,
    with_variant,
)
from eqbg.tables.speed import SPEED_NOTES, sampling_speed_table

__all__ = [
    "EXACT_REFERENCE",
    "footnotes",
    "TABLE_COLUMNS",
    "TABLE_METRICS",
    "system_table",
    "table_metrics",
    "training_size_table",
    "with_reference_rows",
    "write_system_table",
]


#: The per-system table's columns, in order; labels come with the metrics
#: (:func:`eqbg.evaluation.metric_labels`), and a labelled metric not listed here follows these.
TABLE_COLUMNS: tuple[str, ...] = (
    "ess",
    "ess_ais",
    "forward_ess",
    "nll",
    "nll_efm",
    "energy_w2",
    "energy_w2_reweighted",
    "distance_w2",
    "mean_energy_reweighted",
    "delta_f_reference",
    "delta_f_data",
    "delta_f_reweighted",
    "ramachandran_kl_flow",
    "ramachandran_kl_reweighted",
    "phi_kl_reweighted",
    "psi_kl_reweighted",
    "frac_d_chirality_flow",
    "log_z_error",
    "mode_coverage",
    "mode_coverage_bound",
    "quadratic_bias_weighted",
    "quadratic_bias_unweighted",
    "quadratic_bias_weighted_fab",
    "quadratic_bias_unweighted_fab",
    "forward_kl",
    "frac_failed",
    "samples_per_s",
    "ess_per_s",
    "nfe",
    "path_length",
    "train_time_s",
    "effective_samples",
    "cost_energy_evals_total",
    "energy_evals_per_effective_sample_sampling",
    "energy_evals_per_effective_sample_total",
    "cost_per_effective_sample_total_time_s",
)


def table_metrics() -> dict[str, str]:
    """``{metric key: column label}`` of the per-system table, in column order."""
    labels = metric_labels()
    return {**{key: labels[key] for key in TABLE_COLUMNS}, **labels}


#: the columns of the built-in metrics (:func:`table_metrics` also has those registered later)
TABLE_METRICS: dict[str, str] = table_metrics()


#: notes of every per-system table before the metrics' own (:func:`footnotes`)
VALUES_NOTE = (
    "Values: mean ± sem over seeds, sem = sd(ddof=0)/sqrt(n seeds) as FAB and EACF report theirs; one seed "
    "shows the value alone; "
    "(n=k) marks metrics finite in only k seeds."
)
#: notes after them: the published columns
PUBLISHED_NOTES = (
    f"{DAGGER} unverified: recalled, not checked against the paper (PAPERS.md); do not treat as ground truth.",
    "Published datasets, energies and sample counts differ from ours (see setting); comparisons are indicative.",
)


def footnotes() -> tuple[str, ...]:
    """The notes under every per-system table: how values are summarised, what each metric's
    number means (the notes registered with the metrics, in registration order), the published
    columns."""
    return (VALUES_NOTE, *metric_notes(), *PUBLISHED_NOTES)


def system_table(df: pd.DataFrame, system: str, published: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The display table for one system and its list of published references.

    Returns:
        ``(table, references)``: ``table`` has one row per ``model x loss`` with ``n seeds``,
        ``mean ± sem`` string columns, and ``published <metric>`` columns; ``references``
        lists every published row for the system (number, paper, table, setting, method,
        metric, value as reported, convention, evidence, verified).
    """
    sub = df[df["system"] == system]
    if sub.empty:
        raise ValueError(f"no runs of system {system!r} in the metrics table")
    labels = table_metrics()
    metrics = [m for m in labels if m in sub and pd.to_numeric(sub[m], errors="coerce").notna().any()]
    stats = mean_sem_table(sub, metrics)
    pub = published_for(published, system)
    out = pd.DataFrame({"model": stats["model"], "loss": stats["loss"]})
    if (stats["variant"] != "").any():
        out["variant"] = stats["variant"]
    out["n seeds"] = stats["n_seeds"]
    # a published row names a variant when it is one (e.g. FAB without buffer)
    pub_variant = with_variant(pub)["variant"]
    for m in metrics:
        out[labels[m]] = [
            mean_sem_cell(r[f"{m}_mean"], r[f"{m}_sem"], r[f"{m}_n"], r["n_seeds"]) for _, r in stats.iterrows()
        ]
        if m in PUBLISHED_COLUMNS:
            pubcol = []
            for _, r in stats.iterrows():
                match = pub[
                    (pub["metric"] == m)
                    & (pub["model"] == r["model"])
                    & ((pub["loss"] == r["loss"]) | (pub["loss"] == "*"))
                    & (pub_variant == str(r["variant"] or ""))
                ]
                pubcol.append("; ".join(published_value(p, system) for _, p in match.iterrows()))
            if any(pubcol):
                out[f"published {labels[m]}"] = pubcol
    refs = pd.DataFrame(
        {
            "ref": pub["ref"],
            "paper": pub["paper"],
            "table": pub["table"],
            "method": pub["method"],
            "setting": pub["setting"],
            "metric": pub["metric"],
            "reported": [
                (fmt_value(float(r["value"])) if pd.notna(r["value"]) else f"{fmt_value(float(r['value_low']))}–{fmt_value(float(r['value_high']))}")
                + (f" ± {r['error']}" if str(r.get("error", "")) not in ("", "nan") else "")
                + ("" if r["verified"] else DAGGER)
                for _, r in pub.iterrows()
            ],
            "convention": pub["convention"],
            "evidence": pub["evidence"] if "evidence" in pub else "",
            "source": pub["source"],
        }
    )
    return out, refs


def training_size_table(df: pd.DataFrame, system: str, published: pd.DataFrame) -> pd.DataFrame:
    """Test NLL against the number of training configurations (Satorras et al. 2021), in both
    NLL conventions, beside the published values for the same size.

    Uses the runs that asked for a training-set size (``n_train_setting`` set, e.g. the
    variants of the training-set-size preset); one row per ``model x loss x n_train`` with
    mean ± sem over seeds. Published values are matched on ``setting == "n_train=<n>"`` and
    shown converted to the eqbg convention and in the EFM convention.

    Returns:
        The display table (empty when the system has no such runs).
    """
    if "n_train_setting" not in df or "nll" not in df:
        return pd.DataFrame()
    sub = df[(df["system"] == system) & pd.to_numeric(df["n_train_setting"], errors="coerce").notna()]
    if sub.empty:
        return pd.DataFrame()
    dim = system_spec(system).dim
    pub = published_for(published, system)
    rows = []
    for (model, loss, n_train), group in sub.groupby(["model", "loss", "n_train"], sort=True):
        nll = pd.to_numeric(group["nll"], errors="coerce").to_numpy(dtype=float)
        finite = nll[np.isfinite(nll)]
        mean = float(finite.mean()) if finite.size else float("nan")
        sem = seed_sem(finite)
        efm = convert_nll(mean, dim, source="eqbg", target="efm") if math.isfinite(mean) else mean
        match = pub[(pub["metric"] == "nll") & (pub["model"] == model)
                    & ((pub["loss"] == loss) | (pub["loss"] == "*"))
                    & (pub["setting"].astype(str) == f"n_train={int(n_train)}")]
        published_eqbg = "; ".join(published_value(p, system) for _, p in match.iterrows())
        published_efm = "; ".join(
            f"{fmt_value(convert_nll(float(p['value']), dim, source=p['convention'] or 'eqbg', target='efm'))}"
            f"{'' if p['verified'] else DAGGER} [{p['ref']}]"
            for _, p in match.iterrows() if pd.notna(p["value"])
        )
        rows.append({
            "model": model, "loss": loss, "n train": int(n_train), "seeds": int(len(group)),
            "NLL (eqbg)": mean_sem_cell(mean, sem, int(finite.size), int(len(group))),
            "NLL (EFM conv.)": fmt_value(efm) if not math.isfinite(sem) else f"{fmt_value(efm)} ± {fmt_value(sem, 2)}",
            "published NLL (eqbg)": published_eqbg,
            "published NLL (EFM conv.)": published_efm,
        })
    return pd.DataFrame(rows)


#: model and loss names of the reference rows of exact target samples
EXACT_REFERENCE = ("target", "exact")


def with_reference_rows(df: pd.DataFrame, system: str) -> pd.DataFrame:
    """``df`` plus a row of exact target samples for systems with a test function (GMM-40:
    FAB's "target" rows, the bias floor of either convention; model ``target``, loss ``exact``)."""
    if system not in SYSTEM_SPECS or "test_function" not in system_spec(system).observables:
        return df
    model, loss = EXACT_REFERENCE
    row = {"system": system, "model": model, "loss": loss, "variant": "", "seed": 0,
           **exact_sample_quadratic_bias(get_system(system))}
    return pd.concat([df, pd.DataFrame([row])], ignore_index=True)


def write_system_table(
    df: pd.DataFrame,
    system: str,
    published_csv: str | Path,
    out_md: str | Path,
    out_tex: str | Path,
) -> pd.DataFrame:
    """Write the per-system comparison table as Markdown and LaTeX (atomically).

    Args:
        df: output of :func:`collect_metrics` (any systems; filtered to ``system``).
        system: system name.
        published_csv: ``workflow/resources/published.csv``.
        out_md, out_tex: output paths.

    Returns:
        The display table (one row per model × loss).
    """
    table, refs = system_table(with_reference_rows(df, system), system, load_published(published_csv))
    md = [f"# {system}: evaluation summary\n"]
    md += [f"**{note}**\n" for note in smoke_notes(df[df["system"] == system])]
    md += [table.to_markdown(index=False), ""]
    md += [f"- {note}" for note in footnotes()]
    sizes = training_size_table(df, system, load_published(published_csv))
    if len(sizes):
        md += ["", "## NLL vs training-set size", "",
               "Test NLL (nats per configuration) of the runs that trained on a given number of "
               "configurations, model selection by validation NLL; published values converted "
               "to each convention (the reference list gives them as reported).", "",
               sizes.to_markdown(index=False)]
    speed = sampling_speed_table(df, system)
    if len(speed):
        md += ["", "## Sampling speed", "", speed.to_markdown(index=False), ""]
        md += [f"- {note}" for note in SPEED_NOTES]
    if len(refs):
        md += ["", "## Published values", "", refs.to_markdown(index=False)]
    else:
        md += ["", "No published values for this system in published.csv."]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(md) + "\n")

    def tex_escape(s: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("±", r"$\pm$"), (DAGGER, r"$^\dagger$"), ("Δ", r"$\Delta$"), ("π", r"$\pi$"),
                     ("Σ", r"$\Sigma$"), ("²", r"$^2$"), ("–", "--"), ("≈", r"$\approx$"), ("<", r"$<$"),
                     (">", r"$>$")):
            s = s.replace(a, b)
        return s

    def to_tex(frame: pd.DataFrame, caption: str) -> str:
        cols = list(frame.columns)
        lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize",
                 r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
                 " & ".join(tex_escape(str(c)) for c in cols) + r" \\", r"\midrule"]
        for _, r in frame.iterrows():
            lines.append(" & ".join(tex_escape(str(v)) for v in r.tolist()) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(caption)}}}", r"\end{table}"]
        return "\n".join(lines)

    tex = [to_tex(table, f"{system}: " + " ".join(footnotes()))]
    if len(refs):
        tex.append(to_tex(refs, f"{system}: published values (as reported)."))
    with atomic_path(out_tex) as tmp:
        tmp.write_text("% generated by eqbg.tables.system.write_system_table\n" + "\n\n".join(tex) + "\n")
    return table
