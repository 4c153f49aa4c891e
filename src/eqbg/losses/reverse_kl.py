"""Reverse Kullback-Leibler divergence (``kl``): training from the target energy alone.

    KL(q || p) = E_q[log q(x) + u(x)] + log Z,

minimised through differentiable samples of the flow (the reparameterisation trick; for a CNF
the exact log density is integrated along with the sample, gradients through the adjoint). It
needs no reference data; each step evaluates the energy (and, through autograd, its gradient)
of ``batch_size`` samples. Mode-seeking: a high ESS from a reverse-KL flow can hide missing
modes (the FAB paper's point), which is why tables show coverage beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from eqbg.flows.base import Flow
from eqbg.losses.base import Loss

__all__ = ["ReverseKL", "ReverseKLSettings"]


@dataclass
class ReverseKLSettings:
    """Reverse KL (loss ``kl``) has no settings of its own: its batch is the training batch."""


class ReverseKL(Loss):
    """``mean(log q(x) + u(x))`` over ``batch_size`` samples ``x ~ q`` (KL up to ``log Z``).

    Args:
        energy: the target's reduced energy ``u: (B, n, d) -> (B,)``, differentiable.
        batch_size: samples per step.
    """

    needs_data = False
    needs_energy = True

    def __init__(self, energy: Callable[[Tensor], Tensor], batch_size: int) -> None:
        super().__init__()
        self.energy = energy
        self.batch_size = int(batch_size)

    def objective(self, flow: Flow, batch: Tensor | None, *, generator: torch.Generator) -> Tensor:
        x, log_q = flow.rsample(self.batch_size, generator=generator)
        u = self.energy(x)
        self.n_energy_evals += self.batch_size
        return (log_q + u).mean()
