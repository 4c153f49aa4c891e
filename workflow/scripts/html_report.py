"""Build results/report.html with Snakemake's own report over the tables and figures.

The report is made by a nested ``snakemake --report`` on this job's inputs, with the running
workflow's resolved config, so the HTML always matches what this run produced.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from eqbg.io import atomic_path
from eqbg.pipeline import setup_logging

log = setup_logging(snakemake.log[0])
out = Path(snakemake.output[0])
with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as tmp_out:
    configfile = Path(tmp) / "config.yaml"
    configfile.write_text(yaml.safe_dump(dict(snakemake.config)))
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(snakemake.params.snakefile),
        "--configfile", str(configfile),
        "--report", str(tmp_out.resolve()),
        "--nolock", "--cores", "1", "--workflow-profile", "none",
        *snakemake.input,
    ]
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    log.info("%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"snakemake --report failed (exit {result.returncode}); see {snakemake.log[0]}")
