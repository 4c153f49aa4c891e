"""Budget-matched MCMC of one system and budget, written as a run folder."""

from pathlib import Path

import torch

from eqbg.baselines.run import mcmc_run
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
torch.set_num_threads(snakemake.threads)
params = snakemake.params.run
mcmc_run(
    params["identity"]["system"],
    flow_metrics_paths=list(snakemake.input.flows),
    data_dir=Path(snakemake.input.test).parent,
    out_dir=Path(snakemake.output.metrics).parent,
    identity=params["identity"],
    settings=params["settings"],
)
