"""FAB's RealNVP-style coupling flow: its settings and builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eqbg.flows.base import Flow
from eqbg.flows.realnvp import RealNVPFlow
from eqbg.flows.solver import ODESettings
from eqbg.settings import SettingsError

__all__ = ["RealNVPSettings", "build_realnvp"]


@dataclass
class RealNVPSettings:
    """Non-equivariant affine coupling flow (the FAB paper's GMM-40 / Many-Well-32 flow)."""

    name: str = "realnvp"  #: registry name
    prior_scale: float = 1.0  #: initial std of the trainable diagonal Gaussian base
    n_layers: int = 15  #: affine coupling layers (FAB GMM-40: 15; Many-Well-32: 10)
    hidden: int = 80  #: conditioner MLP width (FAB GMM-40: 80; Many-Well-32: 320)
    n_hidden_layers: int = 2  #: hidden layers per conditioner MLP
    trainable_base: bool = True  #: learn the base's mean and scales
    lu_linear: bool = True  #: LU-parameterised invertible linear maps between couplings

    def validate(self) -> None:
        for key in ("n_layers", "hidden", "n_hidden_layers"):
            if getattr(self, key) < 1:
                raise SettingsError(f"model[realnvp].{key} must be >= 1, got {getattr(self, key)}")
        if not self.prior_scale > 0:
            raise SettingsError("model[realnvp].prior_scale must be positive")


def build_realnvp(system: Any, s: RealNVPSettings, ode: ODESettings) -> Flow:
    if system.com_free:
        raise SettingsError(
            f"model 'realnvp' is for targets without translation symmetry; {system.name} is "
            "CoM-free (use an equivariant model)"
        )
    return RealNVPFlow(
        int(system.n_particles), int(system.spatial_dim), n_layers=s.n_layers, hidden=s.hidden,
        n_hidden_layers=s.n_hidden_layers, prior_scale=s.prior_scale,
        trainable_base=s.trainable_base, lu_linear=s.lu_linear,
    )
