"""The EGNN CNF (Satorras et al. 2021; EFM): its settings and builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eqbg.flows.base import Flow
from eqbg.flows.models.base import cnf_of
from eqbg.flows.solver import ODESettings
from eqbg.nn import EGNNField

__all__ = ["EGNNSettings", "build_egnn"]


@dataclass
class EGNNSettings:
    """EGNN vector field (Satorras et al. 2021; EFM) in a CNF. Atom types come from the system."""

    name: str = "egnn"  #: registry name
    prior_scale: float = 1.0  #: std of the (CoM-free) Gaussian prior
    hidden: int = 64  #: width of every MLP
    n_layers: int = 4  #: E(n) message-passing layers
    attention: bool = True  #: sigmoid edge gate
    tanh: bool = True  #: bound coordinate updates by tanh * coords_range / n_layers
    coords_range: float = 15.0  #: see tanh
    time_freqs: int = 0  #: sinusoidal time frequencies on top of the scalar t feature
    normalize_aggregation: bool = False  #: divide neighbour sums by n - 1


def build_egnn(system: Any, s: EGNNSettings, ode: ODESettings) -> Flow:
    types = system.atom_types
    field = EGNNField(
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
    return cnf_of(system, field, s.prior_scale, ode)
