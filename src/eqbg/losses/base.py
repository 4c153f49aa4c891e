"""The Loss protocol: one object per training objective.

A loss says what it needs (:attr:`Loss.needs_data`: a batch of reference configurations;
:attr:`Loss.needs_energy`: the target energy), computes a differentiable scalar for one step
(:meth:`Loss.objective`, to which calling the loss adds the flow's own regulariser,
:meth:`eqbg.flows.base.Flow.auxiliary_loss`, in one place for every loss),
counts the target-energy evaluations it made, and has a state that is checkpointed with the
model (a replay buffer, adapted step sizes, the energy counter), so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from eqbg.flows.base import Flow

__all__ = ["Loss"]


class Loss(ABC):
    """One training objective.

    Subclasses set :attr:`needs_data` and :attr:`needs_energy` and implement :meth:`objective`;
    those with more state than the energy counter extend :meth:`state_dict` and
    :meth:`load_state_dict`.
    """

    #: whether each step needs a batch of reference configurations
    needs_data: ClassVar[bool] = True
    #: whether the loss evaluates the target energy
    needs_energy: ClassVar[bool] = False

    def __init__(self) -> None:
        self.n_energy_evals = 0  #: target-energy evaluations made so far (all steps)

    def __call__(self, flow: Flow, batch: Tensor | None, *, generator: torch.Generator) -> Tensor:
        """The loss of one step: :meth:`objective` plus the flow's auxiliary loss of the
        objective's last differentiable call (:meth:`eqbg.flows.base.Flow.auxiliary_loss`)."""
        value = self.objective(flow, batch, generator=generator)
        aux = flow.auxiliary_loss()
        return value if aux is None else value + aux

    @abstractmethod
    def objective(
        self, flow: Flow, batch: Tensor | None, *, generator: torch.Generator
    ) -> Tensor:
        """The objective of one step, a differentiable scalar.

        Args:
            flow: the model being trained.
            batch: ``(B, n, d)`` reference configurations on the flow's device and dtype when
                :attr:`needs_data`, else ``None``.
            generator: the run's RNG on the flow's device (prior draws, times, noise, probes).
        """

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue this loss exactly."""
        return {"n_energy_evals": int(self.n_energy_evals)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n_energy_evals = int(state["n_energy_evals"])
