"""The claims table: what each paper found, checked against this run's results."""

from eqbg.claims import write_claims
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
metrics = [p for p in [*snakemake.input.runs, *snakemake.input.data] if p.endswith("metrics.json")]
write_claims(
    snakemake.input.claims,
    metrics,
    out_md=snakemake.output.md,
    out_csv=snakemake.output.csv,
    out_rst=snakemake.output.rst,
)
