"""Draw samples with exact log-likelihood from one trained run."""

from pathlib import Path

from eqbg.pipeline import sampling_settings, setup_logging
from eqbg.training import sample_run

setup_logging(snakemake.log[0])
n_samples, settings = sampling_settings(snakemake.params.settings)
sample_run(
    Path(snakemake.input.model).parent,
    n_samples=n_samples,
    settings={"num_threads": snakemake.threads, **settings},
    out_path=Path(snakemake.output.samples),
    seed=int(snakemake.wildcards.seed),
)
