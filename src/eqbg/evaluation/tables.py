"""Collect per-run metrics and write per-system comparison tables (Markdown and LaTeX).

Rows are ``model x loss``; each metric is shown as ``mean ± sem`` over seeds with
``sem = sd(ddof=0) / sqrt(n_seeds)`` (a single seed shows the value alone): the population
standard deviation, as FAB and EACF report theirs (``latex_table.py``: ``sem(ddof=0)``), so our
values and the published ones beside them have the same kind of error.  Published numbers
from ``workflow/resources/published.csv`` appear beside ours with a reference number; every
value not verified against its source carries a dagger (†) and a footnote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from eqbg.evaluation.expectation import exact_sample_quadratic_bias
from eqbg.evaluation.nll import NLL_CONVENTIONS, convert_nll
from eqbg.systems import SYSTEM_SPECS, get_system, system_spec

#: Subspace dimension of each system's prior, used to convert published NLLs between
#: conventions ((n-1)*d for CoM-free systems, n*d otherwise); from the system registry.
SYSTEM_DIMS = {name: spec.dim for name, spec in SYSTEM_SPECS.items()}

#: Metrics shown in the per-system table, in order, with their column labels.
TABLE_METRICS: dict[str, str] = {
    "ess": "ESS (frac.)",
    "ess_ais": "ESS flow+AIS",
    "forward_ess": "fwd ESS",
    "nll": "NLL (eqbg)",
    "nll_efm": "NLL (EFM conv.)",
    "energy_w2": "E-W2 (kT)",
    "energy_w2_reweighted": "E-W2 rew. (kT)",
    "distance_w2": "dist-W2",
    "mean_energy_reweighted": "<u> rew. (kT)",
    "delta_f_reference": "ΔF ref. US (kT)",
    "delta_f_data": "ΔF MD test (kT)",
    "delta_f_reweighted": "ΔF rew. (kT)",
    "ramachandran_kl_flow": "Rama KL",
    "ramachandran_kl_reweighted": "Rama KL rew.",
    "phi_kl_reweighted": "φ KL rew.",
    "psi_kl_reweighted": "ψ KL rew.",
    "frac_d_chirality_flow": "D-form (frac.)",
    "log_z_error": "log Z err.",
    "mode_coverage": "modes reached (frac.)",
    "mode_coverage_bound": "modes bound (n/modes)",
    "quadratic_bias_weighted": "bias E[f] rew.",
    "quadratic_bias_unweighted": "bias E[f]",
    "quadratic_bias_weighted_fab": "bias E[f] rew. (FAB conv.)",
    "quadratic_bias_unweighted_fab": "bias E[f] (FAB conv.)",
    "forward_kl": "fwd KL",
    "frac_failed": "failed (frac.)",
    "samples_per_s": "samples/s",
    "ess_per_s": "eff. samples/s",
    "nfe": "NFE",
    "path_length": "path length",
    "train_time_s": "train time (s)",
    "effective_samples": "eff. samples",
    "cost_energy_evals_total": "E-evals (all)",
    "energy_evals_per_effective_sample_sampling": "E-evals/eff. sample (sampling)",
    "energy_evals_per_effective_sample_total": "E-evals/eff. sample (all)",
    "cost_per_effective_sample_total_time_s": "s/eff. sample (all)",
}

#: Published metrics that are compared in the main table (others appear in the reference list).
#: FAB's published biases sit beside the FAB-convention columns only (eqbg.evaluation.expectation).
PUBLISHED_COLUMNS = ("ess", "nll", "energy_w2", "distance_w2", "samples_per_s",
                     "quadratic_bias_weighted_fab", "quadratic_bias_unweighted_fab")

PUBLISHED_REQUIRED = (
    "paper", "table", "system", "setting", "method", "model", "loss", "metric", "value",
    "value_low", "value_high", "convention", "verified", "source",
)

DAGGER = "†"

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


#: What identifies a method in the tables (seeds of a method are averaged): ``variant`` is ""
#: for runs without one.
METHOD_KEYS = ("model", "loss", "variant")


def with_variant(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a string ``variant`` column ("" where a run has none; CSV files read the
    empty string back as NaN)."""
    df = df.copy()
    variant = df["variant"] if "variant" in df else pd.Series("", index=df.index)
    df["variant"] = variant.astype(object).where(variant.notna(), "").astype(str)
    return df


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


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


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


def _mean_sem_cell(mean: float, sem: float, n_finite: int, n_seeds: int) -> str:
    """``mean ± sem`` over seeds (the value alone when ``sem`` is NaN, i.e. one seed), with
    ``(n=k)`` when the metric is finite in only ``k = n_finite`` of the ``n_seeds`` seeds."""
    cell = _fmt(mean) if not math.isfinite(sem) else f"{_fmt(mean)} ± {_fmt(sem, 2)}"
    if 0 < n_finite < n_seeds:
        cell += f" (n={int(n_finite)})"
    return cell


def _published_for(pub: pd.DataFrame, system: str) -> pd.DataFrame:
    p = pub[pub["system"] == system].copy().reset_index(drop=True)
    p["ref"] = np.arange(1, len(p) + 1)
    return p


