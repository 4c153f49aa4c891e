"""Model registry: build a CNF for a system from a model name and plain-dict settings.

New vector fields register with :func:`register_model` (a settings dataclass with defaults and a
builder); :func:`build_flow` then validates the keys against that dataclass. Keys common to all
models: ``name`` (registry name) and ``prior_scale`` (std of the Gaussian prior).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from eqbg.flows import CNF, make_prior
from eqbg.training.settings import ODESettings, SettingsError, asdict, resolve

__all__ = [
    "EGNNSettings",
    "KernelSettings",
    "register_model",
    "MODELS",
    "build_flow",
    "resolve_model_settings",
]


@dataclass
class EGNNSettings:
    """EGNN vector field (Satorras et al. 2021; EFM). Atom types come from the system."""

    name: str = "egnn"  #: registry name
    prior_scale: float = 1.0  #: std of the (CoM-free) Gaussian prior
    hidden: int = 64  #: width of every MLP
    n_layers: int = 4  #: E(n) message-passing layers
    attention: bool = True  #: sigmoid edge gate
    tanh: bool = True  #: bound coordinate updates by tanh * coords_range / n_layers
    coords_range: float = 15.0  #: see tanh
    time_freqs: int = 0  #: sinusoidal time frequencies on top of the scalar t feature
    normalize_aggregation: bool = False  #: divide neighbour sums by n - 1


@dataclass
class KernelSettings:
    """Gradient field of an invariant RBF potential (Köhler, Klein, Noé 2020)."""

    name: str = "kernel"  #: registry name
    prior_scale: float = 1.0  #: std of the (CoM-free) Gaussian prior
    n_rbf: int = 50  #: radial basis functions over pair distances
    r_max: float = 8.0  #: largest RBF centre
    gamma: float = 0.5  #: RBF width parameter
    n_time_rbf: int = 10  #: RBFs over time
    time_gamma: float = 0.3  #: time RBF width
    init_scale: float = 0.0  #: initial weight scale


def _build_egnn(system: Any, s: EGNNSettings) -> nn.Module:
    from eqbg.nn import EGNNField

    types = system.atom_types
    return EGNNField(
        int(system.n_particles),
        int(system.spatial_dim),
        hidden=s.hidden,
        n_layers=s.n_layers,
        n_atom_types=int(types.max()) + 1,
        atom_types=types,
        attention=s.attention,
        tanh=s.tanh,
        coords_range=s.coords_range,
        com_free=bool(system.com_free),
        time_freqs=s.time_freqs,
        normalize_aggregation=s.normalize_aggregation,
    )


def _build_kernel(system: Any, s: KernelSettings) -> nn.Module:
    from eqbg.nn import KernelField

    if not system.com_free:
        raise SettingsError(f"model 'kernel' needs a CoM-free system, {system.name} is not")
    return KernelField(
        int(system.n_particles),
        int(system.spatial_dim),
        n_rbf=s.n_rbf,
        r_max=s.r_max,
        gamma=s.gamma,
        n_time_rbf=s.n_time_rbf,
        time_gamma=s.time_gamma,
        init_scale=s.init_scale,
    )


#: name -> (settings dataclass, builder(system, settings) -> field module)
MODELS: dict[str, tuple[type, Callable[[Any, Any], nn.Module]]] = {}


def register_model(name: str, settings_cls: type, builder: Callable[[Any, Any], nn.Module]) -> None:
    """Make ``name`` available to :func:`build_flow` (``settings_cls`` must have ``name``)."""
    if "name" not in {f.name for f in dataclasses.fields(settings_cls)}:
        raise TypeError(f"{settings_cls.__name__} needs a 'name' field")
    MODELS[name] = (settings_cls, builder)


register_model("egnn", EGNNSettings, _build_egnn)
register_model("kernel", KernelSettings, _build_kernel)


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
    return resolve(MODELS[name][0], cfg, f"model[{name}]")


def build_flow(
    system: Any,
    model_cfg: Mapping[str, Any] | None,
    ode_cfg: Mapping[str, Any] | ODESettings | None,
) -> CNF:
    """Build the CNF for ``system`` (an ``eqbg.systems.System``).

    Args:
        system: target system (particle count, dimension, atom types, CoM-freedom).
        model_cfg: model settings, ``name`` selects the registered model (default ``egnn``).
        ode_cfg: :class:`ODESettings` keys (solver used by ``sample``/``log_prob``).

    Returns:
        A float32 :class:`eqbg.flows.CNF` on the CPU.
    """
    ms = resolve_model_settings(model_cfg)
    ode = ode_cfg if isinstance(ode_cfg, ODESettings) else resolve(ODESettings, ode_cfg, "ode")
    field = MODELS[ms.name][1](system, ms)
    prior = make_prior(system, scale=ms.prior_scale)
    return CNF(
        field,
        prior,
        method=ode.method,
        atol=ode.atol,
        rtol=ode.rtol,
        n_steps=ode.n_steps,
        trace_method=ode.trace_method,
        trace_chunk_size=ode.trace_chunk_size,
        probe=ode.probe,
        adjoint_seminorm=ode.adjoint_seminorm,
    )


def model_settings_dict(model_cfg: Mapping[str, Any] | None, name: str | None = None) -> dict:
    """Resolved model settings as a plain dict (what ``config.json`` records)."""
    return asdict(resolve_model_settings(model_cfg, name))
