"""A plain, non-equivariant vector field: an MLP on the flattened coordinates.

The baseline of Köhler et al. 2020 and Satorras et al. 2021 ("what equivariance buys"): the
same CNF, prior and losses as the equivariant fields, but a field that sees particle positions
in a fixed order and frame. Its only built-in symmetry is translation: it reads the CoM-free
coordinates and its output is projected onto the CoM-free subspace, so the flow stays on the
subspace the data and prior live on. Rotations, reflections and permutations change its output
in ways no symmetry relates (trained with randomly rotated and permuted data it can at best
learn an approximately invariant density, never an exactly equivariant field).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from eqbg.geometry import remove_mean

from .egnn import time_features

__all__ = ["MLPField"]


class MLPField(nn.Module):
    """``v(t, x) = P MLP([x_flat, time features])`` with ``P`` the CoM-free projection.

    Args:
        n_particles, spatial_dim: system shape.
        hidden: width of each hidden layer.
        n_layers: hidden layers (SiLU).
        time_freqs: sinusoidal time frequencies on top of the scalar ``t`` feature.
        com_free: project the output onto the CoM-free subspace (and centre the input).

    Shapes: ``t`` scalar or ``(B,)``, ``x`` ``(B, n, d)`` -> ``(B, n, d)``.
    The last layer starts at zero, so the untrained flow is the identity.
    """

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        *,
        hidden: int = 128,
        n_layers: int = 3,
        time_freqs: int = 0,
        com_free: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1 or hidden < 1:
            raise ValueError(f"hidden and n_layers must be >= 1, got {hidden}, {n_layers}")
        self.n_particles, self.spatial_dim = int(n_particles), int(spatial_dim)
        self.time_freqs, self.com_free = int(time_freqs), bool(com_free)
        width_in = self.n_particles * self.spatial_dim + 1 + 2 * self.time_freqs
        layers: list[nn.Module] = []
        for k in range(n_layers):
            layers += [nn.Linear(width_in if k == 0 else hidden, hidden), nn.SiLU()]
        out = nn.Linear(hidden, self.n_particles * self.spatial_dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.n_particles, self.spatial_dim):
            raise ValueError(
                f"expected x of shape (B, {self.n_particles}, {self.spatial_dim}), got {tuple(x.shape)}"
            )
        if self.com_free:
            x = remove_mean(x)
        b = x.shape[0]
        feats = torch.cat([x.reshape(b, -1), time_features(t, b, self.time_freqs, x.dtype).to(x.device)], -1)
        v = self.net(feats).reshape(b, self.n_particles, self.spatial_dim)
        return remove_mean(v) if self.com_free else v