def _published_value(row: pd.Series, system: str) -> str:
    """A published value converted to our NLL convention where needed, with its reference."""
    def conv(v: float) -> float:
        if row["metric"] in ("nll",) and row["convention"] and row["convention"] != "eqbg":
            return convert_nll(v, system_spec(system).dim, source=row["convention"], target="eqbg")
        return v

    if pd.notna(row["value"]):
        text = _fmt(conv(float(row["value"])))
    else:
        text = f"{_fmt(conv(float(row['value_low'])))}–{_fmt(conv(float(row['value_high'])))}"
    mark = "" if row["verified"] else DAGGER
    return f"{text}{mark} [{row['ref']}]"


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
    metrics = [m for m in TABLE_METRICS if m in sub and pd.to_numeric(sub[m], errors="coerce").notna().any()]
    stats = mean_sem_table(sub, metrics)
    pub = _published_for(published, system)
    out = pd.DataFrame({"model": stats["model"], "loss": stats["loss"]})
    if (stats["variant"] != "").any():
        out["variant"] = stats["variant"]
    out["n seeds"] = stats["n_seeds"]
    # a published row names a variant when it is one (e.g. FAB without buffer)
    pub_variant = with_variant(pub)["variant"]
    for m in metrics:
        out[TABLE_METRICS[m]] = [
            _mean_sem_cell(r[f"{m}_mean"], r[f"{m}_sem"], r[f"{m}_n"], r["n_seeds"]) for _, r in stats.iterrows()
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
                pubcol.append("; ".join(_published_value(p, system) for _, p in match.iterrows()))
            if any(pubcol):
                out[f"published {TABLE_METRICS[m]}"] = pubcol
    refs = pd.DataFrame(
        {
            "ref": pub["ref"],
            "paper": pub["paper"],
            "table": pub["table"],
            "method": pub["method"],
            "setting": pub["setting"],
            "metric": pub["metric"],
            "reported": [
                (_fmt(float(r["value"])) if pd.notna(r["value"]) else f"{_fmt(float(r['value_low']))}–{_fmt(float(r['value_high']))}")
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


COST_NOTES = (
    "Cost (eqbg.evaluation.cost): target-energy evaluations and seconds of the reference data the run trained on "
    "(the data stage's sampler, pro rata for its training configurations; exact samplers cost none), its training "
    "(FAB's AIS, reverse KL), sampling (one energy per sample) and refinement (AIS at evaluation); 'all' is their "
    "sum. Per eff. sample: divided by the effective samples, Kish ESS × n for a flow.",
    "mcmc rows: budget-matched MCMC (eqbg.baselines), MALA chains from the flows' prior (mala; alanine dipeptide: "
    "Langevin MD from the shipped structure, langevin) given the energy evaluations of the system's best flow "
    "(smallest reweighted E-W2): its sampling stage (variant sampling) or everything it cost (variant total). Its states carry uniform weights (rew. = unweighted); effective samples "
    "Σ n_kept/τ, τ the integrated autocorrelation time of the energy (Sokal); no Kish ESS or NLL; log Z err. "
    "(targets with a known log Z) by AIS from the same prior given the same budget again (HMC, geometric annealing).",
)

FOOTNOTES = (
    "Values: mean ± sem over seeds, sem = sd(ddof=0)/sqrt(n seeds) as FAB and EACF report theirs; one seed "
    "shows the value alone; "
    "(n=k) marks metrics finite in only k seeds.",
    "NLL (eqbg): -mean log q(x_test), exact divergence, CoM-free Gaussian prior normalised over (n-1)d dims "
    "(E-NF/EACF convention). NLL (EFM conv.) = NLL (eqbg) - (n-1)d/2 log(2π). Published NLLs are converted "
    "to the eqbg convention; the reference list gives them as reported.",
    "ESS: Kish (Σw)²/(nΣw²) over all generated samples, failed samples included with weight ≈ 0.",
    "Augmented flows (eacf): NLL from the importance-sampled marginal over the augmented variables "
    "(K = marginal_k, 20 by default: biased high for finite K); ESS from the joint weights "
    "p(x)π(a|x)/q(x, a); fwd ESS with one augmented sample per test point (the EACF paper's definitions).",
    "bias E[f] (GMM-40): |E_hat[f] - E[f]| / E[f] of FAB's quadratic f from 1000-sample estimates, against the "
    "exact E[f] of the same f (ours), and in FAB's convention (FAB conv.): against the expectation of f's float32 "
    "draw, 8.7 % away, the weighted column mean |bias|, the unweighted one |mean bias| (fab-torch "
    "evaluation_expectation_quadratic_func.py). FAB's published biases are shown beside the FAB-convention "
    "columns only; the 'target / exact' row is exact target samples (100 x 1000), the floor of either convention.",
    *COST_NOTES,
    f"{DAGGER} unverified: recalled, not checked against the paper (PAPERS.md); do not treat as ground truth.",
    "Published datasets, energies and sample counts differ from ours (see setting); comparisons are indicative.",
)


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
    pub = _published_for(published, system)
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
        published_eqbg = "; ".join(_published_value(p, system) for _, p in match.iterrows())
        published_efm = "; ".join(
            f"{_fmt(convert_nll(float(p['value']), dim, source=p['convention'] or 'eqbg', target='efm'))}"
            f"{'' if p['verified'] else DAGGER} [{p['ref']}]"
            for _, p in match.iterrows() if pd.notna(p["value"])
        )
        rows.append({
            "model": model, "loss": loss, "n train": int(n_train), "seeds": int(len(group)),
            "NLL (eqbg)": _mean_sem_cell(mean, sem, int(finite.size), int(len(group))),
            "NLL (EFM conv.)": _fmt(efm) if not math.isfinite(sem) else f"{_fmt(efm)} ± {_fmt(sem, 2)}",
            "published NLL (eqbg)": published_eqbg,
            "published NLL (EFM conv.)": published_efm,
        })
    return pd.DataFrame(rows)


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
    ref_speed = float(np.nanmean(_numeric(reference, "samples_per_s"))) if len(reference) else float("nan")
    ref_eff = float(np.nanmean(_numeric(reference, "ess_per_s"))) if len(reference) else float("nan")
    rows = []
    keys = ["model", "loss"] + (["variant"] if (frame["variant"] != "").any() else [])
    for key, group in frame.groupby(keys, sort=True):
        key = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        kinds = sorted({
            f"{d}" + (f" (K={int(k)})" if d == "estimate" and pd.notna(k) else "")
            for d, k in zip(group.get("log_q_density", pd.Series(["exact"] * len(group))),
                            group.get("log_q_k", pd.Series([None] * len(group))))
        })
        speed = float(np.nanmean(_numeric(group, "samples_per_s")))
        eff = float(np.nanmean(_numeric(group, "ess_per_s")))
        ess = float(np.nanmean(_numeric(group, "ess")))

        def ratio(value: float, ref: float) -> str:
            return f"×{_fmt(value / ref)}" if math.isfinite(value) and math.isfinite(ref) and ref > 0 else ""

        rows.append({
            **key,
            "seeds": int(len(group)),
            "log q kind": ", ".join(kinds),
            "samples/s": _fmt(speed),
            "ESS (frac.)": _fmt(ess),
            "eff. samples/s": _fmt(eff),
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


#: Written above every table that holds smoke-size runs (``scale: smoke``, eqbg.scale).
SMOKE_NOTE = ("SMOKE SIZE (scale: smoke): these runs trained 2 steps on a few hundred "
              "configurations and drew at most 8 samples; their numbers show that the pipeline runs, "
              "nothing else.")


def smoke_notes(runs: pd.DataFrame) -> list[str]:
    """``[SMOKE_NOTE]`` when any of ``runs`` was made at smoke size, else ``[]``."""
    return [SMOKE_NOTE] if "scale" in runs and bool((runs["scale"] == "smoke").any()) else []


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
    from eqbg.io import atomic_path

    table, refs = system_table(with_reference_rows(df, system), system, load_published(published_csv))
    md = [f"# {system}: evaluation summary\n"]
    md += [f"**{note}**\n" for note in smoke_notes(df[df["system"] == system])]
    md += [table.to_markdown(index=False), ""]
    md += [f"- {note}" for note in FOOTNOTES]
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

    tex = [to_tex(table, f"{system}: " + " ".join(FOOTNOTES))]
    if len(refs):
        tex.append(to_tex(refs, f"{system}: published values (as reported)."))
    with atomic_path(out_tex) as tmp:
        tmp.write_text("% generated by eqbg.evaluation.tables.write_system_table\n" + "\n\n".join(tex) + "\n")
    return table


# ----------------------------------------------------------------------------- headline (all systems)

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


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """``frame[column]`` as floats (NaN where absent or not a number)."""
    if column not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


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
            finite = np.isfinite(_numeric(group, "ess"))
            low, high = _numeric(group, "ess_ci_low")[finite], _numeric(group, "ess_ci_high")[finite]
            n, level = _numeric(group, "ess_n")[finite], _numeric(group, "ess_ci_level")[finite]
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
        cell = _mean_sem_cell(r["ess_mean"], r["ess_sem"], r["ess_n_seeds"], r["n_seeds"])
        if math.isfinite(r["ess_ci_low"]) and math.isfinite(r["ess_ci_high"]):
            cell += f" [{_fmt(r['ess_ci_low'], 3)}, {_fmt(r['ess_ci_high'], 3)}]"
        ess_cells.append(cell)
    out[ess_label] = ess_cells
    out["n samples"] = [_count(r["n_samples"], r["n_samples_max"]) for _, r in table.iterrows()]
    for m, label in HEADLINE_METRICS.items():
        out[label] = [_mean_sem_cell(r[f"{m}_mean"], r[f"{m}_sem"], r[f"{m}_n_seeds"], r["n_seeds"])
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
    from eqbg.io import atomic_path

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
