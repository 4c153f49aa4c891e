"""Maximum likelihood (``ml``): minimise ``-mean log q(x)`` over data batches.

For a CNF the log density comes from integrating the divergence backwards through
``odeint_adjoint``. The divergence is exact where that is cheap — the field has it in closed
form (Köhler's kernel flow), or the system has few degrees of freedom — and Hutchinson's
unbiased one-probe estimate otherwise (FFJORD; E-NF's protocol), see :func:`use_exact_divergence`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from eqbg.flows.base import Flow
from eqbg.flows.solver import ODESolver, SolverSettings
from eqbg.losses.base import Loss
from eqbg.settings import SettingsError

__all__ = ["MaximumLikelihood", "MaximumLikelihoodSettings", "use_exact_divergence"]

DivergenceChoice = Literal["auto", "exact", "hutchinson"]
DIVERGENCE_CHOICES = ("auto", "exact", "hutchinson")


@dataclass
class MaximumLikelihoodSettings(SolverSettings):
    """Maximum likelihood (loss ``ml``; config ``defaults.loss.ml``): the solver of the training
    integration (:class:`~eqbg.flows.solver.SolverSettings`, adjoint) and the divergence."""

    atol: float = 1e-4  #: training tolerance (E-NF used 1e-4)
    rtol: float = 1e-4  #: see atol
    #: exact, hutchinson, or auto (exact for closed-form fields and for systems with at most
    #: exact_max_dim degrees of freedom, Hutchinson otherwise)
    divergence: str = "auto"
    #: see divergence. The exact trace costs one backward pass per degree of freedom: on DW4
    #: (6) a training step took 3.5x as long as with Hutchinson (EGNN 64x5, batch 64, dopri5
    #: 1e-3), so by default only 1-2 dimensional targets (GMM-40) get it.
    exact_max_dim: int = 2

    def validate(self) -> None:
        super().validate()
        if self.divergence not in DIVERGENCE_CHOICES:
            raise SettingsError(f"divergence must be one of {DIVERGENCE_CHOICES}, got {self.divergence!r}")
        if self.exact_max_dim < 0:
            raise SettingsError(f"exact_max_dim must be >= 0, got {self.exact_max_dim}")


def use_exact_divergence(flow: Flow, choice: DivergenceChoice, exact_max_dim: int) -> bool:
    """Whether maximum-likelihood training uses the exact divergence.

    ``auto``: exact when the flow's field has a closed-form divergence
    (``flow.closed_form_divergence``) or the density has at most ``exact_max_dim`` degrees of
    freedom (the exact trace costs that many backward passes per evaluation).
    """
    if choice == "exact":
        return True
    if choice == "hutchinson":
        return False
    n, d = flow.event_shape
    dim = (n - 1) * d if flow.com_free else n * d
    return bool(getattr(flow, "closed_form_divergence", False)) or dim <= exact_max_dim


class MaximumLikelihood(Loss):
    """``-mean log q(x)`` of a data batch.

    Args:
        solver: ODE solver of the training integration (ODE flows; ignored by others).
        divergence: ``auto``, ``exact`` or ``hutchinson`` (ODE flows), see
            :func:`use_exact_divergence`.
        exact_max_dim: the ``auto`` threshold on the degrees of freedom.
    """

    needs_data = True
    needs_energy = False

    def __init__(
        self, solver: ODESolver, divergence: DivergenceChoice = "auto", exact_max_dim: int = 0
    ) -> None:
        super().__init__()
        self.solver = solver
        self.divergence = divergence
        self.exact_max_dim = exact_max_dim

    def flow_options(self, flow: Flow) -> dict[str, Any]:
        """Keyword arguments of ``flow.nll`` for this loss."""
        return {
            "solver": self.solver,
            "exact": use_exact_divergence(flow, self.divergence, self.exact_max_dim),
        }

    def objective(self, flow: Flow, batch: Tensor | None, *, generator: torch.Generator) -> Tensor:
        if batch is None:
            raise ValueError("maximum likelihood needs a data batch")
        return flow.nll(batch, generator=generator, **self.flow_options(flow))
