"""Per-system table (markdown + LaTeX): mean ± sem over seeds beside published values."""

import pandas as pd

from eqbg.pipeline import setup_logging
from eqbg.tables import write_system_table

setup_logging(snakemake.log[0])
write_system_table(
    pd.read_csv(snakemake.input.runs),
    snakemake.wildcards.system,
    published_csv=snakemake.input.published,
    out_md=snakemake.output.md,
    out_tex=snakemake.output.tex,
)
