"""Evaluate one run: reweighting ESS, test NLL, energy/distance W2, cost."""

from pathlib import Path

import torch

from eqbg.evaluation import evaluate_run
from eqbg.io import read_json
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging
from eqbg.rundir import DataDir, RunDir

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
torch.set_num_threads(snakemake.threads)
inputs = snakemake.input
# the stage reads the files its rule declares, nothing found by name
evaluate_run(
    read_json(inputs.config)["system"],
    run_dir=RunDir.from_files(config=inputs.config, model=inputs.model, train_curve=inputs.curve,
                              samples=inputs.samples),
    data_dir=DataDir.from_files(test=inputs.test, provenance=inputs.data_provenance,
                                population=inputs.population[0] if inputs.population else None),
    settings=snakemake.params.run,
    out_path=Path(snakemake.output.metrics),
    eval_npz_path=Path(snakemake.output.arrays),
)
