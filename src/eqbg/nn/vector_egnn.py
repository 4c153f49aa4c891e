"""An E(n)-equivariant graph network with several vector channels and invariant node outputs.

The conditioner of the augmented coupling flow (Midgley et al. 2023, :mod:`eqbg.flows.augmented`):
it reads ``C_in`` channels of positions and returns, per node, ``C_out`` equivariant,
translation-invariant vectors (the displacements ``v = x_L - x_0`` of ``C_out`` coordinate channels,
from which each node's reference points and frame are built) and ``F`` invariant features (for the
spline/affine parameters). Dense on the fully connected graph, like :class:`eqbg.nn.EGNNField`::

    m_ij   = MLP_e(h_i, h_j, |x_ic - x_jc|^2 for every channel c)         (LayerNorm, SiLU)
    x_ic  += sum_{j != i} (x_ic - x_jc) / (|x_ic - x_jc| + 1) * MLP_x(m_ij)_c
    h_i   += MLP_h(h_i, sum_{j != i} m_ij)                                 (residual)

Coordinate channel ``c`` starts as input channel ``c mod C_in``. The last layer of ``MLP_x`` is
initialised with standard deviation ``vector_init_scale`` (the authors' variance-scaling 0.001),
so the vectors start small but non-zero. Output features are ``Linear(softmax(h_L))`` (as the
authors' code: bounded inputs to the conditioner heads).

Only pair differences and distances enter, so for a rotation or reflection ``R``, a translation
``t`` and a permutation ``P`` (within atom types): ``v(P(x R + t)) = P v(x) R`` and
``h(P(x R + t)) = P h(x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["VectorEGNN"]


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, n_out)
    )


class _VectorLayer(nn.Module):
    """One message-passing layer on ``C`` coordinate channels."""

    def __init__(self, hidden: int, channels: int, vector_init_scale: float) -> None:
        super().__init__()
        # first edge layer on the concatenation [h_i, h_j, d2] = W_a h_i + W_b h_j + W_r d2,
        # applied per node and broadcast: O(n H^2 + n^2 H) instead of O(n^2 H^2)
        self.edge_a = nn.Linear(hidden, hidden)
        self.edge_b = nn.Linear(hidden, hidden, bias=False)
        self.edge_r = nn.Linear(channels, hidden, bias=False)
        self.edge = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.coord = _mlp(hidden, hidden, channels)
        nn.init.normal_(self.coord[-1].weight, std=vector_init_scale)
        nn.init.zeros_(self.coord[-1].bias)
        self.node = _mlp(2 * hidden, hidden, hidden)

    def forward(self, h: Tensor, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """h: (B, n, H), x: (B, n, C, d), mask: (n, n, 1) -> (h, x)."""
        diff = x.unsqueeze(2) - x.unsqueeze(1)  # (B, n, n, C, d): x_i - x_j
        d2 = diff.pow(2).sum(-1)  # (B, n, n, C)
        pre = self.edge_a(h).unsqueeze(2) + self.edge_b(h).unsqueeze(1) + self.edge_r(d2)
        m = self.edge(pre) * mask  # (B, n, n, H)
        w = self.coord(m).unsqueeze(-1) * mask.unsqueeze(-1)  # (B, n, n, C, 1)
        # sqrt(d2 + eps): finite gradients on the (masked) diagonal and for coincident nodes
        dist = torch.sqrt(d2 + 1e-12).unsqueeze(-1)
        x = x + (diff / (dist + 1.0) * w).sum(2)
        h = h + self.node(torch.cat([h, m.sum(2)], dim=-1))
        return h, x


class VectorEGNN(nn.Module):
    """Equivariant vectors and invariant features of a point cloud with several channels.

    Args:
        n_particles: ``n``.
        spatial_dim: ``d``.
        in_channels: ``C_in`` position channels read.
        out_channels: ``C_out`` vectors returned per node.
        hidden: width ``H`` of every MLP.
        n_layers: message-passing layers.
        n_features: ``F`` invariant features returned per node.
        atom_types: ``(n,)`` types in ``[0, n_atom_types)`` (one learned embedding each);
            ``None``: all nodes share one embedding.
        vector_init_scale: std of the last coordinate-MLP layer at initialisation.

    ``forward(x)``: ``x (B, n, C_in, d)`` -> ``(v (B, n, C_out, d), h (B, n, F))``.
    """

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        in_channels: int,
        out_channels: int,
        *,
        hidden: int = 64,
        n_layers: int = 3,
        n_features: int = 128,
        atom_types: Tensor | None = None,
        vector_init_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        if min(n_particles - 1, spatial_dim, in_channels, out_channels, hidden, n_layers, n_features) < 1:
            raise ValueError("VectorEGNN needs n_particles >= 2 and positive sizes")
        if atom_types is None:
            atom_types = torch.zeros(n_particles, dtype=torch.long)
        atom_types = torch.as_tensor(atom_types, dtype=torch.long).reshape(-1)
        if atom_types.shape != (n_particles,) or atom_types.min() < 0:
            raise ValueError(f"atom_types must be ({n_particles},) non-negative, got {atom_types.tolist()}")
        self.n_particles, self.spatial_dim = int(n_particles), int(spatial_dim)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.register_buffer("atom_types", atom_types)
        self.register_buffer("mask", (1.0 - torch.eye(n_particles)).unsqueeze(-1))
        self.register_buffer("channel_source", torch.arange(out_channels) % in_channels)
        self.embed = nn.Embedding(int(atom_types.max()) + 1, hidden)
        self.layers = nn.ModuleList(
            _VectorLayer(hidden, out_channels, vector_init_scale) for _ in range(n_layers)
        )
        self.out = nn.Linear(hidden, n_features)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        expected = (self.n_particles, self.in_channels, self.spatial_dim)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected x of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        B = x.shape[0]
        y = x[:, :, self.channel_source]
        y0 = y
        h = self.embed(self.atom_types).to(x.dtype).unsqueeze(0).expand(B, -1, -1)
        mask = self.mask.to(x.dtype)
        for layer in self.layers:
            h, y = layer(h, y, mask)
        return y - y0, self.out(torch.softmax(h, dim=-1))
