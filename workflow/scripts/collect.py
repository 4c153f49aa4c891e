"""One tidy CSV of every run of a system (one row per run)."""

from eqbg.io import atomic_path
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging
from eqbg.tables import collect_metrics

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
with atomic_path(snakemake.output[0]) as tmp:
    collect_metrics(list(snakemake.input)).to_csv(tmp, index=False)
