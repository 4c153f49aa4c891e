"""Long MD of one system and the population of its slow phi windows (eqbg.data.population)."""

from eqbg.data.population import write_phi_population
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
write_phi_population(
    snakemake.wildcards.system,
    dict(snakemake.params.settings),
    dict(snakemake.params.options),
    report_path=snakemake.output.report,
    phi_path=snakemake.output.phi,
)
