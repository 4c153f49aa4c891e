"""Principal-axes frames of CoM-free configurations, the starts of the equivariant-OT search
(:mod:`eqbg.ot.search`)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["canonical_frames", "pca_frames", "proper_frames", "sign_matrices"]


def pca_frames(x: Tensor) -> Tensor:
    """Principal axes ``(B, d, d)`` (columns, ascending eigenvalues) of CoM-free configurations."""
    cov = x.transpose(-1, -2) @ x
    return torch.linalg.eigh(cov)[1]


def sign_matrices(d: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """All ``2^d`` diagonal sign matrices, as ``(2^d, d)`` diagonals."""
    signs = torch.tensor(
        [[1.0 - 2.0 * ((k >> i) & 1) for i in range(d)] for k in range(2**d)],
        dtype=dtype,
        device=device,
    )
    return signs


def proper_frames(x: Tensor) -> Tensor:
    """Principal axes (as in :func:`pca_frames`) with the last axis flipped where needed so that
    every frame is a proper rotation (det +1)."""
    e = pca_frames(x)
    det = torch.sign(torch.linalg.det(e))
    det = torch.where(det == 0, torch.ones_like(det), det)
    e = e.clone()
    e[..., :, -1] = e[..., :, -1] * det[..., None]
    return e


def canonical_frames(x: Tensor) -> Tensor:
    """Proper principal-axes frames ``(B, d, d)`` with each axis's sign fixed by the sample
    itself (third moment of the coordinates along the axis made positive; the last axis then
    fixed by ``det = +1``). Unlike the raw eigenvectors, whose signs are arbitrary, these turn
    with the sample: ``x -> x Q^T`` gives ``e -> Q e``, so a start ``e0 Q e1^T`` is the same
    start relative to the samples however either is oriented."""
    e = pca_frames(x)
    m3 = ((x @ e) ** 3).sum(-2)  # (B, d)
    sign = torch.where(m3 < 0, -torch.ones_like(m3), torch.ones_like(m3))
    e = e * sign[..., None, :]
    det = torch.sign(torch.linalg.det(e))
    det = torch.where(det == 0, torch.ones_like(det), det)
    e[..., :, -1] = e[..., :, -1] * det[..., None]
    return e
