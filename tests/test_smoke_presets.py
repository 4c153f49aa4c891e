"""Every distinct run of the presets, one seed, at smoke size, through every stage (issue 24).

``scale: smoke`` (eqbg.scale) keeps each run's model sizes, dtypes, solvers and losses and
shrinks only data, steps, samples, AIS and umbrella sampling. Here the paper, training-size and
equivariant-OT presets (merged over config.yaml as Snakemake merges them) run that way: the
reference data of each system, the umbrella-sampling reference and transport cost where the
pipeline makes them, then train, sample and evaluate of each distinct (system, model, loss,
variant), the budget-matched MCMC of each (system, budget), and the per-system, headline and
claims tables. The stages are the library calls the
rules' scripts make, with the settings the rules pass (``eqbg.pipeline``), in one process: the
Snakemake wiring of the same stages is what the tiny-grid pipeline tests run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eqbg.baselines.grid import iter_mcmc_runs, mcmc_params
from eqbg.baselines.run import mcmc_run
from eqbg.claims.table import write_claims
from eqbg.data import load_dataset, make_reference_data
from eqbg.data.population import write_phi_population
from eqbg.data.transport import write_transport_costs
from eqbg.evaluation import evaluate_run
from eqbg.io import read_json
from eqbg.pipeline import (
    Run,
    coupling_settings,
    data_settings,
    deep_merge,
    evaluate_params,
    iter_runs,
    population_settings,
    sample_params,
    system_options,
    train_params,
)
from eqbg.sampling import sample_run
from eqbg.scale import SMOKE_SPLITS
from eqbg.systems import system_spec
from eqbg.tables import SMOKE_NOTE, collect_metrics, write_headline_table, write_system_table
from eqbg.training import train_run

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("paper.yaml", "training_size.yaml", "eqot.yaml")

pytestmark = [pytest.mark.smoke, pytest.mark.slow]


def smoke_config(preset: str) -> dict:
    """config.yaml with the preset merged over it, at smoke size."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config = deep_merge(config, yaml.safe_load((ROOT / "workflow" / "presets" / preset).read_text()))
    return {**config, "scale": "smoke"}


def distinct_runs(config: dict) -> list[Run]:
    """One run (the first seed) of every (system, model, loss, variant) of the grid."""
    runs: dict[tuple, Run] = {}
    for run in iter_runs(config):
        runs.setdefault((run.system, run.model, run.loss, run.variant), run)
    return list(runs.values())


def distinct_mcmc_runs(config: dict) -> list[Run]:
    """One run (the first seed) of every (system, budget) of the budget-matched MCMC."""
    runs: dict[tuple, Run] = {}
    for run in iter_mcmc_runs(config):
        runs.setdefault((run.system, run.variant), run)
    return list(runs.values())


def make_data(config: dict, system: str, data: Path) -> None:
    """The data stage of one system: reference data, and the population and transport-cost
    references where the pipeline makes them."""
    settings = data_settings(config, system)
    seed = int(settings.pop("seed", 0))
    options = system_options(config, system)
    make_reference_data(system, {**settings, "system_options": options}, seed=seed, out_dir=data)
    spec = system_spec(system)
    if "dihedrals" in spec.observables:
        write_phi_population(system, population_settings(config, system), options,
                             report_path=data / "md_population.json",
                             phi_path=data / "md_population_phi.npz")
    if spec.reference_sampler == "mcmc":
        write_transport_costs(system, data / "train.npz", coupling_settings(config, system), options,
                              out_metrics=data / "coupling_cost" / "metrics.json",
                              out_arrays=data / "coupling_cost" / "eval.npz")


def run_stages(config: dict, run: Run, data: Path, run_dir: Path) -> dict:
    """Train, sample and evaluate one run as the rules do; its metrics."""
    train = train_params(config, run)
    train_run(**train["identity"], settings=train["settings"], data_dir=data, run_dir=run_dir,
              system_options=train["system_options"])
    sample = sample_params(config, run)
    sample_run(run_dir, n_samples=sample["n_samples"], settings=sample["settings"],
               out_path=run_dir / "samples.npz", seed=sample["seed"])
    evaluate_run(run.system, run_dir, data, evaluate_params(config, run), run_dir / "metrics.json")
    return read_json(run_dir / "metrics.json")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_run_at_smoke_size(preset, tmp_path):
    config = smoke_config(preset)
    runs = distinct_runs(config)
    results = tmp_path / "results"
    for system in sorted({run.system for run in runs} | set(config["systems"])):
        make_data(config, system, results / "data" / system)
        # smoke data: the splits of eqbg.scale, whatever the preset asks for
        for split, n in SMOKE_SPLITS.items():
            assert len(load_dataset(results / "data" / system / f"{split}.npz")) == n
    metrics_paths = []
    for run in runs:
        run_dir = results / "runs" / run.path
        metrics = run_stages(config, run, results / "data" / run.system, run_dir)
        trained = read_json(run_dir / "config.json")
        # the switch is recorded, and it shrank only what it says it shrinks
        assert trained["training"]["scale"] == metrics["scale"] == "smoke"
        assert trained["training"]["steps"] == 2 and trained["device"] == "cpu"
        assert metrics["n_samples"] == sample_params(config, run)["n_samples"] <= 8
        full = train_params({**config, "scale": "full"}, run)["settings"]
        assert trained["model_settings"] == {**trained["model_settings"], **full["model"]}
        assert trained["training"]["dtype"] == full["training"].get("dtype", trained["training"]["dtype"])
        metrics_paths.append(run_dir / "metrics.json")
    for run in distinct_mcmc_runs(config):
        run_dir = results / "runs" / run.path
        params = mcmc_params(config, run)
        flows = [p for p in metrics_paths if f"/runs/{run.system}/" in str(p)]
        metrics = mcmc_run(run.system, flows, results / "data" / run.system, run_dir, **params)
        assert metrics["scale"] == "smoke" and metrics["mcmc_n_chains"] <= 2
        assert metrics["cost_energy_evals_total"] <= max(9, metrics["mcmc_budget"])
        metrics_paths.append(run_dir / "metrics.json")
    tables = results / "tables"
    runs_csvs = []
    for system in sorted({run.system for run in runs}):
        frame = collect_metrics([p for p in metrics_paths if f"/runs/{system}/" in str(p)])
        runs_csvs.append(tables / system / "runs.csv")
        runs_csvs[-1].parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(runs_csvs[-1], index=False)
        write_system_table(frame, system, ROOT / "workflow" / "resources" / "published.csv",
                           tables / system / "summary.md", tables / system / "summary.tex")
        assert SMOKE_NOTE in (tables / system / "summary.md").read_text()
    write_headline_table(runs_csvs, *(tables / f"headline.{ext}" for ext in ("md", "csv", "rst")))
    assert SMOKE_NOTE in (tables / "headline.md").read_text()
    claims = write_claims(ROOT / "workflow" / "resources" / "claims.yaml", metrics_paths,
                          *(tables / f"claims.{ext}" for ext in ("md", "csv", "rst")))
    assert SMOKE_NOTE in (tables / "claims.md").read_text() and len(claims) > 0
