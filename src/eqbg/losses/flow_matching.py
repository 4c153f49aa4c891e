"""Conditional flow matching with independent (``fm``), minibatch-OT (``otfm``) and
equivariant-OT (``eqotfm``) couplings (Lipman et al. 2023; Tong et al. 2023; Klein et al. 2023).

With t = 0 the prior and t = 1 the data:

    x_t = (1 - t) x0 + t x1 + sigma * eps,   target u = x1 - x0,
    loss = mean over batch, particles and coordinates of (v(t, x_t) - u)^2

with ``eps`` projected onto the CoM-free subspace for CoM-free systems (so ``x_t`` stays there).
A coupling only re-pairs (and, for equivariant OT, rotates and relabels) the data batch; the
prior batch is unchanged. Couplings run on the batch's device (:mod:`eqbg.ot`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from eqbg.flows.base import Flow
from eqbg.geometry import remove_mean
from eqbg.losses.base import Loss
from eqbg.ot import equivariant_ot, independent_coupling, ot_permutation
from eqbg.settings import SettingsError

__all__ = [
    "Coupling",
    "IndependentCoupling",
    "OTCoupling",
    "EquivariantOTCoupling",
    "FlowMatching",
    "FlowMatchingSettings",
    "EquivariantOTSettings",
    "flow_matching_loss",
]

#: where the equivariant-OT search starts (see :func:`eqbg.ot.equivariant_ot`)
EQOT_INITS = ("pca", "pca-all", "identity")


@dataclass
class FlowMatchingSettings:
    """Flow matching with the independent or minibatch-OT coupling (losses ``fm``, ``otfm``;
    config ``defaults.loss.<name>``)."""

    sigma: float = 0.01  #: noise of the path: x_t = (1-t) x0 + t x1 + sigma * eps (EFM 0.01)

    def validate(self) -> None:
        if self.sigma < 0:
            raise SettingsError(f"sigma must be >= 0, got {self.sigma}")


@dataclass
class EquivariantOTSettings(FlowMatchingSettings):
    """Flow matching with the equivariant-OT coupling (loss ``eqotfm``): the noise, and the
    search over rotations and within-type permutations of :func:`eqbg.ot.equivariant_ot`."""

    init: str = "pca"  #: local-search start: pca, pca-all, identity
    max_iter: int = 20  #: cap on Hungarian/Kabsch alternations per pair
    exhaustive_limit: int = 120  #: enumerate within-type permutations up to this many
    #: further descents of the local search, each from another starting rotation (the other
    #: principal-axes sign choices, then random rotations, seeded); each pair keeps its best.
    #: 3 = all four proper sign choices in 3D; time ~ (1 + restarts) x one descent.
    #: bench/README.md: 3 makes the median excess over the exhaustive optimum 0 on 6-7
    #: particles (57-84 % of pairs exact, vs 32-57 % with 0); >= 90 % exact needs 8 (2D) / 64 (3D)
    restarts: int = 3
    #: align by rotations and reflections (O(d)) instead of rotations only; only for
    #: reflection-invariant targets and reflection-equivariant fields (not alanine dipeptide)
    reflections: bool = False

    def validate(self) -> None:
        super().validate()
        if self.init not in EQOT_INITS:
            raise SettingsError(f"init must be one of {EQOT_INITS}, got {self.init!r}")
        if self.max_iter < 1 or self.exhaustive_limit < 0 or self.restarts < 0:
            raise SettingsError(
                "max_iter must be >= 1, exhaustive_limit and restarts >= 0, got "
                f"{self.max_iter}, {self.exhaustive_limit}, {self.restarts}"
            )


class Coupling(Protocol):
    """Pairs a data batch with a prior batch: returns the data batch ``(B, n, d)`` re-ordered
    (and possibly aligned) so that row ``a`` goes with ``x0[a]``."""

    def __call__(self, x0: Tensor, x1: Tensor) -> Tensor: ...


class IndependentCoupling:
    """Prior and data batches drawn independently: the identity pairing."""

    def __call__(self, x0: Tensor, x1: Tensor) -> Tensor:
        return x1[independent_coupling(x0, x1)]


class OTCoupling:
    """Exact minibatch OT with squared Euclidean cost (a permutation, never resampled)."""

    def __call__(self, x0: Tensor, x1: Tensor) -> Tensor:
        return x1[ot_permutation(x0, x1)]


@dataclass
class EquivariantOTCoupling:
    """Minibatch OT on the cost minimised over proper rotations and within-type permutations;
    the data batch comes back rotated and relabelled onto its prior partner
    (:func:`eqbg.ot.equivariant_ot`)."""

    atom_types: Tensor | None
    init: str = "pca"
    max_iter: int = 20
    exhaustive_limit: int = 120
    #: further search descents from other starting rotations (``restarts``); the random
    #: starts come from the fixed ``seed``, so the same batches give the same pairing
    restarts: int = 3
    seed: int = 0
    #: also align by reflections (O(d)); see :func:`eqbg.ot.equivariant_ot`
    reflections: bool = False

    def __call__(self, x0: Tensor, x1: Tensor) -> Tensor:
        _, aligned, _ = equivariant_ot(
            x0, x1, self.atom_types, init=self.init, max_iter=self.max_iter,
            exhaustive_limit=self.exhaustive_limit, restarts=self.restarts, seed=self.seed,
            reflections=self.reflections,
        )
        return aligned


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


class FlowMatching(Loss):
    """Flow matching of a CNF's vector field with a coupling of prior and data batches.

    Args:
        coupling: how the data batch is paired with the prior batch.
        sigma: noise level of the conditional path (EFM: 0.01).
    """

    needs_data = True
    needs_energy = False

    def __init__(self, coupling: Coupling, sigma: float = 0.01) -> None:
        super().__init__()
        self.coupling = coupling
        self.sigma = float(sigma)

    def objective(self, flow: Flow, batch: Tensor | None, *, generator: torch.Generator) -> Tensor:
        field, prior = getattr(flow, "field", None), getattr(flow, "prior", None)
        if field is None or prior is None:
            raise TypeError(
                f"flow matching trains the vector field of a continuous flow; "
                f"{type(flow).__name__} has none (use a CNF model, or the ml loss)"
            )
        if batch is None:
            raise ValueError("flow matching needs a data batch")
        x0 = prior.sample(batch.shape[0], generator=generator, dtype=batch.dtype, device=batch.device)
        x1 = self.coupling(x0, batch)
        return flow_matching_loss(
            field, x0, x1, sigma=self.sigma, com_free=flow.com_free, generator=generator
        )
