"""One equivariant coupling of the augmented coupling flow (Midgley et al. 2023).

A state is ``z (B, n, 1 + A, d)``: channel 0 the positions ``x`` (CoM-free), channels ``1..A``
the augmented variables ``a``. A coupling transforms one half given the other:

* ``swap=False`` updates ``a`` given ``x``;
* ``swap=True`` updates ``x`` given ``a``, with the centre-of-mass bookkeeping of the reference:
  first every channel is shifted by ``-mean(a)`` (the conditioning half becomes centred), after
  the transform every channel is shifted by ``-mean(x')`` (``x`` is CoM-free again).

Forward (sampling direction), for the conditioning half ``c`` (centred) and the transformed
half ``t``:

1. ``v, h = EGNN(c)``: ``d`` equivariant vectors and invariant features per node;
2. reference points ``r_k,i = c_i + v_k,i`` give every node ``i`` of ``t`` its own frame;
3. ``t_i`` is transformed in that frame (:mod:`eqbg.flows.augmented.frames`) with parameters
   ``head(h_i)``; the head's last layer is zero, so an untrained coupling is the identity.

**Log-determinant.** The re-centrings are shears with unit Jacobian on the joint space (the CoM
of ``x`` traded against that of ``a``: ``sqrt(n)^d`` in, ``sqrt(n)^-d`` out), so the
log-determinant of a coupling is exactly the sum of the per-node log-determinants, each in full
``R^d`` (tested against autograd Jacobians on the free coordinates).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from eqbg.flows.augmented.frames import Frame, collinearity_loss
from eqbg.nn.vector_egnn import VectorEGNN

__all__ = ["AugmentedCoupling"]


class AugmentedCoupling(nn.Module):
    """Transform ``a`` given ``x`` (``swap=False``) or ``x`` given ``a`` (``swap=True``).

    Args:
        n_particles, spatial_dim: ``n``, ``d``.
        n_aug: augmented channels ``A``.
        swap: which half is transformed (see the module docstring).
        frame: the per-node frame and transform.
        egnn_hidden, egnn_layers, egnn_features: the conditioner EGNN.
        head_hidden: width of the two hidden layers of the parameter head.
        atom_types: ``(n,)`` atom types (node embeddings), ``None``: all alike.
    """

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        n_aug: int,
        swap: bool,
        frame: Frame,
        *,
        egnn_hidden: int = 64,
        egnn_layers: int = 3,
        egnn_features: int = 128,
        head_hidden: int = 64,
        atom_types: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.swap, self.frame, self.n_aug = bool(swap), frame, int(n_aug)
        n_cond, self.n_trans = (n_aug, 1) if swap else (1, n_aug)
        self.egnn = VectorEGNN(
            n_particles, spatial_dim, n_cond, frame.n_refs, hidden=egnn_hidden,
            n_layers=egnn_layers, n_features=egnn_features, atom_types=atom_types,
        )
        self.head = nn.Sequential(
            nn.Linear(egnn_features, head_hidden), nn.SiLU(),
            nn.Linear(head_hidden, head_hidden), nn.SiLU(),
            nn.Linear(head_hidden, self.n_trans * frame.n_params),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("ref_source", torch.arange(frame.n_refs) % n_cond)
        #: ``(B,)`` mean collinearity loss over the nodes of the last differentiable call (3D
        #: frames; see ``collinearity_loss``), None after a call without gradients
        self.last_aux: Tensor | None = None

    def _conditioner(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``cond (B, n, C, d)`` centred -> ``(refs (B, n, 1, R, d), params (B, n, T, P))``."""
        v, h = self.egnn(cond)
        refs = cond[:, :, self.ref_source] + v  # (B, n, R, d)
        # the penalty of differentiable calls only (training); on the raw vectors, as EACF
        self.last_aux = collinearity_loss(v).mean(-1) if torch.is_grad_enabled() else None
        B, n = cond.shape[:2]
        params = self.head(h).view(B, n, self.n_trans, self.frame.n_params)
        return refs.unsqueeze(2), params

    def _transform(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        x, a = z[:, :, :1], z[:, :, 1:]
        step = self.frame.inverse if inverse else self.frame.forward
        if self.swap:
            shift = a.mean(dim=(1, 2), keepdim=True)
            x, a = x - shift, a - shift
            refs, params = self._conditioner(a)
            x, ladj = step(x, refs, params)
            shift = x.mean(dim=(1, 2), keepdim=True)
            x, a = x - shift, a - shift
        else:
            refs, params = self._conditioner(x)
            a, ladj = step(a, refs, params)
        return torch.cat([x, a], dim=2), ladj.flatten(1).sum(-1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling direction: ``z (B, n, 1+A, d)`` -> ``(z', log|det dz'/dz| (B,))``."""
        return self._transform(z, inverse=False)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Density direction: ``z' -> (z, log|det dz/dz'| (B,))``."""
        return self._transform(z, inverse=True)
