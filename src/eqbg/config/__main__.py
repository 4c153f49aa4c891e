"""``python -m eqbg.config [plugin ...]``: the config schema of the registered components (and
those the named plugin modules register), as YAML."""

import sys

import yaml

from eqbg.config import config_schema
from eqbg.plugins import load_plugins

load_plugins({"plugins": sys.argv[1:]})
yaml.safe_dump(config_schema(), sys.stdout, sort_keys=False, width=100)
