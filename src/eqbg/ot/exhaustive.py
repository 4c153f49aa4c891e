"""The exact equivariant cost of small systems: every within-type permutation, each with its
optimal rotation (Kabsch), for all pairs of two batches at once."""

from __future__ import annotations

import torch
from torch import Tensor

from eqbg.ot.alignment import max_rotation_trace

__all__ = ["exhaustive_cost"]


def exhaustive_cost(
    x0: Tensor, x1: Tensor, perms: Tensor, max_elements: int
) -> tuple[Tensor, Tensor]:
    """Exact cost by enumerating all within-type permutations (Kabsch is exact for each).

    For every data sample ``b`` and permutation ``k`` the cross-covariance with every prior sample
    ``a`` is ``h[a, b, k] = sum_i x1[b, perm_k(i)] x0[a, i]^T``; all of them come out of a few
    large matrix products (one per (d, e) entry), which is what makes this fast. In 2D only
    ``h00 + h11`` and ``h01 - h10`` are needed: two products with ``x0`` and ``x0`` turned by 90°.
    """
    b0, n, d = x0.shape
    b1 = x1.shape[0]
    k = perms.shape[0]
    x1p = x1[:, perms]  # (B1, K, n, d)
    n0 = (x0 * x0).sum((-1, -2))
    n1 = (x1 * x1).sum((-1, -2))
    tr_best = torch.empty(b1, b0, dtype=x0.dtype, device=x0.device)
    best = torch.empty(b1, b0, dtype=torch.long, device=x0.device)
    rows = max(1, max_elements // max(1, b0 * k * d * d))
    x0_flat = x0.reshape(b0, n * d)
    if d == 2:
        x0_turned = torch.stack([x0[..., 1], -x0[..., 0]], -1).reshape(b0, n * d)
    for start in range(0, b1, rows):
        chunk = x1p[start : start + rows]  # (b, K, n, d)
        m = chunk.shape[0] * k
        if d == 2:
            flat = chunk.reshape(m, n * d)
            a = flat @ x0_flat.T  # (M, B0): h00 + h11
            c = flat @ x0_turned.T  # (M, B0): h01 - h10
            tr = torch.sqrt(a * a + c * c)
        else:
            # h[d, e] = X[:, :, d] @ x0[:, :, e]^T for all (d, e) in one broadcast matmul
            xd = chunk.reshape(m, n, d).permute(2, 0, 1)[:, None]  # (d, 1, M, n)
            xe = x0.permute(2, 1, 0)[None]  # (1, e, n, B0)
            h = (xd @ xe).permute(2, 3, 0, 1)  # (M, B0, d, e)
            tr = max_rotation_trace(h)
        val, idx = tr.reshape(-1, k, b0).max(1)  # (b, B0)
        tr_best[start : start + rows] = val
        best[start : start + rows] = idx
    cost = (n0[:, None] + n1[None, :] - 2.0 * tr_best.T).clamp_min(0.0)
    perm = perms[best.T]  # (B0, B1, n)
    return cost, perm
