"""A non-equivariant affine coupling flow (RealNVP-style), the FAB paper's flow for GMM-40 and
Many-Well-32, built from normflows.

normflows (``AffineCouplingBlock`` + ``InvertibleAffine``) is the maintained implementation of
exactly the family the FAB authors use (their fab-torch wraps it): per layer an affine coupling
whose conditioner is an MLP (last layer zero-initialised, so the flow starts as the identity),
then a learned invertible linear map in LU parameterisation, and a trainable diagonal Gaussian
base. Configurations ``(n, d)`` are flattened to ``D = n d`` dimensions; nothing is equivariant.

normflows draws base samples from the global RNG; to keep sampling reproducible from the run's
generator the base is sampled here (``loc + exp(log_scale) * eps``) and pushed through the layers.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from eqbg.flows.base import Flow, FlowSample, one_pass_sample

__all__ = ["RealNVPFlow"]


class RealNVPFlow(Flow):
    """Affine couplings with LU-parameterised linear maps between them.

    Args:
        n_particles, spatial_dim: the event shape ``(n, d)``.
        n_layers: coupling layers (each followed by an invertible linear map).
        hidden: width of the conditioner MLPs.
        n_hidden_layers: hidden layers of each conditioner MLP.
        prior_scale: initial standard deviation of the (trainable) diagonal Gaussian base.
        trainable_base: learn the base's mean and scales.
        lu_linear: learned invertible linear maps (else fixed swaps of the halves).
    """

    density = "exact"

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        *,
        n_layers: int = 15,
        hidden: int = 80,
        n_hidden_layers: int = 2,
        prior_scale: float = 1.0,
        trainable_base: bool = True,
        lu_linear: bool = True,
    ) -> None:
        import normflows as nf  # a heavy import, only when a RealNVP flow is built

        super().__init__()
        self.n, self.d = int(n_particles), int(spatial_dim)
        dim = self.n * self.d
        if dim < 2:
            raise ValueError("a coupling flow needs at least 2 dimensions")
        half = dim // 2
        layers = []
        with warnings.catch_warnings():
            # normflows' LU initialisation calls torch.lu, deprecated in favour of linalg.lu_factor
            warnings.filterwarnings("ignore", message="torch.lu is deprecated")
            for _ in range(n_layers):
                net = nf.nets.MLP([half] + [hidden] * n_hidden_layers + [2 * (dim - half)], init_zeros=True)
                layers.append(nf.flows.AffineCouplingBlock(net, scale_map="exp", split_mode="channel"))
                layers.append(nf.flows.InvertibleAffine(dim, use_lu=True) if lu_linear else nf.flows.Permute(dim, mode="swap"))
        base = nf.distributions.DiagGaussian(dim, trainable=trainable_base)
        with torch.no_grad():
            base.log_scale.fill_(math.log(prior_scale))
        self.flow = nf.NormalizingFlow(base, layers)

    @property
    def event_shape(self) -> tuple[int, int]:
        return (self.n, self.d)

    @property
    def com_free(self) -> bool:
        return False

    def _draw(self, num: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        base = self.flow.q0
        eps = torch.randn((num, self.n * self.d), generator=generator, dtype=base.loc.dtype, device=base.loc.device)
        z = base.loc + torch.exp(base.log_scale) * eps
        x, log_det = self.flow.forward_and_log_det(z)
        return x.view(num, self.n, self.d), base.log_prob(z) - log_det

    def _log_prob(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(self.check_x(x).flatten(1))

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None,
               batch_size: int | None = None, with_log_q: bool = True, **_solver) -> FlowSample:
        return one_pass_sample(lambda m: self._draw(m, generator), num, batch_size, with_log_q, "exact")

    @torch.no_grad()
    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None,
                 batch_size: int | None = None, **_solver) -> Tensor:
        bs = max(int(batch_size or x.shape[0]), 1)
        return torch.cat([self._log_prob(x[s:s + bs]) for s in range(0, x.shape[0], bs)])

    def rsample(self, num: int, *, generator: torch.Generator | None = None, **_solver) -> tuple[Tensor, Tensor]:
        return self._draw(num, generator)

    def nll(self, x: Tensor, *, generator: torch.Generator | None = None, **_solver) -> Tensor:
        return -self._log_prob(x).mean()

    def state_log_prob(self, z: Tensor) -> Tensor:
        return self._log_prob(z)
