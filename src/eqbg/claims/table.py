"""Every claim over a run's results: the claims table (Markdown, CSV, reStructuredText).

One row per claim in ``claims.md`` / ``claims.rst`` (paper, where, claim, what this run measured
with 95 % intervals, how the intervals were made, this run's scale beside the paper's, verdict)
and one row per check in ``claims.csv`` (the numbers, for machines and the CI baseline).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from eqbg.claims.estimates import RunData, SeedData
from eqbg.claims.spec import Claim, load_claims
from eqbg.claims.verdicts import LEVEL, VERDICTS, CheckResult, combine, judge
from eqbg.tables import SMOKE_NOTE
from eqbg.io import atomic_path

__all__ = ["runs_from_metrics", "evaluate_claims", "claims_table", "check_rows", "write_claims", "CLAIMS_NOTES"]

_SYMBOL = {"reproduced": "✓", "not reproduced": "✗", "inconclusive at this size": "?", "not run": "–"}

CLAIMS_NOTES = (
    f"Intervals: {LEVEL:.0%} percentile intervals of the compared statistic (a difference a − b, a ratio a / b, "
    "or one run's value) from bootstrap replicates: over samples, test points, single-sample ODE solves or "
    "training steps when a run has one seed, over seeds when it has several (the 'interval from' column says "
    "which); 'point' marks a metric without replicates (a zero-width interval).",
    "Verdicts: reproduced — the interval lies wholly on the claimed side (of zero or of the threshold); not "
    "reproduced — wholly on the other side; inconclusive at this size — it straddles; not run — a run the "
    "claim needs is not in this grid (the paper preset or another preset has it).",
    "Claims are stated as the papers state them (workflow/resources/claims.yaml); only the configuration "
    "changes. A finding that does not show at this size is reported, not re-worded.",
)


def runs_from_metrics(paths: Iterable[str | Path]) -> dict[str, RunData]:
    """Runs keyed ``system/model/loss[/variant]`` from ``results/runs/<key>/seed*/metrics.json``,
    and measurements of a system's data keyed ``system/data/<name>`` from
    ``results/data/<system>/<name>_cost/metrics.json`` (the coupling cost)."""
    groups: dict[str, list[SeedData]] = defaultdict(list)
    for path in map(Path, paths):
        folder = path.parent
        parts = folder.parts
        if "runs" in parts:  # results/runs/<system>/<model>/<loss>[/<variant>]/seed<k>
            key = "/".join(parts[parts.index("runs") + 1:-1])
        elif "data" in parts:  # results/data/<system>/<name>_cost: the data's "run" data/<name>
            i = parts.index("data")
            key = f"{parts[i + 1]}/data/{parts[i + 2].removesuffix('_cost')}"
        else:
            raise ValueError(f"{path}: not below results/runs or results/data")
        groups[key].append(SeedData(folder, json.loads(path.read_text())))
    return {k: RunData(sorted(v, key=lambda s: s.folder.name)) for k, v in groups.items()}


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "–"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _describe(r: CheckResult) -> str:
    c = r.check
    head = f"{c.system} {c.label or c.metric}: "
    if r.verdict == "not run" and math.isnan(r.value):
        return head + f"not run ({r.how})"
    if not c.b and not c.b_flows:
        return (head + f"{c.a} {_fmt(r.a_value)} [{_fmt(r.low)}, {_fmt(r.high)}] vs "
                f"{c.predicate} {_fmt(r.threshold)} {_SYMBOL[r.verdict]}")
    op = "/" if c.predicate == "ratio_at_least" else "−"
    target = {"less": "< 0", "greater": "> 0", "not_less": "≥ 0", "ratio_at_least": f"≥ {_fmt(r.threshold)}",
              "within": f"≤ {_fmt(r.threshold)}"}[c.predicate]
    return (head + f"{c.a} {_fmt(r.a_value)} {op} {r.b_run} {_fmt(r.b_value)} = {_fmt(r.value)} "
            f"[{_fmt(r.low)}, {_fmt(r.high)}] (claimed {target}) {_SYMBOL[r.verdict]}")


def _scale(claim: Claim, runs: Mapping[str, RunData]) -> str:
    seen, parts = set(), []
    for c in claim.checks:
        for system, ref in ((c.system, c.a), *((c.b_system or c.system, b) for b in c.b)):
            key = f"{system}/{ref}"
            if key in seen or key not in runs:
                continue
            seen.add(key)
            m = runs[key].seeds[0].metrics
            bits = [f"{int(m['train_steps'])} steps" if m.get("train_steps") else "",
                    f"{int(m['n_samples'])} samples" if m.get("n_samples") else "",
                    f"{int(m['n_train'])} train" if m.get("n_train") else "",
                    f"{int(m['n_batches'])} x {int(m['batch_size'])} pairs" if m.get("batch_size") else "",
                    f"{len(runs[key].seeds)} seed(s)"]
            parts.append(f"{key}: " + ", ".join(b for b in bits if b))
    return "; ".join(parts)


#: claims with their checks' results, as :func:`evaluate_claims` returns them
Evaluated = list[tuple[Claim, list[CheckResult]]]


def evaluate_claims(claims: Sequence[Claim], runs: Mapping[str, RunData]) -> Evaluated:
    """Every check of every claim."""
    return [(claim, [judge(c, runs) for c in claim.checks]) for claim in claims]


def claims_table(evaluated: Evaluated, runs: Mapping[str, RunData]) -> pd.DataFrame:
    """One row per claim of :func:`evaluate_claims`' output (see the module docstring)."""
    rows = []
    for claim, results in evaluated:
        hows = sorted({r.how for r in results if r.how and r.verdict != "not run"})
        rows.append({
            "paper": claim.paper, "where": claim.where, "claim": claim.claim,
            "measured as": claim.measured_as,
            "this run": "; ".join(_describe(r) for r in results),
            "interval from": "; ".join(hows) or "–",
            "this run's scale": _scale(claim, runs) or "–", "paper's scale": claim.paper_scale,
            "verdict": combine(results), "id": claim.id,
        })
    return pd.DataFrame(rows)


