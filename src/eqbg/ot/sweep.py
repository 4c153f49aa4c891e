"""One sweep of the equivariant-OT search for a batch of pairs: the particle cost matrices, an
exact within-type assignment (Hungarian) and the optimal rotation (Kabsch); descents repeat it
while the cost falls."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from eqbg.ot.alignment import batched_assignment, rotation_from_cross_covariance

__all__ = ["assign_and_align", "descend", "particle_cost", "sweep_from", "type_mask"]

#: ``(cost (P,), perm (P, n), rotation (P, d, d))`` of a batch of pairs
PairResult = tuple[Tensor, Tensor, Tensor]


def type_mask(groups: list[np.ndarray], n: int, device: torch.device) -> Tensor | None:
    """``(n, n)`` True where particles i and j have different types (never matched)."""
    if len(groups) <= 1:
        return None
    mask = torch.ones(n, n, dtype=torch.bool, device=device)
    for g in groups:
        gi = torch.as_tensor(g, device=device)
        mask[gi[:, None], gi[None, :]] = False
    return mask


def particle_cost(x0: Tensor, y: Tensor, groups: list[np.ndarray]) -> Tensor:
    """``(P, n, n)`` squared distances ``|x0_i - y_j|^2``; pairs of different type get ``inf``."""
    c = (
        (x0 * x0).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2.0 * x0 @ y.transpose(-1, -2)
    ).clamp_min(0.0)
    mask = type_mask(groups, x0.shape[1], x0.device)
    if mask is not None:
        c = c.masked_fill(mask, math.inf)
    return c


def assign_and_align(
    particle_cost: Tensor, groups: list[np.ndarray], x0: Tensor, x1: Tensor, sq_norms: Tensor
) -> tuple[Tensor, Tensor, Tensor, int]:
    """One Hungarian + Kabsch step for a batch of pairs.

    Args:
        particle_cost: ``(P, n, n)`` cost of matching particle i of ``x0`` with j of ``x1``.
        groups: particle indices of each atom type (assignment stays within a type).
        x0, x1: ``(P, n, d)`` the paired configurations.
        sq_norms: ``(P,)`` ``|x0|^2 + |x1|^2`` of each pair.

    Returns:
        ``(perm (P, n), rotation (P, d, d), squared distance after both (P,), solver calls)``.
    """
    d = x0.shape[-1]
    perm, calls = batched_assignment(particle_cost.detach(), groups, return_calls=True)
    x1_permuted = torch.gather(x1, 1, perm[..., None].expand(-1, -1, d))
    h = x1_permuted.transpose(-1, -2) @ x0
    rotation = rotation_from_cross_covariance(h)
    trace = (rotation * h.transpose(-1, -2)).sum((-1, -2))
    return perm, rotation, (sq_norms - 2.0 * trace).clamp_min(0.0), calls


def sweep_from(
    x0: Tensor, x1: Tensor, groups: list[np.ndarray], pa: Tensor, pb: Tensor,
    start: tuple[Tensor, Tensor, Tensor], max_elements: int,
) -> tuple[PairResult, int]:
    """One assignment + rotation step of the pairs ``(x0[pa], x1[pb])`` from the starting
    rotations ``g0[pa] q g1[pb]^T`` (``start = (g0 (B0, d, d), q (P, d, d), g1 (B1, d, d))``):
    ``(pairs, solver calls)``."""
    g0, q, g1 = start
    n, d = x0.shape[1:]
    n0, n1 = (x0 * x0).sum((-1, -2)), (x1 * x1).sum((-1, -2))
    n_pairs = pa.shape[0]
    cost = torch.empty(n_pairs, dtype=x0.dtype, device=x0.device)
    perm = torch.empty(n_pairs, n, dtype=torch.long, device=x0.device)
    rot = torch.empty(n_pairs, d, d, dtype=x0.dtype, device=x0.device)
    calls = 0
    chunk = max(1, max_elements // (n * n))
    for first in range(0, n_pairs, chunk):
        idx = torch.arange(first, min(n_pairs, first + chunk), device=x0.device)
        a, b = pa[idx], pb[idx]
        r0 = g0[a] @ q[idx] @ g1[b].transpose(-1, -2)
        y = x1[b] @ r0.transpose(-1, -2)
        p, new_rot, new_cost, k = assign_and_align(
            particle_cost(x0[a], y, groups), groups, x0[a], x1[b], n0[a] + n1[b]
        )
        calls += k
        cost[idx], perm[idx], rot[idx] = new_cost, p, new_rot
    return (cost, perm, rot), calls


def descend(
    x0: Tensor,
    x1: Tensor,
    groups: list[np.ndarray],
    pa: Tensor,
    pb: Tensor,
    cost: Tensor,
    perm: Tensor,
    rot: Tensor,
    n_sweeps: int,
    tol: float,
    max_elements: int,
) -> tuple[int, int]:
    """Up to ``n_sweeps`` more Hungarian + Kabsch sweeps of the pairs ``(x0[pa[p]], x1[pb[p]])``
    from their current ``cost``, ``perm``, ``rot`` (all ``(P, ...)``, updated in place).

    A pair leaves the active set as soon as its assignment stops changing or its cost stops
    improving. Returns ``(solver calls, sweeps done)``.
    """
    n, d = x0.shape[1:]
    n0 = (x0 * x0).sum((-1, -2))
    n1 = (x1 * x1).sum((-1, -2))
    active = torch.arange(cost.shape[0], device=x0.device)
    calls = sweeps = 0
    chunk = max(1, max_elements // (n * n))
    for _ in range(n_sweeps):
        if active.numel() == 0:
            break
        sweeps += 1
        still = []
        for start in range(0, active.numel(), chunk):
            idx = active[start : start + chunk]
            a, b = pa[idx], pb[idx]
            y = x1[b] @ rot[idx].transpose(-1, -2)
            new_perm, new_rot, new_cost, k = assign_and_align(
                particle_cost(x0[a], y, groups), groups, x0[a], x1[b], n0[a] + n1[b]
            )
            calls += k
            # Accept only strict improvements: guards the monotone descent against round-off.
            take = new_cost < cost[idx] - tol * (1.0 + cost[idx])
            changed = (new_perm != perm[idx]).any(-1)
            sel = idx[take]
            cost[sel] = new_cost[take]
            perm[sel] = new_perm[take]
            rot[sel] = new_rot[take]
            still.append(idx[take & changed])
        active = torch.cat(still)
    return calls, sweeps
