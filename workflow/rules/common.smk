# Grid expansion, per-run settings and shared wildcard constraints.
import re
from pathlib import Path

from eqbg.pipeline import (
    canonical,
    coupling_settings,
    data_settings,
    evaluate_params,
    export_source_path,
    iter_runs,
    population_settings,
    sample_params,
    system_options,
    train_inputs,
    train_params,
)
from eqbg.scale import check_smoke_directory
from eqbg.baselines.grid import check_mcmc_grid, iter_mcmc_runs, mcmc_params
from eqbg.systems import KNOWN_SYSTEMS, system_spec
from eqbg.claims.spec import data_measurements, load_claims

export_source_path()

check_mcmc_grid(config)
check_smoke_directory(config)

RUNS = list(iter_runs(config))
RUN_BY_PATH = {run.path: run for run in RUNS}
RUN_SYSTEMS = sorted({run.system for run in RUNS})
DATA_SYSTEMS = list(config["systems"])
# budget-matched MCMC runs (eqbg.baselines), whose folders sit beside the flows' and read like theirs
MCMC_RUNS = list(iter_mcmc_runs(config))
MCMC_RUN_BY_PATH = {run.path: run for run in MCMC_RUNS}
USES_GPU = config.get("device", "cpu") in ("cuda", "auto")


wildcard_constraints:
    system="|".join(KNOWN_SYSTEMS),
    # a run folder below results/runs: exactly the grid's runs (a variant adds a folder)
    run="|".join(re.escape(path) for path in RUN_BY_PATH) or "(?!)",
    mcmc_run="|".join(re.escape(path) for path in MCMC_RUN_BY_PATH) or "(?!)",


def run_of(wildcards):
    """The grid cell whose folder the job's ``run`` wildcard names."""
    return RUN_BY_PATH[wildcards.run]


def runs_of(system):
    """The flows of a system's grid."""
    return [run for run in RUNS if run.system == system]


def mcmc_of(wildcards):
    """The MCMC run whose folder the job's ``mcmc_run`` wildcard names."""
    return MCMC_RUN_BY_PATH[wildcards.mcmc_run]


def reported_runs_of(system):
    """Every run folder the system's tables and figures read: its flows and its MCMC runs."""
    return runs_of(system) + [run for run in MCMC_RUNS if run.system == system]


def population_input(system):
    """The umbrella-sampling reference of the phi populations (rule md_population) of a system
    with backbone dihedrals, which its runs' evaluation reads; nothing for the others.
    """
    if "dihedrals" in system_spec(system).observables:
        return [f"results/data/{system}/md_population.json"]
    return []


def population_workers(system):
    """Processes of a system's umbrella sampling (its windows run in parallel)."""
    from eqbg.data.population import POPULATION_DEFAULTS

    settings = population_settings(config, system)
    return int(settings.get("n_workers", POPULATION_DEFAULTS["n_workers"]))


def all_targets():
    targets = expand("results/data/{system}/provenance.json", system=DATA_SYSTEMS)
    targets += [f"results/runs/{run.path}/metrics.json" for run in RUNS + MCMC_RUNS]
    if RUNS:
        targets += report_targets()
    return targets


# Published numbers shipped with the workflow (not a pipeline output).
PUBLISHED = str(Path(workflow.basedir) / "workflow" / "resources" / "published.csv")
# The papers' claims that every run is checked against (eqbg.claims).
CLAIMS = str(Path(workflow.basedir) / "workflow" / "resources" / "claims.yaml")


def claims_inputs():
    """What the claims read: every run's metrics, evaluation arrays and training curve, and the
    measurements of the data that claims name (for the systems this config has data for).
    """
    files = {"runs": [], "data": []}
    for run in RUNS:
        files["runs"] += [
            f"results/runs/{run.path}/{name}"
            for name in ("metrics.json", "eval.npz", "train.csv")
        ]
    for run in MCMC_RUNS:
        files["runs"] += [
            f"results/runs/{run.path}/{name}" for name in ("metrics.json", "eval.npz")
        ]
    for system, name in sorted(data_measurements(load_claims(CLAIMS))):
        if system in DATA_SYSTEMS:
            files["data"] += [
                f"results/data/{system}/{name}_cost/{f}"
                for f in ("metrics.json", "eval.npz")
            ]
    return files


def report_targets():
    return expand(
        [
            "results/tables/{system}/summary.md",
            "results/tables/{system}/summary.tex",
            "results/figures/{system}",
        ],
        system=RUN_SYSTEMS,
    ) + ["results/tables/claims.md", "results/report.html"]