def check_rows(evaluated: Evaluated) -> pd.DataFrame:
    """One row per check of :func:`evaluate_claims`' output: claim id and verdict, check,
    statistic, interval, verdict."""
    rows = []
    for claim, results in evaluated:
        verdict = combine(results)
        for i, r in enumerate(results):
            c = r.check
            rows.append({
                "claim": claim.id, "claim_verdict": verdict, "check": i, "system": c.system,
                "metric": c.metric, "predicate": c.predicate, "a": str(c.a), "b": r.b_run,
                "a_value": r.a_value, "b_value": r.b_value, "statistic": r.value,
                "low": r.low, "high": r.high, "threshold": r.threshold, "verdict": r.verdict,
                "optional": c.optional, "interval_from": r.how,
            })
    return pd.DataFrame(rows)


def _rst(table: pd.DataFrame) -> str:
    cols = ["verdict", "paper", "where", "claim", "this run", "this run's scale", "paper's scale"]
    lines = [".. list-table:: What the papers found, checked by this run", "   :header-rows: 1",
             "   :widths: 8 10 8 20 34 10 10", ""]
    for row in [dict(zip(cols, cols)), *table[cols].to_dict("records")]:
        for j, col in enumerate(cols):
            text = str(row[col]).replace("\n", " ").replace("*", r"\*").replace("|", r"\|")
            lines.append(f"   {'* -' if j == 0 else '  -'} {text}")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in CLAIMS_NOTES) + "\n"


def write_claims(claims_file: str | Path, metrics_paths: Iterable[str | Path], out_md: str | Path,
                 out_csv: str | Path, out_rst: str | Path) -> pd.DataFrame:
    """Evaluate the claims file over the runs of ``metrics_paths`` and write the three tables
    (atomically). Returns the per-claim table."""
    runs = runs_from_metrics(metrics_paths)
    evaluated = evaluate_claims(load_claims(claims_file), runs)  # once: the bootstraps are the cost
    table = claims_table(evaluated, runs)
    counts = table["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    cols = ["verdict", "paper", "where", "claim", "measured as", "this run", "interval from",
            "this run's scale", "paper's scale"]
    smoke = any(seed.metrics.get("scale") == "smoke" for run in runs.values() for seed in run.seeds)
    md = ["# What the papers found, checked by this run", "",
          *([f"**{SMOKE_NOTE}**", ""] if smoke else []), f"{len(table)} claims: {summary}.", "",
          table[cols].to_markdown(index=False), "", *[f"- {n}" for n in CLAIMS_NOTES]]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    with atomic_path(out_csv) as tmp:
        check_rows(evaluated).to_csv(tmp, index=False)
    with atomic_path(out_rst) as tmp:
        tmp.write_text(f"{len(table)} claims: {summary}.\n\n" + _rst(table))
    return table
