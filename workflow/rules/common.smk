# Grid expansion, per-run settings and shared wildcard constraints.
import sys
from pathlib import Path

# Rules may run in conda environments that do not install eqbg (envs/*.yaml): import it from
# this checkout, here and (through PYTHONPATH) in every job.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from eqbg.pipeline import (
    Run,
    check_grid,
    export_source_path,
    iter_runs,
    run_settings,
    system_options,
)

export_source_path()

check_grid(config)

RUNS = list(iter_runs(config))
RUN_SYSTEMS = sorted({run.system for run in RUNS})
DATA_SYSTEMS = list(config["systems"])
USES_GPU = config.get("device", "cpu") in ("cuda", "auto")


wildcard_constraints:
    system=r"[a-z0-9]+",
    model=r"[a-z0-9_]+",
    loss=r"[a-z0-9_]+",
    seed=r"\d+",


def wildcard_run(wildcards):
    """The grid cell named by a job's wildcards."""
    return Run(wildcards.system, wildcards.model, wildcards.loss, int(wildcards.seed))


def settings_of(wildcards):
    """Resolved settings (defaults + overrides) of the run named by the wildcards."""
    return run_settings(config, wildcard_run(wildcards))


def runs_of(system):
    return [run for run in RUNS if run.system == system]


def all_targets():
    targets = expand("results/data/{system}/provenance.json", system=DATA_SYSTEMS)
    targets += [f"results/runs/{run.path}/metrics.json" for run in RUNS]
    if RUNS:
        targets += report_targets()
    return targets


# Published numbers shipped with the workflow (not a pipeline output).
PUBLISHED = str(Path(workflow.basedir) / "workflow" / "resources" / "published.csv")


def report_targets():
    return expand(
        [
            "results/tables/{system}/summary.md",
            "results/tables/{system}/summary.tex",
            "results/figures/{system}",
        ],
        system=RUN_SYSTEMS,
    ) + ["results/report.html"]
