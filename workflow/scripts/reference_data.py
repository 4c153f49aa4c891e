"""Make the reference data of one system (train/val/test splits + provenance)."""

from pathlib import Path

import torch

from eqbg.data import make_reference_data
from eqbg.pipeline import setup_logging

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
settings = dict(snakemake.params.settings)
make_reference_data(
    snakemake.wildcards.system,
    settings,
    seed=int(settings.pop("seed", 0)),
    out_dir=Path(snakemake.output.provenance).parent,
    options=snakemake.params.options,
)
