"""The prioritised replay buffer of FAB (Midgley et al. 2023, EACF_FAB.md part B).

A FIFO ring of fixed capacity holding AIS states ``z``, their log importance weights ``log_w``
and the flow's log density ``log_q`` when they were added (or last adjusted). Sampling draws
without replacement with probability proportional to ``w`` (Gumbel top-k over ``log_w``), all
mini-batches of an iteration at once (disjoint). After a gradient step the drawn entries are
re-weighted to the new flow: ``log_w += (1 - alpha)(log q_new - log q_old)``, ``log_q <- log q_new``
(``alpha = 2``: ``w <- w q_old / q_new``); an entry whose new ``log q`` is not a valid density
(non-finite, or below the failed-point floor of :func:`eqbg.flows.base.valid_log_q`, which the
loss does not train on) or whose adjustment is non-finite gets ``log_w = -inf``, so it is never
drawn again. Empty slots are never drawn. As fab-jax's ``add``, an invalid new entry (non-finite
``z``, ``log_w`` or ``log_q``) leaves the slot it would overwrite as it was, and the write position
moves on by the whole batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from eqbg.flows.base import valid_log_q

__all__ = ["PrioritisedReplayBuffer"]


class PrioritisedReplayBuffer:
    """Ring buffer of ``(z, log_w, log_q)``.

    Args:
        capacity: maximum entries (oldest overwritten first).
        min_length: entries needed before sampling (FAB fills the buffer to this at the start).
        alpha: the divergence's alpha (the re-weighting exponent is ``1 - alpha``).
    """

    def __init__(self, capacity: int, min_length: int, alpha: float = 2.0) -> None:
        if not 1 <= min_length <= capacity:
            raise ValueError(f"need 1 <= min_length <= capacity, got {min_length}, {capacity}")
        self.capacity, self.min_length, self.alpha = int(capacity), int(min_length), float(alpha)
        self.z: Tensor | None = None
        self.log_w: Tensor | None = None
        self.log_q: Tensor | None = None
        self.n = 0  #: filled entries
        self.pos = 0  #: next slot to write

    @property
    def ready(self) -> bool:
        """Whether the buffer holds at least ``min_length`` entries."""
        return self.n >= self.min_length

    def add(self, z: Tensor, log_w: Tensor, log_q: Tensor) -> None:
        """Append entries (detached), overwriting the oldest when full."""
        z, log_w, log_q = z.detach(), log_w.detach(), log_q.detach()
        if self.z is None:
            self.z = z.new_zeros((self.capacity, *z.shape[1:]))
            self.log_w = log_w.new_full((self.capacity,), -math.inf)
            self.log_q = log_q.new_zeros((self.capacity,))
        k = int(z.shape[0])
        if k > self.capacity:  # only the newest fit
            z, log_w, log_q, k = z[-self.capacity:], log_w[-self.capacity:], log_q[-self.capacity:], self.capacity
        idx = (self.pos + torch.arange(k, device=self.z.device)) % self.capacity
        valid = torch.isfinite(log_w) & torch.isfinite(log_q) & torch.isfinite(z.flatten(1)).all(-1)
        keep = ~valid  # fab-jax: an invalid point keeps the slot's old entry
        self.z[idx] = torch.where(keep.view(-1, *[1] * (z.dim() - 1)), self.z[idx], z)
        self.log_w[idx] = torch.where(keep, self.log_w[idx], log_w)
        self.log_q[idx] = torch.where(keep, self.log_q[idx], log_q)
        self.pos = int((self.pos + k) % self.capacity)
        self.n = min(self.n + k, self.capacity)

    def sample(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``k`` distinct indices of filled entries, drawn with probability proportional to ``w``
        without replacement (Gumbel top-k)."""
        if not self.ready:
            raise RuntimeError(f"buffer holds {self.n} entries, needs {self.min_length} before sampling")
        if k > self.n:
            raise ValueError(f"cannot draw {k} distinct entries from {self.n}")
        log_w = self.log_w[: self.n] if self.n < self.capacity else self.log_w
        u = torch.rand(log_w.shape, generator=generator, dtype=log_w.dtype, device=log_w.device)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        return torch.topk(log_w + gumbel, k).indices

    def get(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, log_w, log_q)`` of the entries ``idx``."""
        return self.z[idx], self.log_w[idx], self.log_q[idx]

    def adjust(self, idx: Tensor, log_q_new: Tensor) -> None:
        """Re-weight entries ``idx`` to the flow's new log density ``log_q_new``."""
        log_q_new = log_q_new.detach()
        log_w = self.log_w[idx] + (1.0 - self.alpha) * (log_q_new - self.log_q[idx])
        ok = torch.isfinite(log_w) & valid_log_q(log_q_new)
        self.log_w[idx] = torch.where(ok, log_w, torch.full_like(log_w, -math.inf))
        self.log_q[idx] = log_q_new

    def state_dict(self) -> dict[str, Any]:
        return {"z": self.z, "log_w": self.log_w, "log_q": self.log_q, "n": self.n, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # copies: the buffer is updated in place and must not share storage with the state
        self.z, self.log_w, self.log_q = (None if state[k] is None else state[k].clone()
                                          for k in ("z", "log_w", "log_q"))
        self.n, self.pos = int(state["n"]), int(state["pos"])
