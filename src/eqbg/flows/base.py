"""The Flow protocol every model implements, and what sampling returns.

A flow is a normalised density ``q(x)`` over configurations ``x: (batch, n, d)`` (CoM-free for
CoM-free systems, log densities in nats with the CoM-free Gaussian normaliser over ``(n-1)d``
dimensions) that can be sampled:

* :meth:`Flow.sample` — samples with ``log q`` and cost fields, no gradients (sampling runs);
* :meth:`Flow.log_prob` — ``log q(x)`` of given configurations, no gradients (NLL, forward ESS);
* :meth:`Flow.rsample` — differentiable samples with their ``log q`` (reverse KL, FAB);
* :meth:`Flow.nll` — the differentiable maximum-likelihood objective on a data batch.

What kind of density a call returns is part of its result, because evaluation must treat them
differently (:data:`DensityKind`): ``exact`` (usable in importance weights), ``estimate`` (an
importance-sampled marginal with ``K`` samples, e.g. an augmented flow: consistent, biased for
finite ``K``; labelled in metrics and tables), ``stochastic`` (an unbiased but noisy estimate such
as a Hutchinson trace: never usable in importance weights).

Solver settings (ODE tolerances, divergence estimator) are keyword arguments of the calls of the
flows that have them and are ignored by flows that have none; they are never attributes mutated
and restored.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "DensityKind", "DENSITY_KINDS", "FlowSample", "Flow", "INVARIANCES", "one_pass_sample", "MIN_VALID_LOG_Q",
    "valid_log_q",
]

DensityKind = Literal["exact", "estimate", "stochastic"]
DENSITY_KINDS: tuple[str, ...] = ("exact", "estimate", "stochastic")

#: Transformations of a configuration a flow may declare its density invariant under
#: (:attr:`Flow.invariances`): proper rotations, reflections, and permutations of particles of
#: equal atom type. Translations are implied by :attr:`Flow.com_free`.
INVARIANCES: tuple[str, ...] = ("rotation", "reflection", "permutation")


@dataclass
class FlowSample:
    """Output of :meth:`Flow.sample`.

    Attributes:
        x: ``(N, n, d)`` samples.
        log_q: ``(N,)`` model log density of ``x`` (nats), ``None`` when not asked for.
        density: the kind of ``log_q`` (:data:`DensityKind`).
        density_k: samples in the importance-sampled marginal when ``density == "estimate"``.
        wall_time_s: wall-clock seconds of the whole call.
        nfe: vector-field evaluations summed over batches (ODE flows; 0 for one-pass flows).
        path_length: mean over samples of ``int_0^1 |v(x_t, t)| dt`` (ODE flows; NaN otherwise).
        n_batches: number of batches the call was split into.
    """

    x: Tensor
    log_q: Tensor | None
    density: DensityKind
    density_k: int | None = None
    wall_time_s: float = 0.0
    nfe: int = 0
    path_length: float = math.nan
    n_batches: int = 1

    def __post_init__(self) -> None:
        if self.density not in DENSITY_KINDS:
            raise ValueError(f"density must be one of {DENSITY_KINDS}, got {self.density!r}")
        if self.density == "estimate" and not self.density_k:
            raise ValueError("an estimated density must say how many samples it used (density_k)")

    def cost(self) -> dict[str, Any]:
        """The scalar cost fields (for ``samples.npz`` and metrics)."""
        return {
            "wall_time_s": float(self.wall_time_s),
            "nfe": int(self.nfe),
            "path_length": float(self.path_length),
            "n_batches": int(self.n_batches),
        }


#: a log density below this (nats) marks a failed point, not training signal: far out, an
#: affine flow's exponential scales give log q ~ -1e200 (the EACF authors drop such samples in
#: maximum likelihood; FAB drops such AIS points and buffer entries)
MIN_VALID_LOG_Q = -1e4


def valid_log_q(log_q: Tensor) -> Tensor:
    """``(B,)`` bool: finite and above :data:`MIN_VALID_LOG_Q`."""
    return torch.isfinite(log_q) & (log_q > MIN_VALID_LOG_Q)


def one_pass_sample(
    draw: Callable[[int], tuple[Tensor, Tensor]],
    num: int,
    batch_size: int | None,
    with_log_q: bool,
    density: DensityKind,
    density_k: int | None = None,
) -> FlowSample:
    """:class:`FlowSample` of a flow that samples in one pass (no ODE): ``draw(m) -> (x, log_q)``
    called on batches of at most ``batch_size``, timed."""
    start = time.perf_counter()
    bs = max(int(batch_size or num), 1)
    parts = [draw(min(bs, num - s)) for s in range(0, num, bs)]
    x = torch.cat([p[0] for p in parts])
    log_q = torch.cat([p[1] for p in parts]) if with_log_q else None
    return FlowSample(x=x, log_q=log_q, density=density, density_k=density_k,
                      wall_time_s=time.perf_counter() - start, n_batches=len(parts))


class Flow(nn.Module, ABC):
    """A normalised, sampleable density over ``(n_particles, spatial_dim)`` configurations.

    Subclasses set :attr:`event_shape`, :attr:`com_free` and :attr:`density` (the kind of
    density that :meth:`sample` and :meth:`log_prob` return with default arguments).
    """

    #: kind of density of default ``sample``/``log_prob`` calls
    density: DensityKind = "exact"

    @property
    @abstractmethod
    def event_shape(self) -> tuple[int, int]:
        """``(n_particles, spatial_dim)``."""

    @property
    @abstractmethod
    def com_free(self) -> bool:
        """Whether the density lives on the centre-of-mass-free subspace."""

    @property
    def invariances(self) -> frozenset[str]:
        """Which of :data:`INVARIANCES` leave ``log q`` unchanged (none unless a model says so;
        ``tests/test_model_contract.py`` checks every declared one, and that the others break)."""
        return frozenset()

    @abstractmethod
    def sample(
        self,
        num: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        with_log_q: bool = True,
        **solver: Any,
    ) -> FlowSample:
        """``num`` samples with their log density, without gradients.

        Args:
            num: number of samples.
            generator: RNG on the model's device (reproducible sampling).
            batch_size: at most this many samples at once (memory bound).
            with_log_q: compute ``log q`` (else ``FlowSample.log_q`` is None).
            **solver: solver settings of flows that have them (e.g. a CNF's ``solver``,
                ``exact``).
        """

    @abstractmethod
    def log_prob(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        **solver: Any,
    ) -> Tensor:
        """``(B,)`` log density of ``x: (B, n, d)``, without gradients (kind :attr:`density`)."""

    @abstractmethod
    def rsample(
        self, num: int, *, generator: torch.Generator | None = None, **solver: Any
    ) -> tuple[Tensor, Tensor]:
        """``(x, log_q)`` of ``num`` samples, differentiable in the flow's parameters."""

    @abstractmethod
    def nll(self, x: Tensor, *, generator: torch.Generator | None = None, **solver: Any) -> Tensor:
        """Differentiable mean negative log-likelihood of a data batch ``x: (B, n, d)`` (the
        maximum-likelihood objective; may be a stochastic but unbiased estimate)."""

    def auxiliary_loss(self) -> Tensor | None:
        """The flow's own weighted regulariser of its last differentiable call, or ``None``.

        Every training loss adds it to its objective (:meth:`eqbg.losses.base.Loss.__call__`),
        so a flow that has one (the augmented coupling flow's frame collinearity penalty) is
        trained with it by maximum likelihood, FAB and reverse KL alike, as its authors do.
        """
        return None

    # ------------------------------------------------------------------ the sampling state
    # Annealed importance sampling and FAB move points in the space the flow's density is
    # defined on: the configurations themselves, or configurations with augmented variables.
    # A flow that has a cheap differentiable density of that state implements
    # ``state_log_prob``; the defaults serve flows whose state is ``x``.

    def state_sample(self, num: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(z, log q(z))`` of ``num`` states, without gradients (default: ``z = x``)."""
        res = self.sample(num, generator=generator)
        return res.x, res.log_q

    def state_log_prob(self, z: Tensor) -> Tensor:
        """``(B,)`` log density of states, differentiable in ``z`` and the parameters."""
        raise NotImplementedError(
            f"{type(self).__name__} has no cheap differentiable density of its state, which "
            "annealed importance sampling and FAB need (use a coupling flow)"
        )

    def state_target_log_prob(self, z: Tensor, energy: Callable[[Tensor], Tensor]) -> Tensor:
        """``(B,)`` unnormalised target log density of states (default ``-u(x)``)."""
        return -energy(z)

    def state_project(self, v: Tensor) -> Tensor:
        """Project state-space vectors (momenta, proposal noise) onto the density's subspace."""
        return v - v.mean(dim=-2, keepdim=True) if self.com_free else v

    def dtype_device(self) -> tuple[torch.dtype, torch.device]:
        """dtype and device of the flow's parameters (or buffers when it has none)."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.dtype, tensor.device
        return torch.get_default_dtype(), torch.device("cpu")

    def check_x(self, x: Tensor) -> Tensor:
        """``x`` validated as ``(B, n, d)`` and cast to the flow's dtype and device."""
        if x.dim() != 3 or tuple(x.shape[1:]) != tuple(self.event_shape):
            n, d = self.event_shape
            raise ValueError(f"expected x of shape (B, {n}, {d}), got {tuple(x.shape)}")
        dtype, device = self.dtype_device()
        return x.to(dtype=dtype, device=device)
