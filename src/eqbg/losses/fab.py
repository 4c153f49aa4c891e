"""Flow Annealed Importance Sampling Bootstrap (``fab``, Midgley et al. 2023, ICLR).

Training from the target energy alone by the alpha = 2 divergence ``D_2(p || q)``, estimated with
annealed importance sampling (:mod:`eqbg.sampling.ais`) from the flow towards ``p^2 / q``, the
distribution that minimises the variance of the importance weights. The AIS points and weights
are constants of the loss (no gradient flows into them).

**Without buffer**: each step draws ``B`` flow samples, runs AIS and minimises
``-(1/B) sum_i w_bar_i log q(z_i)`` with ``w_bar = softmax(log w)``: the batch mean, as fab-torch
(``fab/core.py``) and EACF (``fab_train_no_buffer.py``), so the gradient scale does not grow with
``B`` and matches the buffer's loss (a mean over its batch).

**With the prioritised replay buffer** (:mod:`eqbg.losses.replay_buffer`), per iteration of
``n_updates`` steps: draw ``n_updates x B`` distinct entries by weight; for each step minimise
``-(1/B) sum_i min(c, q_old(z_i) / q(z_i)) log q(z_i)`` (the ratio without gradient; ``c`` the
weight clip) and re-weight the drawn entries to the flow before the step; after the last step add
the ``B`` AIS samples that were drawn with the parameters from before the iteration's updates.
At the start the buffer is filled by AIS to its minimum length. This is fab-jax's and EACF's
order (sample from buffer, updates, adjust, AIS with the pre-update parameters, add).

The flow moves in its sampling state (``Flow.state_*``: the configurations, or configurations
with augmented variables, whose target is ``p(x) pi(a|x)``); it must have a cheap differentiable
density of that state (coupling flows). Target evaluations: ``(1 + L M) B`` per AIS batch with
HMC (``L`` leapfrog steps, ``M`` intermediate distributions), the buffer's initial fill included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from eqbg.flows.base import Flow, valid_log_q
from eqbg.losses.base import Loss
from eqbg.losses.replay_buffer import PrioritisedReplayBuffer
from eqbg.sampling.ais import AISResult, AISSettings, AnnealedImportanceSampler
from eqbg.settings import SettingsError

__all__ = ["FlowAnnealedBootstrap", "FABSettings"]


@dataclass
class FABSettings:
    """FAB (loss ``fab``; config ``defaults.loss.fab``). Defaults are the EACF paper's DW4
    settings (EACF_FAB.md part B); sizes are in batches of the training batch."""

    buffer: bool = True  #: prioritised replay buffer (False: FAB without buffer)
    buffer_batches: int = 512  #: buffer capacity
    buffer_min_batches: int = 64  #: initial AIS fill of the buffer
    updates_per_ais: int = 8  #: gradient steps per AIS pass with the buffer
    weight_clip: float = 10.0  #: cap of the buffer's importance ratios q_old/q
    #: the AIS towards p^alpha q^(1-alpha); its alpha (2) is FAB's alpha-divergence
    ais: AISSettings = field(default_factory=AISSettings)

    def validate(self) -> None:
        if min(self.buffer_batches, self.buffer_min_batches, self.updates_per_ais) < 1:
            raise SettingsError("buffer_batches, buffer_min_batches and updates_per_ais must be >= 1")
        if self.buffer_min_batches > self.buffer_batches:
            raise SettingsError("buffer_min_batches must not exceed buffer_batches")
        if self.updates_per_ais > self.buffer_min_batches:
            raise SettingsError(
                "updates_per_ais must not exceed buffer_min_batches (distinct draws per iteration)"
            )
        if not self.weight_clip > 0:
            raise SettingsError(f"weight_clip must be > 0, got {self.weight_clip}")
        try:
            self.ais.validate()
        except SettingsError as err:
            raise SettingsError(f"ais: {err}") from None


class FlowAnnealedBootstrap(Loss):
    """FAB with or without the prioritised replay buffer (see the module docstring).

    Args:
        energy: the target's reduced energy ``u(x)``, ``(B, n, d) -> (B,)``.
        batch_size: ``B``, AIS samples per AIS pass and buffer entries per step.
        ais: settings of the AIS towards ``p^alpha q^(1-alpha)`` (its ``alpha`` is the loss's).
        buffer: use the prioritised replay buffer.
        buffer_capacity, buffer_min_length: buffer size and initial fill (entries).
        n_updates: gradient steps per AIS pass with the buffer.
        weight_clip: ``c``, the cap of the buffer's importance ratios.
    """

    needs_data = False
    needs_energy = True

    def __init__(
        self,
        energy: Callable[[Tensor], Tensor],
        batch_size: int,
        ais: AISSettings,
        *,
        buffer: bool = True,
        buffer_capacity: int = 512 * 128,
        buffer_min_length: int = 64 * 128,
        n_updates: int = 8,
        weight_clip: float = 10.0,
    ) -> None:
        super().__init__()
        self.energy, self.batch_size = energy, int(batch_size)
        self.alpha = float(ais.alpha)
        self.ais = AnnealedImportanceSampler(ais)
        self.buffer = PrioritisedReplayBuffer(buffer_capacity, buffer_min_length, self.alpha) if buffer else None
        if self.buffer is not None and n_updates * self.batch_size > buffer_min_length:
            raise ValueError(
                f"the buffer's minimum length {buffer_min_length} must hold an iteration's "
                f"{n_updates} x {self.batch_size} distinct draws"
            )
        self.n_updates, self.weight_clip = int(n_updates), float(weight_clip)
        self._pending: list[Tensor] = []  # index batches of this iteration still to train on
        self._to_add: AISResult | None = None  # this iteration's AIS samples (pre-update flow)
        self.last_ais: AISResult | None = None  #: the last AIS pass (for logging)

    @classmethod
    def from_settings(cls, s: FABSettings, energy: Callable[[Tensor], Tensor], batch_size: int) -> "FlowAnnealedBootstrap":
        """FAB of settings ``s`` at training batch ``batch_size`` (buffer sizes in batches)."""
        return cls(
            energy, batch_size, s.ais, buffer=s.buffer, buffer_capacity=s.buffer_batches * batch_size,
            buffer_min_length=s.buffer_min_batches * batch_size, n_updates=s.updates_per_ais,
            weight_clip=s.weight_clip,
        )

    def run_ais(self, flow: Flow, generator: torch.Generator, *, adapt: bool = True, num: int | None = None) -> AISResult:
        """AIS from ``num`` (default ``B``) fresh flow samples towards ``p^alpha q^(1-alpha)``."""
        result = self.ais.run_from_flow(flow, self.energy, num or self.batch_size, generator=generator, adapt=adapt)
        self.n_energy_evals += result.n_target_evals
        self.last_ais = result
        return result

    def objective(self, flow: Flow, batch: Tensor | None, *, generator: torch.Generator) -> Tensor:
        if self.buffer is None:
            res = self.run_ais(flow, generator)
            w_bar = torch.softmax(res.log_w, dim=0)
            # only points with weight and a valid density enter (eqbg.flows.base.valid_log_q):
            # evaluating the others would put 0 * inf = NaN into the backward pass (an AIS point
            # where q underflows)
            use = (w_bar > 0) & valid_log_q(res.log_q)
            log_q = flow.state_log_prob(res.z[use])
            ok = valid_log_q(log_q)
            # the authors' batch mean: the AIS batch size B, whatever number of points had weight
            return -(w_bar[use][ok] * log_q[ok]).sum() / res.log_w.shape[0]
        buffer = self.buffer
        while not buffer.ready:  # the initial fill
            res = self.run_ais(flow, generator)
            buffer.add(res.z, res.log_w, res.log_q)
        if not self._pending:
            self._to_add = self.run_ais(flow, generator)
            draws = buffer.sample(self.n_updates * self.batch_size, generator)
            self._pending = list(draws.view(self.n_updates, self.batch_size))
        idx = self._pending.pop(0)
        z, log_w, log_q_old = buffer.get(idx)
        # entries without weight or with a failed density are not evaluated (see above)
        use = torch.isfinite(log_w) & valid_log_q(log_q_old)
        log_q = flow.state_log_prob(z[use])
        ratio = torch.exp((1.0 - self.alpha) * (log_q.detach() - log_q_old[use])).clamp(max=self.weight_clip)
        ok = valid_log_q(log_q) & torch.isfinite(ratio)
        loss = -(ratio[ok] * log_q[ok]).sum() / max(int(ok.sum()), 1)
        log_q_all = torch.full_like(log_q_old, -math.inf)
        log_q_all[use] = log_q.detach()
        buffer.adjust(idx, log_q_all)
        if not self._pending:
            res, self._to_add = self._to_add, None
            buffer.add(res.z, res.log_w, res.log_q)
        return loss

    def state_dict(self) -> dict[str, Any]:
        to_add = self._to_add
        return {
            **super().state_dict(),
            "ais": self.ais.state_dict(),
            "buffer": None if self.buffer is None else self.buffer.state_dict(),
            "pending": [p.cpu() for p in self._pending],
            "to_add": None if to_add is None else {"z": to_add.z, "log_w": to_add.log_w, "log_q": to_add.log_q},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ais.load_state_dict(state["ais"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
        device = None if self.buffer is None or self.buffer.z is None else self.buffer.z.device
        self._pending = [p.to(device) if device is not None else p for p in state["pending"]]
        add = state["to_add"]
        self._to_add = None if add is None else AISResult(add["z"], add["log_w"], add["log_q"],
                                                          add["log_q"], [], 0, 0)
