"""Draw samples with their log density from one trained run."""

from pathlib import Path

from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging
from eqbg.rundir import RunDir
from eqbg.sampling import sample_run

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
run = snakemake.params.run
sample_run(
    RunDir.from_files(model=snakemake.input.model, config=snakemake.input.config),
    n_samples=run["n_samples"],
    settings={"num_threads": snakemake.threads, **run["settings"]},
    out_path=Path(snakemake.output.samples),
    seed=run["seed"],
)
