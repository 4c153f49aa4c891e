"""The model registry: the one place where a model name becomes a :class:`~eqbg.flows.Flow`.

A model is a settings dataclass (every field a config key under ``defaults.model.<name>``, with
its default and a comment that documents it) and a builder ``build(system, settings, ode) ->
Flow``, one module each under :mod:`eqbg.flows.models`. :func:`register_model` adds one;
:func:`build_flow` validates the settings and builds it (:func:`eqbg.rundir.load_flow` rebuilds
a trained one from its ``model.pt``). The config schema's model branches are generated from
:data:`MODELS` (:mod:`eqbg.config`).

Keys common to every model: ``name`` (the registry name) and ``prior_scale`` (std of the Gaussian
base distribution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eqbg.flows.base import Flow
from eqbg.flows.models.eacf import EACFSettings, build_eacf
from eqbg.flows.models.egnn import EGNNSettings, build_egnn
from eqbg.flows.models.kernel import KernelSettings, build_kernel
from eqbg.flows.models.mlp import MLPSettings, build_mlp
from eqbg.flows.models.realnvp import RealNVPSettings, build_realnvp
from eqbg.flows.solver import ODESettings
from eqbg.settings import SettingsError, asdict, resolve

__all__ = [
    "EGNNSettings",
    "KernelSettings",
    "MLPSettings",
    "EACFSettings",
    "RealNVPSettings",
    "ModelSpec",
    "MODELS",
    "register_model",
    "resolve_model_settings",
    "model_settings_dict",
    "build_flow",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its settings dataclass and its builder."""

    settings: type
    build: Callable[[Any, Any, ODESettings], Flow]


#: name -> model; the only list of model names
MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str, settings_cls: type, build: Callable[[Any, Any, ODESettings], Flow]
) -> None:
    """Make ``name`` buildable by :func:`build_flow`.

    Args:
        name: registry name (the config's ``models:`` entries and run paths use it).
        settings_cls: dataclass of the model's settings, with a ``name`` field.
        build: ``build(system, settings, ode_settings) -> Flow`` (flows without an ODE ignore
            ``ode_settings``).
    """
    if "name" not in {f.name for f in dataclasses.fields(settings_cls)}:
        raise TypeError(f"{settings_cls.__name__} needs a 'name' field")
    MODELS[name] = ModelSpec(settings_cls, build)


register_model("egnn", EGNNSettings, build_egnn)
register_model("kernel", KernelSettings, build_kernel)
register_model("mlp", MLPSettings, build_mlp)
register_model("eacf", EACFSettings, build_eacf)
register_model("realnvp", RealNVPSettings, build_realnvp)


def resolve_model_settings(model_cfg: Mapping[str, Any] | None, name: str | None = None):
    """Resolve model settings (defaults filled, unknown keys and names rejected)."""
    cfg = dict(model_cfg or {})
    cfg_name = cfg.get("name")
    if name is not None and cfg_name is not None and cfg_name != name:
        raise SettingsError(f"model settings say name={cfg_name!r} but the run is for {name!r}")
    name = name or cfg_name or "egnn"
    if name not in MODELS:
        raise SettingsError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    cfg["name"] = name
    return resolve(MODELS[name].settings, cfg, f"model[{name}]")


def model_settings_dict(model_cfg: Mapping[str, Any] | None, name: str | None = None) -> dict:
    """Resolved model settings as a plain dict (what ``config.json`` records)."""
    return asdict(resolve_model_settings(model_cfg, name))


def build_flow(
    system: Any,
    model_cfg: Mapping[str, Any] | None,
    ode_cfg: Mapping[str, Any] | ODESettings | None = None,
) -> Flow:
    """Build the flow of a registered model for ``system`` (an ``eqbg.systems.System``).

    Args:
        system: target system (particle count, dimension, atom types, CoM-freedom).
        model_cfg: model settings; ``name`` selects the registered model (default ``egnn``).
        ode_cfg: :class:`ODESettings` keys (default solver and divergence of ODE flows).

    Returns:
        A float32 :class:`Flow` on the CPU.
    """
    ms = resolve_model_settings(model_cfg)
    ode = ode_cfg if isinstance(ode_cfg, ODESettings) else resolve(ODESettings, ode_cfg, "ode")
    return MODELS[ms.name].build(system, ms, ode)

