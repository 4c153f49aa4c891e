"""What the model builders share: a CNF of a vector field with the system's prior."""

from __future__ import annotations

from typing import Any

import torch

from eqbg.flows.cnf import CNF
from eqbg.flows.priors import make_prior
from eqbg.flows.solver import ODESettings

__all__ = ["cnf_of"]


def cnf_of(system: Any, field: torch.nn.Module, prior_scale: float, ode: ODESettings) -> CNF:
    """A CNF of ``field`` with the system's Gaussian prior of std ``prior_scale`` and the
    solver and divergence settings ``ode``."""
    return CNF(
        field,
        make_prior(system, scale=prior_scale),
        solver=ode.solver,
        trace_method=ode.trace_method,
        trace_chunk_size=ode.trace_chunk_size,
        probe=ode.probe,
        adjoint_seminorm=ode.adjoint_seminorm,
    )
