"""The headline table across systems: Markdown, CSV and the reST the report's front page shows."""

from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging
from eqbg.tables import write_headline_table

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
write_headline_table(
    list(snakemake.input.runs),
    out_md=snakemake.output.md,
    out_csv=snakemake.output.csv,
    out_rst=snakemake.output.rst,
)
