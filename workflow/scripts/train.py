"""Train one run of the grid (resumes from run_dir/checkpoint.pt if present)."""

from pathlib import Path

import torch

from eqbg.pipeline import setup_logging
from eqbg.training import train_run

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
wc = snakemake.wildcards
train_run(
    wc.system,
    wc.model,
    wc.loss,
    int(wc.seed),
    snakemake.params.settings,
    data_dir=Path(snakemake.input.train).parent,
    run_dir=Path(snakemake.output.model).parent,
)
