"""Everything the config says, checked when the workflow is parsed: keys that moved, the
generated schema, and the resolved settings of every run and system.

A job should never be the first to find that its settings are wrong: :func:`check_config`
resolves each run's model, loss, training, ODE, sampling and evaluation settings and each
system's reference-data settings the way the jobs will, and a failure names the run or system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jsonschema

from eqbg.config.generated import config_schema
from eqbg.data.settings import resolve_settings as resolve_data_settings
from eqbg.evaluation.settings import resolve_settings as resolve_evaluation_settings
from eqbg.flows.registry import resolve_model_settings
from eqbg.pipeline import check_grid, data_settings, iter_runs, run_settings, sample_params, train_params
from eqbg.sampling.settings import SamplingSettings
from eqbg.settings import SettingsError, resolve
from eqbg.systems import system_spec
from eqbg.training.settings import moved_training_key, resolve_run_settings

__all__ = ["ConfigError", "check_moved_keys", "check_schema", "check_settings", "check_config"]


class ConfigError(ValueError):
    """The config is invalid; the message says where and what to write instead."""


def check_moved_keys(config: Mapping[str, Any]) -> None:
    """Refuse a training key of an earlier config that moved (to a loss's settings, or into
    ``train.val_solver``), naming its new place (before the schema, whose message could only say
    the key is unknown)."""
    sections = [("defaults.train", (config.get("defaults") or {}).get("train") or {})]
    sections += [(f"overrides[{i}].train", o.get("train") or {})
                 for i, o in enumerate(config.get("overrides") or [])]
    for where, section in sections:
        for key in section:
            message = moved_training_key(key, where)
            if message is not None:
                raise ConfigError(message)


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def check_schema(config: dict[str, Any]) -> None:
    """Validate ``config`` against :func:`~eqbg.config.generated.config_schema` and fill in the
    top-level defaults it declares (``scale``, ``device``, ...), in place."""
    schema = config_schema()
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config),
                    key=lambda e: len(list(e.absolute_path)), reverse=True)
    if errors:
        error = errors[0]
        raise ConfigError(f"config key {_path(error)}: {error.message}")
    for key, prop in schema["properties"].items():
        if "default" in prop and key not in config:
            config[key] = prop["default"]


_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def _on_this_machine(obj: Any) -> Any:
    """``obj`` with every well-formed ``device`` on the CPU: the DAG of a GPU config is often
    built where no GPU is (a cluster's login node); a malformed device still fails."""
    if isinstance(obj, Mapping):
        return {k: "cpu" if k == "device" and isinstance(v, str) and _DEVICE.match(v)
                else _on_this_machine(v) for k, v in obj.items()}
    return obj


def check_settings(config: Mapping[str, Any]) -> None:
    """Resolve the settings of every run and every system's reference data as the jobs will
    (devices aside: see :func:`_on_this_machine`)."""
    config = _on_this_machine(config)
    for system in config.get("systems", {}):
        try:
            resolve_data_settings(system, system_spec(system).reference_sampler,
                                  {k: v for k, v in data_settings(config, system).items() if k != "seed"})
        except ValueError as err:
            raise ConfigError(f"systems.{system}.data: {err}") from None
    for run in iter_runs(config):
        try:
            settings = train_params(config, run)["settings"]
            resolve_model_settings(settings["model"], run.model)
            resolve_run_settings(settings, run.loss)
            resolve(SamplingSettings, sample_params(config, run)["settings"], "sample")
            resolve_evaluation_settings(run_settings(config, run)["evaluate"])
        except (SettingsError, ValueError) as err:
            raise ConfigError(f"run {run.path}: {err}") from None


def check_config(config: dict[str, Any]) -> None:
    """:func:`check_moved_keys`, :func:`check_schema` (defaults filled in place), the grid's
    cross-references (:func:`eqbg.pipeline.check_grid`), then :func:`check_settings`; raises
    :class:`ConfigError` (``check_grid``: ``ValueError``)."""
    check_moved_keys(config)
    check_schema(config)
    check_grid(config)
    check_settings(config)
