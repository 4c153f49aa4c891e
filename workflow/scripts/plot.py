"""Per-system figures (PNG + PDF) from the evaluation arrays and training curves."""

import pandas as pd

from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging
from eqbg.plots import make_figures

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
make_figures(
    snakemake.wildcards.system,
    pd.read_csv(snakemake.input.runs),
    eval_npz_paths=list(snakemake.input.arrays),
    train_csv_paths=list(snakemake.input.curves),
    out_dir=snakemake.output.figures,
)
