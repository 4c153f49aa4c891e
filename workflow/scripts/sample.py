"""Draw samples with exact log-likelihood from one trained run."""

from pathlib import Path

import torch

from eqbg.pipeline import setup_logging
from eqbg.training import sample_run

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
settings = snakemake.params.settings
sample_run(
    Path(snakemake.input.model).parent,
    n_samples=int(settings["sample"]["n_samples"]),
    settings=settings,
    out_path=Path(snakemake.output.samples),
    seed=int(snakemake.wildcards.seed),
)
