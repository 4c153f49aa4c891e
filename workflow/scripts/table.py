"""Per-system table (markdown + LaTeX): mean ± sem over seeds beside published values."""

import pandas as pd

from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging
from eqbg.tables import write_system_table

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
write_system_table(
    pd.read_csv(snakemake.input.runs),
    snakemake.wildcards.system,
    published_csv=snakemake.input.published,
    out_md=snakemake.output.md,
    out_tex=snakemake.output.tex,
)
