"""Train one run of the grid (resumes from run_dir/checkpoint.pt if present)."""

from pathlib import Path

from eqbg.pipeline import setup_logging, training_settings
from eqbg.training import train_run

setup_logging(snakemake.log[0])
wc = snakemake.wildcards
settings = snakemake.params.settings
run_training_settings = training_settings(settings)
run_training_settings["training"].setdefault("num_threads", snakemake.threads)
train_run(
    wc.system,
    wc.model,
    wc.loss,
    int(wc.seed),
    run_training_settings,
    data_dir=Path(snakemake.input.train).parent,
    run_dir=Path(snakemake.output.model).parent,
    system_options=settings["system_options"],
)
