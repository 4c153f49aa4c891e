"""Per-stage job seconds of a finished pipeline run, from Snakemake's benchmark files.

Every rule writes a ``benchmark:`` TSV (wall seconds in column ``s``): run folders hold
``{train,sample,evaluate}.benchmark.tsv``, ``results/benchmarks/`` the rest. This sums them per
stage and system (and lists the slowest jobs), the numbers the README's timing paragraph gives.

    python bench/report_pipeline_time.py [results] [--top 15]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def job_seconds(results: Path) -> pd.DataFrame:
    """One row per job: stage, system, job name, seconds."""
    rows = []
    for path in results.rglob("*.tsv"):
        if "benchmark" not in path.name and "benchmarks" not in path.parts:
            continue
        seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[-1])
        rel = path.relative_to(results)
        if rel.parts[0] == "runs":  # runs/<system>/<model>/<loss>[/<variant>]/seed<k>/<stage>.benchmark.tsv
            stage, system, job = path.name.split(".")[0], rel.parts[1], "/".join(rel.parts[1:-1])
        else:  # benchmarks/<stage>/<system>.tsv or benchmarks/<stage>.tsv
            parts = rel.parts[1:]
            stage = parts[0].removesuffix(".tsv") if len(parts) == 1 else parts[0]
            job = "/".join(parts).removesuffix(".tsv")
            system = parts[-1].removesuffix(".tsv").split("_")[0] if len(parts) > 1 else "all"
            if stage == "data" and "_" in parts[-1]:
                stage = "data:" + parts[-1].removesuffix(".tsv").split("_", 1)[1]
        rows.append({"stage": stage, "system": system, "job": job, "s": seconds})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="results", type=Path)
    parser.add_argument("--top", type=int, default=15, help="slowest jobs to list")
    args = parser.parse_args()
    jobs = job_seconds(args.results)
    table = jobs.pivot_table(index="stage", columns="system", values="s", aggfunc="sum", fill_value=0.0)
    table["total"] = table.sum(axis=1)
    print(table.round(0).astype(int).sort_values("total", ascending=False).to_markdown())
    print(f"\n{len(jobs)} jobs, {jobs['s'].sum():.0f} job seconds\n")
    print(jobs.sort_values("s", ascending=False).head(args.top)[["job", "stage", "s"]].round(1).to_markdown(index=False))


if __name__ == "__main__":
    main()
