"""Guard the findings: compare a run's claims against a committed baseline of verdicts.

The baseline (``workflow/resources/claims_baseline.csv``) is the per-check ``claims.csv`` of a
measured default run. A check the baseline has as *reproduced* that now comes out *not
reproduced* is a regression: the comparison fails and names the claim, the check and the
numbers. Other changes (reproduced -> inconclusive, new checks) are reported, not failed: at
laptop size an interval may straddle on another machine's run.

Command line (CI's default-grid job, or locally after ``snakemake --cores all``)::

    python -m eqbg.claims.baseline results/tables/claims.csv workflow/resources/claims_baseline.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

__all__ = ["compare_with_baseline", "main"]

_KEY = ["claim", "check"]


def compare_with_baseline(current: pd.DataFrame, baseline: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(regressions, changes)``: lines naming each check that went from reproduced to not
    reproduced, and each other verdict change (a check missing now counts as a change)."""
    merged = baseline.merge(current, on=_KEY, how="left", suffixes=("_baseline", ""))
    regressions, changes = [], []
    for _, r in merged.iterrows():
        was, now = r["verdict_baseline"], r.get("verdict")
        if now == was:
            continue
        where = (f"{r['claim']} check {int(r['check'])} ({r['system_baseline']} {r['metric_baseline']} "
                 f"{r['predicate_baseline']} {r['a_baseline']}{' vs ' + str(r['b_baseline']) if isinstance(r['b_baseline'], str) and r['b_baseline'] else ''})")
        if pd.isna(now):
            changes.append(f"{where}: in the baseline ({was}), not in this run")
            continue
        numbers = (f"statistic {r['statistic']:.4g} [{r['low']:.4g}, {r['high']:.4g}] "
                   f"(baseline {r['statistic_baseline']:.4g} [{r['low_baseline']:.4g}, {r['high_baseline']:.4g}])")
        line = f"{where}: {was} -> {now}; {numbers}"
        (regressions if was == "reproduced" and now == "not reproduced" else changes).append(line)
    return regressions, changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("claims", type=Path, help="this run's results/tables/claims.csv")
    parser.add_argument("baseline", type=Path, help="workflow/resources/claims_baseline.csv")
    args = parser.parse_args(argv)
    regressions, changes = compare_with_baseline(pd.read_csv(args.claims), pd.read_csv(args.baseline))
    for line in changes:
        print(f"changed: {line}")
    for line in regressions:
        print(f"NOT REPRODUCED ANY MORE: {line}", file=sys.stderr)
    print(f"{len(regressions)} regressions, {len(changes)} other changes against {args.baseline}")
    return 1 if regressions else 0


if __name__ == "__main__":
    raise SystemExit(main())
