"""Maximum likelihood (``ml``): minimise ``-mean log q(x)`` over data batches.

For a CNF the log density comes from integrating the divergence backwards through
``odeint_adjoint``. The divergence is exact where that is cheap — the field has it in closed
form (Köhler's kernel flow), or the system has few degrees of freedom — and Hutchinson's
unbiased one-probe estimate otherwise (FFJORD; E-NF's protocol), see :func:`use_exact_divergence`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from eqbg.flows.base import Flow
from eqbg.flows.solver import ODESolver
from eqbg.losses.base import Loss

__all__ = ["MaximumLikelihood", "use_exact_divergence"]

DivergenceChoice = Literal["auto", "exact", "hutchinson"]


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
