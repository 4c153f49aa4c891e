"""Train one run of the grid (resumes from run_dir/checkpoint.pt if present)."""

from pathlib import Path

from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging
from eqbg.rundir import DataDir
from eqbg.training import train_run

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
run = snakemake.params.run
settings = run["settings"]
settings["training"].setdefault("num_threads", snakemake.threads)
inputs = dict(snakemake.input.items())  # train / val, as the run's loss and validation need them
train_run(
    **run["identity"],
    settings=settings,
    data_dir=DataDir.from_files(**inputs) if inputs else None,
    run_dir=Path(snakemake.output.model).parent,
    system_options=run["system_options"],
)
