"""Data augmentation by the target's symmetries: random rotations and within-type permutations.

For a non-equivariant model (the MLP baseline) the symmetries of the Boltzmann density can only
be taught by showing them: every training configuration is rotated by a fresh uniformly random
proper rotation and its particles relabelled by a fresh random permutation within each atom type
(both leave the energy unchanged). Equivariant models gain nothing from it: their density is
invariant already.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqbg.ot import random_rotation

__all__ = ["augment_batch"]


def augment_batch(x: Tensor, atom_types: Tensor, generator: torch.Generator) -> Tensor:
    """``x: (B, n, d)`` with each configuration rotated and relabelled at random.

    Args:
        x: CoM-free configurations (rotations about the origin keep them CoM-free).
        atom_types: ``(n,)``; only particles of equal type are exchanged.
        generator: RNG on ``x``'s device.
    """
    b, n, d = x.shape
    rot = random_rotation(d, batch=(b,), generator=generator, dtype=x.dtype, device=x.device)
    x = x @ rot.transpose(-1, -2)
    types = atom_types.to(x.device)
    perm = torch.arange(n, device=x.device).repeat(b, 1)
    for t in torch.unique(types):
        idx = torch.nonzero(types == t).squeeze(-1)
        keys = torch.rand(b, idx.numel(), generator=generator, device=x.device)
        perm[:, idx] = idx[keys.argsort(dim=1)]
    return torch.gather(x, 1, perm[..., None].expand(-1, -1, d))
