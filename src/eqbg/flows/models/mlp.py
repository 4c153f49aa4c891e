"""The non-equivariant MLP-field CNF: its settings and builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eqbg.flows.base import Flow
from eqbg.flows.models.base import cnf_of
from eqbg.flows.solver import ODESettings
from eqbg.nn import MLPField

__all__ = ["MLPSettings", "build_mlp"]


@dataclass
class MLPSettings:
    """Non-equivariant baseline: an MLP vector field on the CoM-free coordinates in a CNF."""

    name: str = "mlp"  #: registry name
    prior_scale: float = 1.0  #: std of the (CoM-free) Gaussian prior
    hidden: int = 128  #: width of every hidden layer
    n_layers: int = 3  #: hidden layers
    time_freqs: int = 0  #: sinusoidal time frequencies on top of the scalar t feature


def build_mlp(system: Any, s: MLPSettings, ode: ODESettings) -> Flow:
    field = MLPField(
        int(system.n_particles),
        int(system.spatial_dim),
        hidden=s.hidden,
        n_layers=s.n_layers,
        time_freqs=s.time_freqs,
        com_free=bool(system.com_free),
    )
    return cnf_of(system, field, s.prior_scale, ode)
