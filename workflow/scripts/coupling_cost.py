"""Transport cost of OT and equivariant-OT minibatch couplings on a system's training data."""

from pathlib import Path

from eqbg.data.transport import write_transport_costs
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging

setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
write_transport_costs(
    snakemake.wildcards.system,
    Path(snakemake.input.train),
    dict(snakemake.params.settings),
    dict(snakemake.params.options),
    out_metrics=Path(snakemake.output.metrics),
    out_arrays=Path(snakemake.output.arrays),
)
