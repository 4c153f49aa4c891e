"""The pipeline config's JSON schema, generated from the registries and their settings classes.

Each model, loss and system gets its own branch: ``defaults.model.<name>`` takes exactly that
model's keys, ``defaults.loss.<name>`` that loss's, ``systems.<name>.data`` the keys of the
system's reference sampler and ``systems.<name>.options`` the options the system accepts. An
override's ``model:`` / ``loss:`` takes the keys of the component its ``when:`` names (any
registered one's when it names none; every run it matches is then resolved at parse time, see
:mod:`eqbg.config.check`). A model, loss or system registered by a plugin is in the schema as
soon as its module is imported.
"""

from __future__ import annotations

from typing import Any

from eqbg.baselines.mcmc import MCMC_BUDGETS, MCMCBaselineSettings
from eqbg.config.schema import settings_schema
from eqbg.data.population import PopulationSettings
from eqbg.data.samplers import REFERENCE_SAMPLERS
from eqbg.data.transport import TransportCostSettings
from eqbg.evaluation.settings import EvaluationSettings
from eqbg.flows.registry import MODELS
from eqbg.flows.solver import ODESettings
from eqbg.losses import LOSSES
from eqbg.sampling.settings import SamplingSettings
from eqbg.scale import SCALES
from eqbg.systems import SYSTEM_SPECS
from eqbg.training.settings import TrainingSettings

__all__ = ["config_schema"]

_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"}
_SEEDS = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "minimum": 0}}


def _names(registry: Any, what: str) -> dict[str, Any]:
    return {"description": f"a registered {what}", "enum": sorted(registry)}


def _list_of(names: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "uniqueItems": True, "items": names}


def _system_entry(name: str) -> dict[str, Any]:
    spec = SYSTEM_SPECS[name]
    data = settings_schema(REFERENCE_SAMPLERS[spec.reference_sampler].settings)
    # get_system's options come from systems.<name>.options; the seed is the data rule's
    del data["properties"]["system_options"]
    data["properties"]["seed"] = {"type": "integer", "minimum": 0, "description": "seeds the sampler"}
    options = {"type": "object", "additionalProperties": False,
               "description": f"keyword options of get_system({name!r}, ...)",
               "properties": {option: {} for option in spec.options}}
    properties = {
        "options": options,
        "data": data,
        "coupling": settings_schema(TransportCostSettings),
        "mcmc": settings_schema(MCMCBaselineSettings),
    }
    if "dihedrals" in spec.observables:
        properties["population"] = settings_schema(PopulationSettings)
    return {"type": "object", "additionalProperties": False, "required": ["data"],
            "properties": properties}


def _by_name(registry: Any) -> dict[str, Any]:
    """``defaults.<section>``: each registered component's settings under its name."""
    return {"type": "object", "additionalProperties": False,
            "properties": {name: settings_schema(spec.settings) for name, spec in registry.items()}}


def _union(registry: Any) -> dict[str, Any]:
    """An override's section that names no component: keys of any registered one."""
    properties: dict[str, Any] = {}
    for spec in registry.values():
        properties.update(settings_schema(spec.settings)["properties"])
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _override() -> dict[str, Any]:
    when = {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
        "system": _names(SYSTEM_SPECS, "system"), "model": _names(MODELS, "model"),
        "loss": _names(LOSSES, "loss"), "variant": _NAME, "seed": {"type": "integer"}}}
    branches = [
        {"if": {"required": ["when"], "properties": {"when": {"required": [section], "properties": {
            section: {"const": name}}}}},
         "then": {"properties": {section: settings_schema(spec.settings)}}}
        for section, registry in (("model", MODELS), ("loss", LOSSES)) for name, spec in registry.items()
    ]
    return {"type": "object", "additionalProperties": False, "required": ["when"], "allOf": branches,
            "properties": {"when": when, "model": _union(MODELS), "loss": _union(LOSSES),
                           **_run_sections()}}


def _run_sections() -> dict[str, Any]:
    sample = settings_schema(SamplingSettings)
    # the sample count is the sample rule's, not sample_run's settings (eqbg.pipeline.sample_params)
    sample["properties"]["n_samples"] = {"type": "integer", "minimum": 1,
                                         "description": "samples drawn with their log q"}
    return {"train": settings_schema(TrainingSettings), "ode": settings_schema(ODESettings),
            "sample": sample, "evaluate": settings_schema(EvaluationSettings)}


def config_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of the pipeline config, from today's registries."""
    grid_entry = {"type": "object", "additionalProperties": False,
                  "required": ["system", "models", "losses", "seeds"], "properties": {
                      "system": _names(SYSTEM_SPECS, "system"),
                      "models": _list_of(_names(MODELS, "model")),
                      "losses": _list_of(_names(LOSSES, "loss")),
                      "variants": _list_of(_NAME), "seeds": _SEEDS}}
    baselines = {"type": "object", "additionalProperties": False, "properties": {"mcmc": {
        "type": "object", "additionalProperties": False, "required": ["systems"], "properties": {
            "systems": _list_of(_names(SYSTEM_SPECS, "system")),
            "budgets": _list_of({"enum": list(MCMC_BUDGETS)}), "seeds": _SEEDS}}}}
    defaults = {"type": "object", "additionalProperties": False,
                "required": ["model", "train", "ode", "sample", "evaluate"],
                "properties": {"model": _by_name(MODELS), "loss": _by_name(LOSSES),
                               "mcmc": settings_schema(MCMCBaselineSettings), **_run_sections()}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "eqbg pipeline configuration (generated by eqbg.config from the settings "
                       "classes of the registered models, losses, systems and stages)",
        "type": "object",
        "additionalProperties": False,
        "required": ["systems", "grid", "defaults"],
        "properties": {
            "plugins": {"description": "modules imported before the config is read: they register "
                        "models, losses, systems or metrics (eqbg.plugins)",
                        "type": "array", "items": {"type": "string"}},
            "scale": {"enum": list(SCALES), "default": "full",
                      "description": "full, or smoke: every job at smoke size (eqbg.scale)"},
            "smoke_device": {"enum": ["cpu", "cuda"], "default": "cpu",
                             "description": "the device of smoke-size runs"},
            "device": {"enum": ["cpu", "cuda", "auto"], "default": "cpu",
                       "description": "where training, sampling and evaluation run"},
            "systems": {"type": "object", "minProperties": 1, "additionalProperties": False,
                        "properties": {name: _system_entry(name) for name in SYSTEM_SPECS}},
            "grid": {"type": "array", "items": grid_entry},
            "baselines": baselines,
            "defaults": defaults,
            "overrides": {"type": "array", "default": [], "items": _override()},
        },
    }
