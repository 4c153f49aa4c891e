"""Base distributions of the flows (t = 0 end of the CNF).

Two priors, both isotropic Gaussians with standard deviation ``scale`` per coordinate:

* :class:`CoMFreeGaussian` lives on the centre-of-mass-free subspace
  ``{x in R^{n x d}: sum_i x_i = 0}`` of dimension ``(n-1)*d``; its log density carries the
  normaliser of a Gaussian over ``(n-1)*d`` dimensions (the project's convention, DESIGN.md).
* :class:`StandardGaussian` lives on the full ``R^{n x d}`` (gmm40, manywell32).

Both are ``nn.Module`` s holding a dtype/device buffer, so ``prior.to(torch.float64)`` or
``cnf.to("cuda")`` moves sampling with them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from eqbg.geometry import remove_mean

__all__ = ["CoMFreeGaussian", "StandardGaussian", "make_prior", "remove_mean"]




class _Gaussian(nn.Module):
    com_free: bool = False

    def __init__(self, n_particles: int, spatial_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        if n_particles < 1 or spatial_dim < 1:
            raise ValueError(
                f"n_particles and spatial_dim must be >= 1, got {n_particles}, {spatial_dim}"
            )
        if self.com_free and n_particles < 2:
            raise ValueError("a CoM-free Gaussian needs n_particles >= 2 (dimension (n-1)*d)")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        self.n_particles = int(n_particles)
        self.spatial_dim = int(spatial_dim)
        self.scale = float(scale)
        # Carries dtype and device; never trained.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def dim(self) -> int:
        """Degrees of freedom: ``(n-1)*d`` when CoM-free, else ``n*d``."""
        n = self.n_particles - 1 if self.com_free else self.n_particles
        return n * self.spatial_dim

    @property
    def event_shape(self) -> tuple[int, int]:
        return (self.n_particles, self.spatial_dim)

    def _check(self, x: Tensor) -> None:
        if x.dim() < 2 or tuple(x.shape[-2:]) != self.event_shape:
            raise ValueError(
                f"expected positions of shape (..., {self.n_particles}, {self.spatial_dim}), "
                f"got {tuple(x.shape)}"
            )

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised log density.

        Args:
            x: ``(B, n, d)`` positions. For the CoM-free prior the density is that of the
                projection onto the CoM-free subspace (x is centred first; data are CoM-free
                anyway, so this only removes round-off).

        Returns:
            ``(B,)`` log density in nats, ``-|x|^2/(2 s^2) - dim/2 * log(2 pi s^2)``.
        """
        self._check(x)
        if self.com_free:
            x = remove_mean(x)
        sq = x.pow(2).flatten(-2).sum(-1)
        s2 = self.scale**2
        return -0.5 * sq / s2 - 0.5 * self.dim * math.log(2 * math.pi * s2)

    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``num`` samples, shape ``(num, n, d)`` (CoM-free for the CoM-free prior).

        dtype/device default to the module's (``prior.to(...)``); a ``generator`` must live on
        that device.
        """
        if num < 0:
            raise ValueError(f"num must be >= 0, got {num}")
        dtype = dtype or self._anchor.dtype
        device = device or self._anchor.device
        z = torch.randn(
            (int(num), *self.event_shape), generator=generator, dtype=dtype, device=device
        )
        if self.com_free:
            # Projection of an isotropic Gaussian onto the subspace is the isotropic Gaussian
            # on the subspace (P is an orthogonal projector).
            z = remove_mean(z)
        return z * self.scale

    def extra_repr(self) -> str:
        return f"n_particles={self.n_particles}, spatial_dim={self.spatial_dim}, scale={self.scale}"


class CoMFreeGaussian(_Gaussian):
    """Isotropic Gaussian on the CoM-free subspace, dimension ``(n-1)*d``.

    ``log_prob(x) = -|x|^2 / (2 s^2) - (n-1) d / 2 * log(2 pi s^2)`` for CoM-free ``x``.
    """

    com_free = True


class StandardGaussian(_Gaussian):
    """Isotropic Gaussian on ``R^{n x d}`` (systems without translation symmetry)."""

    com_free = False


def make_prior(system: Any, scale: float = 1.0) -> _Gaussian:
    """Prior for an ``eqbg.systems.System`` (uses ``n_particles``, ``spatial_dim``, ``com_free``)."""
    cls = CoMFreeGaussian if bool(system.com_free) else StandardGaussian
    return cls(int(system.n_particles), int(system.spatial_dim), scale=scale)
