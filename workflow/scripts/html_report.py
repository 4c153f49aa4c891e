"""Build results/report.html with Snakemake's own report over the tables and figures.

The report is made by a nested ``snakemake --report`` on this job's inputs, with the running
workflow's resolved config, so the HTML always matches what this run produced. It opens on the
workflow description (workflow/report/workflow.rst, which includes the claims and headline tables): report
metadata (the headline's counts) make Snakemake's landing page the description instead of the
rule graph. Metadata values are numbers only, since Snakemake 9 renders string values as raw
docutils parts.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from eqbg.io import atomic_path
from eqbg.plugins import load_plugins
from eqbg.pipeline import setup_logging
from eqbg.tables import headline_counts

log = setup_logging(snakemake.log[0])
load_plugins(snakemake.config)  # components the config's plugins register
out = Path(snakemake.output[0])
headline = snakemake.input.headline
targets = [*snakemake.input.results, *headline, *snakemake.input.claims]
with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as tmp_out:
    configfile = Path(tmp) / "config.yaml"
    configfile.write_text(yaml.safe_dump(dict(snakemake.config)))
    metadata = Path(tmp) / "metadata.yaml"
    csv = next(path for path in headline if path.endswith(".csv"))
    metadata.write_text(yaml.safe_dump(headline_counts(pd.read_csv(csv)), allow_unicode=True))
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(snakemake.params.snakefile),
        "--configfile", str(configfile),
        "--report", str(tmp_out.resolve()),
        "--report-metadata", str(metadata),
        "--nolock", "--cores", "1", "--workflow-profile", "none",
        *targets,
    ]
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    log.info("%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"snakemake --report failed (exit {result.returncode}); see {snakemake.log[0]}")
