# eqbg: the experiments of five papers on equivariant Boltzmann generators, from scratch.
# Stages live in workflow/rules/*.smk; the logic they call lives in src/eqbg.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# Rules may run in conda environments that do not install eqbg (envs/*.yaml): import it from
# this checkout, here and (through PYTHONPATH) in every job.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from eqbg.config import check_config
from eqbg.plugins import load_plugins


configfile: "config.yaml"


# The config's plugins register their components first; then every key is checked against the
# schema generated from the registries' settings classes (python -m eqbg.config prints it) and
# every run's settings are resolved as its jobs will resolve them.
load_plugins(config)
check_config(config)


# The HTML report's front page: what the pipeline is, its conventions and the headline table.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
