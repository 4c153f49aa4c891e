"""Training objectives for CNFs: maximum likelihood (``ml``) and conditional flow matching with
independent (``fm``), minibatch-OT (``otfm``) and equivariant-OT (``eqotfm``) couplings.

Flow matching (Lipman et al. 2023; Tong et al. 2023; Klein et al. 2023) with t = 0 the prior and
t = 1 the data:

    x_t = (1 - t) x0 + t x1 + sigma * eps,   target u = x1 - x0,
    loss = mean over batch, particles and coordinates of (v(t, x_t) - u)^2

with ``eps`` projected onto the CoM-free subspace for CoM-free systems (so ``x_t`` stays there).
The couplings only re-pair (and, for eqotfm, rotate/relabel) the data batch; the prior batch is
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eqbg.flows import CNF, remove_mean
from eqbg.ot import equivariant_ot, independent_coupling, ot_permutation
from eqbg.training.settings import LOSSES

__all__ = ["CouplingOptions", "couple", "flow_matching_loss", "loss_step"]


@dataclass
class CouplingOptions:
    """Options of the equivariant-OT coupling (see :func:`equivariant_ot`)."""

    init: str = "pca"
    max_iter: int = 20
    exhaustive_limit: int = 120


def couple(
    loss: str,
    x0: Tensor,
    x1: Tensor,
    atom_types: Tensor | None,
    options: CouplingOptions | None = None,
) -> Tensor:
    """Pair the data batch ``x1`` with the prior batch ``x0`` ``(B, n, d)``; returns the data
    batch re-ordered (and for ``eqotfm`` rotated/relabelled) so that row ``a`` goes with ``x0[a]``.
    """
    if loss == "fm":
        return x1[independent_coupling(x0, x1)]
    if loss == "otfm":
        return x1[ot_permutation(x0, x1)]
    if loss == "eqotfm":
        o = options or CouplingOptions()
        _, aligned, _ = equivariant_ot(
            x0,
            x1,
            atom_types,
            init=o.init,
            max_iter=o.max_iter,
            exhaustive_limit=o.exhaustive_limit,
        )
        return aligned
    raise ValueError(f"loss {loss!r} has no coupling; flow-matching losses: fm, otfm, eqotfm")


def flow_matching_loss(
    field: torch.nn.Module,
    x0: Tensor,
    x1: Tensor,
    *,
    sigma: float,
    com_free: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Conditional flow-matching loss for already-paired batches ``x0``, ``x1`` ``(B, n, d)``.

    ``t ~ U(0, 1)`` per sample and ``eps ~ N(0, I)`` (CoM-free if ``com_free``) are drawn from
    ``generator`` on ``x0``'s device.
    """
    b = x0.shape[0]
    t = torch.rand(b, generator=generator, dtype=x0.dtype, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    if com_free:
        eps = remove_mean(eps)
    tt = t[:, None, None]
    xt = (1.0 - tt) * x0 + tt * x1 + sigma * eps
    v = field(t, xt)
    return (v - (x1 - x0)).pow(2).mean()


def loss_step(
    loss: str,
    flow: CNF,
    x1: Tensor,
    *,
    generator: torch.Generator,
    sigma: float = 0.01,
    atom_types: Tensor | None = None,
    coupling: CouplingOptions | None = None,
    ml_ode: dict[str, Any] | None = None,
) -> Tensor:
    """One minibatch loss for ``loss`` in :data:`LOSSES` (scalar, differentiable).

    Args:
        loss: ``ml``, ``fm``, ``otfm`` or ``eqotfm``.
        flow: the CNF being trained (its prior draws ``x0``; its field is trained).
        x1: ``(B, n, d)`` data batch on the flow's device/dtype.
        generator: RNG on the flow's device for prior draws, times, noise and probes.
        sigma: flow-matching noise level.
        atom_types: ``(n,)`` for the equivariant coupling.
        coupling: equivariant-OT options.
        ml_ode: ``{"method", "atol", "rtol"}`` used for the ML integration.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {LOSSES}")
    if loss == "ml":
        saved = (flow.method, flow.atol, flow.rtol, flow.n_steps)
        if ml_ode:
            flow.method = ml_ode.get("method", flow.method)
            flow.atol = float(ml_ode.get("atol", flow.atol))
            flow.rtol = float(ml_ode.get("rtol", flow.rtol))
            flow.n_steps = ml_ode.get("n_steps", None)
        try:
            return flow.nll_hutchinson(x1, generator=generator)
        finally:
            flow.method, flow.atol, flow.rtol, flow.n_steps = saved
    x0 = flow.prior.sample(x1.shape[0], generator=generator, dtype=x1.dtype, device=x1.device)
    if loss != "fm":
        # The couplings are computed on the CPU (scipy/POT); only their result moves back.
        x1 = couple(loss, x0.cpu(), x1.cpu(), atom_types, coupling).to(x1.device)
    return flow_matching_loss(
        flow.field, x0, x1, sigma=sigma, com_free=flow.com_free, generator=generator
    )
