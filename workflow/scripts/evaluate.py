"""Evaluate one run: reweighting ESS, test NLL, energy/distance W2, cost."""

from pathlib import Path

import torch

from eqbg.evaluation import evaluate_run
from eqbg.io import read_json
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
torch.set_num_threads(snakemake.threads)
evaluate_run(
    read_json(snakemake.input.config)["system"],
    run_dir=Path(snakemake.input.samples).parent,
    data_dir=Path(snakemake.input.test).parent,
    settings=snakemake.params.run,
    out_path=Path(snakemake.output.metrics),
)
