"""Köhler, Klein & Noé (2020) kernel gradient-field vector field with closed-form divergence.

    v_i(x, t) = sum_{j != i} (x_i - x_j) f(d_ij, t),     d_ij = |x_i - x_j|,
    f(d, t)   = sum_{k,l} W_kl kappa_k(d) tau_l(t) + sum_l b_l tau_l(t),

with normalised RBF expansions ``kappa = softmax_k(-(d - mu_k)^2 / gamma_k^2)`` (distance,
trainable widths) and ``tau = softmax_l(-(t - nu_l)^2 / 0.3^2)`` (time). ``v`` is the gradient of
the invariant potential ``sum_{i<j} F(d_ij, t)`` with ``F' = d f``, translation invariant,
E(n)-equivariant and exactly CoM-free (``sum_i v_i = 0`` since pair terms are antisymmetric).

Divergence. The diagonal Jacobian block is
``dv_i/dx_i = sum_{j != i} [f(d_ij) I_d + f'(d_ij) (x_i - x_j)(x_i - x_j)^T / d_ij]``, so
``tr J = sum_{i != j} [d f(d_ij, t) + d_ij f'(d_ij, t)]`` (``d`` = spatial dimension). The flow
lives on the CoM-free subspace, whose divergence is ``tr(P J P) = tr(J) - (1/n) sum_a
(1 (x) e_a)^T J (1 (x) e_a)``; translation invariance gives ``J (1 (x) e_a) = 0``, so the CoM
correction vanishes and the subspace divergence equals the full trace (tested against the
brute-force Jacobian on a Helmert basis).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .egnn import time_features

__all__ = ["KernelField"]


class KernelField(nn.Module):
    """Kernel gradient-field dynamics (Köhler et al. 2020), O(n^2) value and divergence.

    Args:
        n_particles, spatial_dim: system shape.
        n_rbf: distance RBF centres, uniform on ``[0, r_max]`` (DW4: 50 on [0, 8]).
        r_max: largest distance centre (LJ13 in the E-NF code: 16).
        gamma: initial distance RBF width (trainable, log-parametrised).
        n_time_rbf: time RBF centres on [0, 1].
        time_gamma: time RBF width (fixed).
        init_scale: std of the initial weights (0 = identity flow).

    Methods:
        ``forward(t, x) -> (B, n, d)``, ``divergence(t, x) -> (B,)``,
        ``forward_and_divergence(t, x) -> ((B, n, d), (B,))``.
    """

    #: E(n)-equivariant and permutation-equivariant: the CNF density is invariant under these
    invariances = frozenset({"rotation", "reflection", "permutation"})

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        n_rbf: int = 50,
        r_max: float = 8.0,
        gamma: float = 0.5,
        n_time_rbf: int = 10,
        time_gamma: float = 0.3,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        if n_particles < 2 or spatial_dim < 1 or n_rbf < 1 or n_time_rbf < 1:
            raise ValueError("need n_particles >= 2, spatial_dim, n_rbf, n_time_rbf >= 1")
        if gamma <= 0 or time_gamma <= 0 or r_max <= 0:
            raise ValueError("gamma, time_gamma and r_max must be positive")
        self.n_particles = int(n_particles)
        self.spatial_dim = int(spatial_dim)
        self.com_free = True
        self.time_gamma = float(time_gamma)
        self.register_buffer("mu", torch.linspace(0.0, float(r_max), n_rbf))
        self.register_buffer("nu", torch.linspace(0.0, 1.0, n_time_rbf))
        self.register_buffer("mask", 1.0 - torch.eye(n_particles))
        self.log_gamma = nn.Parameter(torch.full((n_rbf,), float(gamma)).log())
        self.weight = nn.Parameter(torch.randn(n_rbf, n_time_rbf) * init_scale)
        self.bias = nn.Parameter(torch.randn(n_time_rbf) * init_scale)

    def _time_rbf(self, t: Tensor | float, batch: int, x: Tensor) -> Tensor:
        tt = time_features(torch.as_tensor(t, device=x.device), batch, 0, x.dtype)  # (B, 1)
        return torch.softmax(-((tt - self.nu) ** 2) / self.time_gamma**2, dim=-1)  # (B, L)

    def _f_and_df(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns diff (B,n,n,d), d_ij (B,n,n), f (B,n,n), f' = df/dd (B,n,n)."""
        if x.dim() != 3 or x.shape[1:] != (self.n_particles, self.spatial_dim):
            raise ValueError(
                f"expected x of shape (B, {self.n_particles}, {self.spatial_dim}), got {tuple(x.shape)}"
            )
        B = x.shape[0]
        diff = x.unsqueeze(2) - x.unsqueeze(1)
        dist = torch.sqrt(diff.pow(2).sum(-1) + 1e-12)  # (B, n, n); diagonal masked below
        tau = self._time_rbf(t, B, x)  # (B, L)
        coef = tau @ self.weight.T  # (B, K): c_k(t)
        bias = tau @ self.bias  # (B,)
        inv_g2 = torch.exp(-2 * self.log_gamma)
        r = dist.unsqueeze(-1) - self.mu  # (B, n, n, K)
        a = -(r**2) * inv_g2
        da = -2 * r * inv_g2
        kappa = torch.softmax(a, dim=-1)
        # d kappa_k / dd = kappa_k (a_k' - sum_m kappa_m a_m')
        dkappa = kappa * (da - (kappa * da).sum(-1, keepdim=True))
        c = coef[:, None, None, :]
        f = (kappa * c).sum(-1) + bias[:, None, None]
        df = (dkappa * c).sum(-1)
        return diff, dist, f, df

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        diff, _, f, _ = self._f_and_df(t, x)
        return (diff * (f * self.mask.to(x.dtype)).unsqueeze(-1)).sum(2)

    def forward_and_divergence(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
        diff, dist, f, df = self._f_and_df(t, x)
        mask = self.mask.to(x.dtype)
        v = (diff * (f * mask).unsqueeze(-1)).sum(2)
        div = ((self.spatial_dim * f + dist * df) * mask).sum((1, 2))
        return v, div

    def divergence(self, t: Tensor | float, x: Tensor) -> Tensor:
        """Closed-form divergence ``(B,)`` (equal on the CoM-free subspace, see module doc)."""
        return self.forward_and_divergence(t, x)[1]
