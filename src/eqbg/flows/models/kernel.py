"""Köhler et al.'s kernel gradient-field CNF: its settings and builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eqbg.flows.base import Flow
from eqbg.flows.models.base import cnf_of
from eqbg.flows.solver import ODESettings
from eqbg.nn import KernelField
from eqbg.settings import SettingsError

__all__ = ["KernelSettings", "build_kernel"]


@dataclass
class KernelSettings:
    """Gradient field of an invariant RBF potential (Köhler, Klein, Noé 2020) in a CNF."""

    name: str = "kernel"  #: registry name
    prior_scale: float = 1.0  #: std of the (CoM-free) Gaussian prior
    n_rbf: int = 50  #: radial basis functions over pair distances
    r_max: float = 8.0  #: largest RBF centre
    gamma: float = 0.5  #: RBF width parameter
    n_time_rbf: int = 10  #: RBFs over time
    time_gamma: float = 0.3  #: time RBF width
    init_scale: float = 0.0  #: initial weight scale


def build_kernel(system: Any, s: KernelSettings, ode: ODESettings) -> Flow:
    if not system.com_free:
        raise SettingsError(f"model 'kernel' needs a CoM-free system, {system.name} is not")
    field = KernelField(
        int(system.n_particles),
        int(system.spatial_dim),
        n_rbf=s.n_rbf,
        r_max=s.r_max,
        gamma=s.gamma,
        n_time_rbf=s.n_time_rbf,
        time_gamma=s.time_gamma,
        init_scale=s.init_scale,
    )
    return cnf_of(system, field, s.prior_scale, ode)
