"""The pipeline config: its schema, generated from the registries' settings classes
(:mod:`eqbg.config.generated`), and its checks when the workflow is parsed
(:mod:`eqbg.config.check`). Plugins that register components: :mod:`eqbg.plugins`.

``python -m eqbg.config`` prints the schema (YAML).
"""

from __future__ import annotations

from eqbg.config.check import ConfigError, check_config
from eqbg.config.generated import config_schema

__all__ = ["ConfigError", "check_config", "config_schema"]
