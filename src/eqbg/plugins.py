"""Plugins: modules named in the config's ``plugins:`` that register models, losses, systems,
reference samplers or metrics with the registries (``register_model``, ``register_loss``,
``register_metric``, ...). The workflow imports them before it reads the rest of the config, and
every job imports them again before it builds anything (:func:`load_plugins` in each script),
so a component added this way needs no edit of the package."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["load_plugins"]


def load_plugins(config: Mapping[str, Any]) -> list[str]:
    """Import every module of ``config["plugins"]`` (once); returns their names."""
    names = list(config.get("plugins") or [])
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(f"plugin {name!r} named in the config's plugins: cannot be imported: {err}") from err
    return names
