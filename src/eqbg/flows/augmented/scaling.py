"""The scaling block of the augmented coupling flow (EACF's ``scaling_layer``, Midgley et al. 2023).

The authors' alanine dipeptide flow (``examples/config/aldp.yaml``: ``scaling_layer: true``,
``scaling_layer_conditioned: true``) adds one such block to every layer
(``eacf/flow/bijectors/scaling_block.py``). It acts on a state ``z (B, n, 1 + A, d)`` whose
positions ``x`` are CoM-free, split as ``x``, the centred augmented channels ``a_c - mean(a_c)``
and their centres ``m_c = mean(a_c)`` (relative to the CoM of ``x``). In the sampling direction:

1. *shrink*: every zero-mean cloud (``x`` and each centred ``a_c``) is scaled isotropically by
   ``s_k = softplus(l_k + softplus^-1(1))``, ``k = 0..A``; the logits ``l`` come from a small
   MLP (widths 16, 16: a linear layer and SiLU, then a residual layer-normalised one; last layer
   zero, so the block starts as the identity) of the rotation-invariant norms ``|m_c|``
   (``conditioned``), or are free parameters (not conditioned);
2. *centre of mass*: each centre ``m_c`` is scaled by its own ``softplus(p_c + softplus^-1(1))``
   (free parameters, zero at the start).

The shrink reads ``m`` before step 2 changes it, so the inverse undoes step 2 first.
log-determinant (forward): ``(n - 1) d sum_k log s_k + d sum_c log t_c`` (each zero-mean cloud
has ``(n - 1) d`` degrees of freedom, each centre ``d``). Scalings about the origin and norms
keep the block equivariant under rotations, reflections and permutations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ScalingBlock"]

_SOFTPLUS_INV_1 = math.log(math.e - 1.0)


class _ResidualLayer(nn.Module):
    """``h + SiLU(Linear(LayerNorm(h)))`` (the authors' stable MLP layer)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.linear = nn.LayerNorm(width), nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + F.silu(self.linear(self.norm(h)))


class ScalingBlock(nn.Module):
    """Isotropic scaling of the zero-mean clouds and of the augmented centres (see the module
    docstring).

    Args:
        n_aug: augmented channels ``A``.
        conditioned: shrink logits from an MLP of ``|m_c|`` (else free parameters).
        hidden: width of the conditioning MLP (the authors' 16).
    """

    def __init__(self, n_aug: int, conditioned: bool = True, hidden: int = 16) -> None:
        super().__init__()
        self.n_aug, self.conditioned = int(n_aug), bool(conditioned)
        if self.conditioned:
            self.mlp = nn.Sequential(nn.Linear(n_aug, hidden), nn.SiLU(), _ResidualLayer(hidden),
                                     nn.Linear(hidden, n_aug + 1))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        else:
            self.shrink_logits = nn.Parameter(torch.zeros(n_aug + 1))
        self.centre_logits = nn.Parameter(torch.zeros(n_aug))

    def _shrink_scales(self, centres: Tensor) -> Tensor:
        """``(B, 1 + A)`` shrink factors from the centres ``(B, A, d)``."""
        if self.conditioned:
            sq = centres.pow(2).sum(-1)
            # a norm with a finite gradient at 0 (measure zero, but AIS may start anywhere)
            norms = torch.where(sq > 0, torch.where(sq > 0, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))
            logits = self.mlp(norms)
        else:
            logits = self.shrink_logits.expand(centres.shape[0], -1)
        return F.softplus(logits + _SOFTPLUS_INV_1)

    def _scale(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        n, d = z.shape[1], z.shape[-1]
        x, a = z[:, :, :1], z[:, :, 1:]
        centres = a.mean(dim=1)  # (B, A, d)
        t = F.softplus(self.centre_logits + _SOFTPLUS_INV_1)  # (A,)
        if inverse:
            centres = centres / t[:, None]
        s = self._shrink_scales(centres)  # (B, 1 + A)
        clouds = torch.cat([x, a - a.mean(dim=1, keepdim=True)], dim=2)
        factor = (1.0 / s if inverse else s)[:, None, :, None]
        clouds = clouds * factor
        if not inverse:
            centres = centres * t[:, None]
        out = torch.cat([clouds[:, :, :1], clouds[:, :, 1:] + centres.unsqueeze(1)], dim=2)
        log_det = (n - 1) * d * s.log().sum(-1) + d * t.log().sum()
        return out, -log_det if inverse else log_det

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling direction: ``z (B, n, 1+A, d)`` -> ``(z', log|det dz'/dz| (B,))``."""
        return self._scale(z, inverse=False)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Density direction: ``z' -> (z, log|det dz/dz'| (B,))``."""
        return self._scale(z, inverse=True)
