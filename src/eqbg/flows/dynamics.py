"""The right-hand side a CNF integrates: the field's velocity with, as the call asks, the
negative divergence (exact or Hutchinson) and the speed (path length), and the helpers of its
solves (an error norm over the controlled states, a compiled field's wrapper)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .divergence import value_and_exact_divergence, value_and_hutchinson_divergence

__all__ = ["OdeDynamics", "NoDonatedBuffers", "first_norm"]


class OdeDynamics(nn.Module):
    """Augmented dynamics ``(x, l[, path]) -> (v, -div v[, |v|])`` for torchdiffeq.

    Registered as a module so ``odeint_adjoint`` finds the field's parameters. One instance per
    call: it carries that call's divergence choice, probe and evaluation counter.
    """

    def __init__(
        self,
        field: nn.Module,
        com_free: bool,
        *,
        exact: bool,
        with_logp: bool,
        with_path: bool,
        trace_method: str,
        chunk_size: int | None,
        eps: Tensor | None = None,
    ) -> None:
        super().__init__()
        if with_logp and not exact and eps is None:
            raise ValueError("Hutchinson's estimator needs a probe")
        self.field = field
        self.com_free = com_free
        self.exact = exact
        self.with_logp = with_logp
        self.with_path = with_path
        self.trace_method = trace_method
        self.chunk_size = chunk_size
        self.eps = eps
        self.nfe = 0

    def _v_div(self, t: Tensor, x: Tensor, create_graph: bool) -> tuple[Tensor, Tensor | None]:
        field = self.field
        if not self.with_logp:
            return field(t, x), None
        if self.exact:
            if hasattr(field, "forward_and_divergence"):
                return field.forward_and_divergence(t, x)
            if hasattr(field, "divergence"):
                return field(t, x), field.divergence(t, x)
            return value_and_exact_divergence(
                lambda y: field(t, y), x, com_free=self.com_free, method=self.trace_method,
                create_graph=create_graph, chunk_size=self.chunk_size,
            )
        return value_and_hutchinson_divergence(
            lambda y: field(t, y), x, self.eps, create_graph=create_graph
        )

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.nfe += 1
        x = state[0]
        # Grad mode is on only when gradients are wanted: training or the adjoint backward pass.
        create_graph = torch.is_grad_enabled()
        v, div = self._v_div(t, x, create_graph)
        if not create_graph:
            v = v.detach()
            div = None if div is None else div.detach()
        out: list[Tensor] = [v]
        if self.with_logp:
            out.append(-div)
        if self.with_path:
            out.append(v.flatten(1).norm(dim=1))
        return tuple(out)


class NoDonatedBuffers(nn.Module):
    """Runs a compiled field with buffer donation off: the exact trace calls the backward of one
    graph several times (``retain_graph=True``), which a graph compiled with donated buffers
    refuses (torch's own advice: ``torch._functorch.config.donated_buffer = False``)."""

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        with torch._functorch.config.patch(donated_buffer=False):
            return self.compiled(t, x)


def first_norm(n_control: int):
    """Error norm over the first ``n_control`` states (max of RMS norms): the path-length
    accumulator must not change the solver's step sequence."""

    def norm(states: tuple[Tensor, ...]) -> Tensor:
        return torch.stack([s.pow(2).mean().sqrt() for s in states[:n_control]]).max()

    return norm
