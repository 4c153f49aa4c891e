"""E(n)-equivariant graph neural network (Satorras et al. 2021) as a time-conditioned vector field.

Dense implementation on the fully connected graph: all pair quantities are ``(B, n, n, .)``
tensors, no Python loops over particles or edges. Per layer ``l``::

    m_ij  = phi_e(h_i, h_j, |x_i - x_j|^2, |x_i^0 - x_j^0|^2)          (SiLU MLP)
    m_ij *= sigmoid(w . m_ij)                                           (optional attention)
    x_i  += sum_{j != i} (x_i - x_j) / (|x_i - x_j| + 1) * phi_x(m_ij)  (phi_x: last layer xavier
                                                                         gain 1e-3, optional
                                                                         tanh * coords_range / L)
    h_i  += phi_h(h_i, sum_{j != i} m_ij)                               (residual node update)

Output ``v = x_L - x_0``, with the mean over particles removed when ``com_free``. Only pairwise
differences and distances enter, so ``v`` is translation invariant and rotation / reflection /
permutation (within atom types) equivariant in any spatial dimension ``d``.

The first edge layer acts on a concatenation, ``W [h_i, h_j, r] = W_a h_i + W_b h_j + w_r r``; we
apply ``W_a, W_b`` per node and broadcast, so it costs ``O(n H^2 + n^2 H)`` instead of
``O(n^2 H^2)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eqbg.geometry import remove_mean

__all__ = ["EGNNField", "time_features"]


def time_features(t: Tensor, batch: int, n_freq: int, dtype: torch.dtype) -> Tensor:
    """Time features ``(B, 1 + 2 n_freq)``: ``[t, sin(2^k pi t), cos(2^k pi t)]_{k < n_freq}``.

    Args:
        t: scalar ``()``, ``(1,)`` or ``(B,)`` times in [0, 1].
    """
    t = torch.as_tensor(t, dtype=dtype)
    if t.dim() == 0 or t.numel() == 1:
        t = t.reshape(1).expand(batch)
    elif t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    t = t.to(dtype).unsqueeze(-1)
    if n_freq == 0:
        return t
    freqs = math.pi * 2.0 ** torch.arange(n_freq, dtype=dtype, device=t.device)
    ang = t * freqs
    return torch.cat([t, ang.sin(), ang.cos()], dim=-1)


class _EGCL(nn.Module):
    """One E(n)-equivariant layer on dense pair tensors."""

    def __init__(
        self, hidden: int, attention: bool, tanh: bool, coords_range: float, norm: float
    ) -> None:
        super().__init__()
        self.edge_a = nn.Linear(hidden, hidden)
        self.edge_b = nn.Linear(hidden, hidden, bias=False)
        self.edge_r = nn.Linear(2, hidden, bias=False)  # [d2_current, d2_input]
        self.edge_2 = nn.Linear(hidden, hidden)
        self.att = nn.Linear(hidden, 1) if attention else None
        self.coord_1 = nn.Linear(hidden, hidden)
        self.coord_2 = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.coord_2.weight, gain=0.001)
        self.node_1 = nn.Linear(2 * hidden, hidden)
        self.node_2 = nn.Linear(hidden, hidden)
        self.tanh = tanh
        self.coords_range = coords_range
        self.norm = norm  # aggregation normaliser: 1 (sum) or n-1 (mean)

    def forward(self, h: Tensor, x: Tensor, d2_0: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """h: (B, n, H), x: (B, n, d), d2_0: (B, n, n, 1), mask: (n, n, 1) -> (h, x)."""
        diff = x.unsqueeze(2) - x.unsqueeze(1)  # (B, n, n, d): x_i - x_j
        d2 = diff.pow(2).sum(-1, keepdim=True)  # (B, n, n, 1)
        pre = (
            self.edge_a(h).unsqueeze(2)
            + self.edge_b(h).unsqueeze(1)
            + self.edge_r(torch.cat([d2, d2_0], dim=-1))
        )
        m = F.silu(self.edge_2(F.silu(pre)))  # (B, n, n, H)
        if self.att is not None:
            m = m * torch.sigmoid(self.att(m))
        m = m * mask
        phi = self.coord_2(F.silu(self.coord_1(m)))  # (B, n, n, 1)
        if self.tanh:
            phi = torch.tanh(phi) * self.coords_range
        # sqrt(d2 + eps): finite gradient on the (masked) diagonal where d2 = 0.
        dist = torch.sqrt(d2 + 1e-8)
        x = x + (diff / (dist + 1.0) * phi * mask).sum(2) / self.norm
        agg = m.sum(2) / self.norm  # (B, n, H)
        h = h + self.node_2(F.silu(self.node_1(torch.cat([h, agg], dim=-1))))
        return h, x


class EGNNField(nn.Module):
    """EGNN vector field ``v(t, x)`` for a CNF.

    Args:
        n_particles: ``n``.
        spatial_dim: ``d`` (any, e.g. 2 for DW4, 3 for LJ/aldp).
        hidden: width ``H`` of all MLPs.
        n_layers: number of E(n) layers.
        n_atom_types: number of atom types; node features embed the one-hot type.
        atom_types: ``(n,)`` long tensor of types in ``[0, n_atom_types)``; ``None`` = all type 0.
        attention: sigmoid edge gate.
        tanh: bound the coordinate MLP by ``tanh * coords_range / n_layers``.
        coords_range: see ``tanh``.
        com_free: remove the mean of the output (required for CoM-free flows).
        time_freqs: number of sinusoidal time frequencies added to the scalar ``t`` feature.
        normalize_aggregation: divide the neighbour sums by ``n - 1`` (default: plain sum,
            as in the paper).

    ``forward(t, x)``: ``t`` scalar ``()`` or ``(B,)``, ``x`` ``(B, n, d)`` -> ``(B, n, d)``.
    """

    #: E(n)-equivariant and permutation-equivariant: the CNF density is invariant under these
    invariances = frozenset({"rotation", "reflection", "permutation"})

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        hidden: int = 64,
        n_layers: int = 4,
        n_atom_types: int = 1,
        atom_types: Tensor | None = None,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        com_free: bool = True,
        time_freqs: int = 0,
        normalize_aggregation: bool = False,
    ) -> None:
        super().__init__()
        if n_particles < 2:
            raise ValueError(f"EGNNField needs n_particles >= 2, got {n_particles}")
        if spatial_dim < 1 or hidden < 1 or n_layers < 1 or n_atom_types < 1:
            raise ValueError("spatial_dim, hidden, n_layers and n_atom_types must be >= 1")
        if atom_types is None:
            if n_atom_types != 1:
                raise ValueError(f"n_atom_types={n_atom_types} but no atom_types given")
            atom_types = torch.zeros(n_particles, dtype=torch.long)
        atom_types = torch.as_tensor(atom_types, dtype=torch.long).reshape(-1)
        if atom_types.shape != (n_particles,):
            raise ValueError(
                f"atom_types must have shape ({n_particles},), got {tuple(atom_types.shape)}"
            )
        if atom_types.min() < 0 or atom_types.max() >= n_atom_types:
            raise ValueError(f"atom_types must lie in [0, {n_atom_types}), got {atom_types.tolist()}")
        self.n_particles = int(n_particles)
        self.spatial_dim = int(spatial_dim)
        self.n_atom_types = int(n_atom_types)
        self.com_free = bool(com_free)
        self.time_freqs = int(time_freqs)
        self.register_buffer("atom_types", atom_types)
        self.register_buffer("mask", (1.0 - torch.eye(n_particles)).unsqueeze(-1))
        self.embed = nn.Linear(n_atom_types + 1 + 2 * self.time_freqs, hidden)
        norm = float(n_particles - 1) if normalize_aggregation else 1.0
        self.layers = nn.ModuleList(
            _EGCL(hidden, attention, tanh, coords_range / n_layers, norm) for _ in range(n_layers)
        )

    def forward(self, t: Tensor | float, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.n_particles, self.spatial_dim):
            raise ValueError(
                f"expected x of shape (B, {self.n_particles}, {self.spatial_dim}), got {tuple(x.shape)}"
            )
        B, n, _ = x.shape
        tf = time_features(torch.as_tensor(t, device=x.device), B, self.time_freqs, x.dtype)
        onehot = F.one_hot(self.atom_types, self.n_atom_types).to(x.dtype)  # (n, T)
        feats = torch.cat(
            [onehot.unsqueeze(0).expand(B, n, -1), tf.unsqueeze(1).expand(B, n, -1)], dim=-1
        )
        h = self.embed(feats)
        diff0 = x.unsqueeze(2) - x.unsqueeze(1)
        d2_0 = diff0.pow(2).sum(-1, keepdim=True)
        mask = self.mask.to(x.dtype)
        y = x
        for layer in self.layers:
            h, y = layer(h, y, d2_0, mask)
        v = y - x
        if self.com_free:
            v = remove_mean(v)
        return v
