"""Make the reference data of one system (train/val/test splits + provenance)."""

from pathlib import Path

from eqbg.data import make_reference_data
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
settings = dict(snakemake.params.settings)
seed = int(settings.pop("seed", 0))
make_reference_data(
    snakemake.wildcards.system,
    {**settings, "system_options": snakemake.params.options},
    seed=seed,
    out_dir=Path(snakemake.output.provenance).parent,
)
