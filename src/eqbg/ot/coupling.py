"""Couplings between a batch of prior samples ``x0`` and a batch of data samples ``x1`` for flow
matching: independent, minibatch optimal transport, and equivariant optimal transport.

Every coupling returns a *permutation* of the data batch: each prior sample is paired with exactly
one data sample and every data sample is used once. (Drawing pairs from the OT plan with
replacement, as bgflow's branch and torchcfm's default do, duplicates some samples and drops
others; with uniform marginals and equal batch sizes the exact plan is a permutation matrix, so we
read the permutation off it instead.)

Equivariant OT (Klein, Krämer, Noé 2023): the cost of pairing prior sample ``a`` with data sample
``b`` is ``min_{R in SO(d), sigma} sum_i |x0[a, i] - R x1[b, sigma(i)]|^2`` where ``sigma`` only
exchanges particles of equal atom type. The data sample is the one that gets rotated and
relabelled (as in the paper), so the prior batch is untouched and the loss trains on
``(x0, aligned x1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from eqbg.ot.alignment import (
    batched_assignment,
    max_rotation_trace,
    random_rotation,
    rotation_from_cross_covariance,
    type_groups,
    within_type_permutations,
)

__all__ = [
    "independent_coupling",
    "ot_permutation",
    "emd_permutation",
    "EquivariantCost",
    "equivariant_cost_matrix",
    "equivariant_ot",
    "pairwise_squared_distance",
]


def _check_pair(x0: Tensor, x1: Tensor, *, equal_batch: bool = True) -> None:
    if x0.ndim != 3 or x1.ndim != 3:
        raise ValueError(
            f"couplings need (batch, n_particles, dim) tensors, got {tuple(x0.shape)} and "
            f"{tuple(x1.shape)}"
        )
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(f"particle shapes differ: {tuple(x0.shape[1:])} vs {tuple(x1.shape[1:])}")
    if equal_batch and x0.shape[0] != x1.shape[0]:
        raise ValueError(
            f"a permutation coupling needs equal batch sizes, got {x0.shape[0]} and {x1.shape[0]}"
        )


def independent_coupling(x0: Tensor, x1: Tensor) -> Tensor:
    """The identity pairing (prior and data batches are drawn independently): ``arange(B)``."""
    _check_pair(x0, x1)
    return torch.arange(x0.shape[0], device=x0.device)


def pairwise_squared_distance(x0: Tensor, x1: Tensor) -> Tensor:
    """``(B0, B1)`` squared Euclidean distances between flattened configurations."""
    a = x0.reshape(x0.shape[0], -1).double()
    b = x1.reshape(x1.shape[0], -1).double()
    # cdist**2 would lose precision for near-identical samples; the expanded form is exact enough
    # in float64 and clamped at zero.
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


def emd_permutation(cost: np.ndarray | Tensor) -> np.ndarray:
    """Exact optimal-transport permutation for a square cost matrix, solved with POT ``ot.emd``.

    Uniform marginals on equal-size batches make the transport polytope the Birkhoff polytope, and
    ``ot.emd`` (network simplex) returns a vertex of it: a permutation matrix scaled by ``1/B``.
    We read ``perm[a] = argmax_b plan[a, b]`` and verify it; should the solver return a
    non-vertex optimum (ties), the assignment is re-solved exactly with the Hungarian method on the
    same cost, which has the same optimal value.

    Returns:
        ``(B,)`` int64 permutation with ``perm[a]`` the data index paired with prior sample ``a``.
    """
    c = np.ascontiguousarray(
        cost.detach().cpu().numpy() if isinstance(cost, Tensor) else cost, dtype=np.float64
    )
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"emd_permutation needs a square cost matrix, got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("OT cost matrix contains NaN or inf")
    b = c.shape[0]
    if b == 1:
        return np.zeros(1, dtype=np.int64)
    marg = np.full(b, 1.0 / b)
    plan = ot.emd(marg, marg, c, numItermax=max(100_000, 50 * b * b))
    perm = plan.argmax(1)
    is_perm = np.unique(perm).size == b and np.all(plan[np.arange(b), perm] > 0.5 / b)
    if not is_perm:
        perm = linear_sum_assignment(c)[1]
    return perm.astype(np.int64)


def ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    """Minibatch OT pairing with squared Euclidean cost, solved exactly (POT ``ot.emd``).

    Args:
        x0: ``(B, n, d)`` prior samples. x1: ``(B, n, d)`` data samples.

    Returns:
        ``(B,)`` LongTensor ``perm``: prior sample ``a`` is paired with ``x1[perm[a]]``.
    """
    _check_pair(x0, x1)
    perm = emd_permutation(pairwise_squared_distance(x0, x1))
    return torch.as_tensor(perm, device=x0.device)


@dataclass
class EquivariantCost:
    """Result of :func:`equivariant_cost_matrix` for batches of sizes B0 and B1.

    Attributes:
        cost: ``(B0, B1)`` float64, the minimal squared distance over proper rotations and
            within-type permutations.
        perm: ``(B0, B1, n)`` int64; ``x1[b][perm[a, b]]`` is matched particle-wise to ``x0[a]``.
        rotation: ``(B0, B1, d, d)`` with ``x1[b][perm[a, b]] @ rotation[a, b].T`` the aligned
            copy, or ``None`` when the permutations were enumerated (then the optimal rotation of
            a pair is ``kabsch(x1[b][perm[a, b]], x0[a])``; only the chosen pairs need it).
        n_assignment_calls: assignment problems given to the exact solver (scipy on the CPU, one
            call each; ``torch-linear-assignment`` on CUDA, batched), the bulk of the work.
        n_iterations: alternation sweeps done, summed over the descents of all starts (0 when
            the permutations were enumerated).
        n_fallback: pairs whose alternating search ended above the plain squared distance
            ``|x0[a] - x1[b]|^2`` (the identity pairing, always feasible). With ``fallback=True``
            (the default) exactly these pairs were replaced by the identity permutation and
            rotation, so their ``cost`` is the plain one; with ``fallback=False`` they keep the
            search's result and are only counted. Always 0 when the permutations were
            enumerated (the identity is among them, so the exact minimum is never above plain).
    """

    cost: Tensor
    perm: Tensor
    rotation: Tensor | None
    n_assignment_calls: int = 0
    n_iterations: int = 0
    n_fallback: int = 0


def _pca_frames(x: Tensor) -> Tensor:
    """Principal axes ``(B, d, d)`` (columns, ascending eigenvalues) of CoM-free configurations."""
    cov = x.transpose(-1, -2) @ x
    return torch.linalg.eigh(cov)[1]


def _sign_matrices(d: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """All ``2^d`` diagonal sign matrices, as ``(2^d, d)`` diagonals."""
    signs = torch.tensor(
        [[1.0 - 2.0 * ((k >> i) & 1) for i in range(d)] for k in range(2**d)],
        dtype=dtype,
        device=device,
    )
    return signs


def _exhaustive_cost(
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


def _proper_frames(x: Tensor) -> Tensor:
    """Principal axes (as in :func:`_pca_frames`) with the last axis flipped where needed so that
    every frame is a proper rotation (det +1)."""
    e = _pca_frames(x)
    det = torch.sign(torch.linalg.det(e))
    det = torch.where(det == 0, torch.ones_like(det), det)
    e = e.clone()
    e[..., :, -1] = e[..., :, -1] * det[..., None]
    return e


def _canonical_frames(x: Tensor) -> Tensor:
    """Proper principal-axes frames ``(B, d, d)`` with each axis's sign fixed by the sample
    itself (third moment of the coordinates along the axis made positive; the last axis then
    fixed by ``det = +1``). Unlike the raw eigenvectors, whose signs are arbitrary, these turn
    with the sample: ``x -> x Q^T`` gives ``e -> Q e``, so a start ``e0 Q e1^T`` is the same
    start relative to the samples however either is oriented."""
    e = _pca_frames(x)
    m3 = ((x @ e) ** 3).sum(-2)  # (B, d)
    sign = torch.where(m3 < 0, -torch.ones_like(m3), torch.ones_like(m3))
    e = e * sign[..., None, :]
    det = torch.sign(torch.linalg.det(e))
    det = torch.where(det == 0, torch.ones_like(det), det)
    e[..., :, -1] = e[..., :, -1] * det[..., None]
    return e


def _assign_and_align(
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


def _alternating_cost(
    x0: Tensor,
    x1: Tensor,
    groups: list[np.ndarray],
    *,
    init: str,
    max_iter: int,
    tol: float,
    max_elements: int,
    fallback: bool = True,
    restarts: int = 0,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, int, int, int]:
    """Alternate Hungarian assignment and Kabsch rotation for all B0×B1 pairs at once.

    Start: ``identity`` compares raw coordinates; ``pca`` expresses both samples in their
    principal-axes frames (rotation-equivariant, so the start — and hence the result — does not
    depend on how either sample is oriented) and, of the 2^(d-1) proper axis-sign choices, keeps
    the one with the smallest lower bound (sum of row minima of the particle cost matrix);
    ``pca-all`` runs the first sweep from every sign choice and keeps the best. The first
    sweep's particle cost matrices for all pairs come out of one broadcast product of frame
    coordinates (no per-pair rotation), which is where most of the time would otherwise go.

    Each sweep: the batched particle cost matrices, one batched exact assignment (the solver
    only where the row minima are not already a permutation), one batched Kabsch. A pair leaves the active set
    as soon as its assignment stops changing (its rotation, and so its cost, is then fixed too);
    the cost never increases from one sweep to the next.

    Last, every pair whose search ended above its plain squared distance is counted and, with
    ``fallback``, replaced by the identity pairing (see :attr:`EquivariantCost.n_fallback`).
    """
    b0, n, d = x0.shape
    b1 = x1.shape[0]
    dev, dt = x0.device, x0.dtype
    n0 = (x0 * x0).sum((-1, -2))
    n1 = (x1 * x1).sum((-1, -2))
    q0 = (x0 * x0).sum(-1)  # (B0, n)
    q1 = (x1 * x1).sum(-1)
    eye = torch.eye(d, dtype=dt, device=dev)
    if init == "identity":
        e0, e1 = eye.expand(b0, d, d), eye.expand(b1, d, d)
        signs = [torch.ones(d, dtype=dt, device=dev)]
    elif init in ("pca", "pca-all"):
        e0, e1 = _proper_frames(x0), _proper_frames(x1)
        signs = [s for s in _sign_matrices(d, dt, dev) if s.prod() > 0]
    else:
        raise ValueError(f"unknown init {init!r}; expected 'pca', 'pca-all' or 'identity'")
    f0, f1 = x0 @ e0, x1 @ e1  # coordinates in the frames
    mask = _type_mask(groups, n, dev)

    n_pairs = b0 * b1
    cost = torch.empty(n_pairs, dtype=dt, device=dev)
    perm = torch.empty(n_pairs, n, dtype=torch.long, device=dev)
    rot = torch.empty(n_pairs, d, d, dtype=dt, device=dev)
    start_sign = torch.zeros(n_pairs, dtype=torch.long, device=dev)
    calls = 0
    rows = max(1, max_elements // max(1, b1 * n * n * d))
    ib_all = torch.arange(b1, device=dev)
    for start in range(0, b0, rows):
        ia = torch.arange(start, min(b0, start + rows), device=dev)
        r = ia.numel()
        # per-axis products of frame coordinates, (r, B1, n, n) each: every sign choice is a
        # signed sum of these (reducing over a trailing axis of length d is slow in torch)
        prods = [f0[ia][:, None, :, None, k] * f1[None, :, None, :, k] for k in range(d)]
        base = q0[ia][:, None, :, None] + q1[None, :, None, :]
        cands: list[Tensor] = []
        cand_sign: list[Tensor] = []  # per candidate, (r, B1) index of its sign choice
        best_lb = None
        for si, s in enumerate(signs):
            dot = prods[0] * s[0]
            for k in range(1, d):
                dot = dot + prods[k] * s[k]
            c = (base - 2.0 * dot).clamp_min(0.0)
            if mask is not None:
                c = c.masked_fill(mask, math.inf)
            if init == "pca-all" or len(signs) == 1:
                cands.append(c)
                cand_sign.append(torch.full((r, b1), si, dtype=torch.long, device=dev))
                continue
            # keep, per pair, the sign choice with the smallest lower bound (sum of row minima);
            # a running torch.where avoids stacking all candidates
            lb = c.min(-1).values.sum(-1)  # (r, B1)
            if best_lb is None:
                best_lb, cands = lb, [c]
                cand_sign = [torch.zeros((r, b1), dtype=torch.long, device=dev)]
            else:
                better = lb < best_lb
                best_lb = torch.where(better, lb, best_lb)
                cands = [torch.where(better[..., None, None], c, cands[0])]
                cand_sign = [torch.where(better, si, cand_sign[0])]
        pa = ia.repeat_interleave(b1)
        pb = ib_all.repeat(r)
        flat = pa * b1 + pb
        best_cost = None
        for c, c_sign in zip(cands, cand_sign):
            p, new_rot, new_cost, k = _assign_and_align(
                c.reshape(-1, n, n), groups, x0[pa], x1[pb], n0[pa] + n1[pb]
            )
            calls += k
            if best_cost is None:
                best_cost, best_perm, best_rot = new_cost, p, new_rot
                best_sign = c_sign.reshape(-1)
            else:
                better = new_cost < best_cost
                best_cost = torch.where(better, new_cost, best_cost)
                best_perm = torch.where(better[:, None], p, best_perm)
                best_rot = torch.where(better[:, None, None], new_rot, best_rot)
                best_sign = torch.where(better, c_sign.reshape(-1), best_sign)
        cost[flat], perm[flat], rot[flat] = best_cost, best_perm, best_rot
        start_sign[flat] = best_sign

    pa_all = torch.arange(b0, device=dev).repeat_interleave(b1)
    pb_all = torch.arange(b1, device=dev).repeat(b0)
    k, sweeps = _descend(
        x0, x1, groups, pa_all, pb_all, cost, perm, rot, max_iter - 1, tol, max_elements
    )
    calls += k
    sweeps += 1
    if restarts:
        # Further descents from other starting rotations, each run like the first (one sweep from
        # the start, then up to max_iter - 1 more); every pair keeps its best result. Starts, in
        # this order: the proper principal-axes sign choices other than the one the first
        # descent used (for the identity start: all of them), then seeded uniformly random
        # rotations, all expressed in the two samples' principal-axes frames (R = e0 Q e1^T) so
        # that the result stays independent of how either sample is oriented (for the random
        # ones, frames whose axis signs are fixed by the samples: _canonical_frames).
        if init == "identity":
            e0, e1 = _proper_frames(x0), _proper_frames(x1)
            signs = [s for s in _sign_matrices(d, dt, dev) if s.prod() > 0]
            start_sign = torch.full_like(start_sign, -1)  # the identity start used no sign
        sign_stack = torch.stack(signs)  # (S, d) proper sign choices
        n_sign = sign_stack.shape[0]
        n_extra_signs = n_sign - 1 if init != "identity" else n_sign
        n_random = max(0, restarts - n_extra_signs)
        # the random starts come from their own CPU generator, drawn one at a time: the same
        # seed gives the same starts (and so the same result) on every device, more restarts
        # only append starts (so the cost never rises with them), and the global RNG is untouched
        gen = torch.Generator().manual_seed(int(seed))
        q_random = [random_rotation(d, generator=gen, dtype=dt).to(dev) for _ in range(n_random)]
        if n_random:
            c0, c1 = _canonical_frames(x0), _canonical_frames(x1)
        chunk = max(1, max_elements // (n * n))
        for j in range(1, restarts + 1):
            if j <= n_extra_signs:
                # per pair: the j-th sign choice after the one its first descent started from
                # (all sign choices together are a set that turns with the samples, so the raw
                # frames e0, e1 are fine here)
                q = torch.diag_embed(sign_stack[(start_sign + j) % n_sign])  # (P, d, d)
                g0, g1 = e0, e1
            else:
                # a random start is one rotation: relative to frames that turn with the samples
                q = q_random[j - n_extra_signs - 1].expand(n_pairs, d, d)
                g0, g1 = c0, c1
            r_cost = torch.empty(n_pairs, dtype=dt, device=dev)
            r_perm = torch.empty(n_pairs, n, dtype=torch.long, device=dev)
            r_rot = torch.empty(n_pairs, d, d, dtype=dt, device=dev)
            for start in range(0, n_pairs, chunk):
                idx = torch.arange(start, min(n_pairs, start + chunk), device=dev)
                a, b = pa_all[idx], pb_all[idx]
                r0 = g0[a] @ q[idx] @ g1[b].transpose(-1, -2)
                y = x1[b] @ r0.transpose(-1, -2)
                p, new_rot, new_cost, k = _assign_and_align(
                    _particle_cost(x0[a], y, groups), groups, x0[a], x1[b], n0[a] + n1[b]
                )
                calls += k
                r_cost[idx], r_perm[idx], r_rot[idx] = new_cost, p, new_rot
            k, s_more = _descend(
                x0, x1, groups, pa_all, pb_all, r_cost, r_perm, r_rot, max_iter - 1, tol,
                max_elements,
            )
            calls += k
            sweeps += 1 + s_more
            # strict improvement only: ties keep the earlier start's result
            take = r_cost < cost - tol * (1.0 + cost)
            cost = torch.where(take, r_cost, cost)
            perm = torch.where(take[:, None], r_perm, perm)
            rot = torch.where(take[:, None, None], r_rot, rot)
    # The identity pairing (no relabelling, no rotation) is feasible, so the minimum can never
    # exceed the plain squared distance; a local search that ended above it falls back to it
    # (only possible from a principal-axes start: from the identity start the first sweep is
    # already at or below plain, up to round-off, and the descent is monotone).
    plain = (n0[pa_all] + n1[pb_all] - 2.0 * (x0[pa_all] * x1[pb_all]).sum((-1, -2))).clamp_min(0.0)
    worse = plain < cost
    n_fallback = int(worse.sum())
    if fallback and n_fallback:
        cost = torch.where(worse, plain, cost)
        perm[worse] = torch.arange(n, device=dev)
        rot[worse] = eye
    return (
        cost.reshape(b0, b1),
        perm.reshape(b0, b1, n),
        rot.reshape(b0, b1, d, d),
        calls,
        sweeps,
        n_fallback,
    )


def _descend(
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
            new_perm, new_rot, new_cost, k = _assign_and_align(
                _particle_cost(x0[a], y, groups), groups, x0[a], x1[b], n0[a] + n1[b]
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


def _type_mask(groups: list[np.ndarray], n: int, device: torch.device) -> Tensor | None:
    """``(n, n)`` True where particles i and j have different types (never matched)."""
    if len(groups) <= 1:
        return None
    mask = torch.ones(n, n, dtype=torch.bool, device=device)
    for g in groups:
        gi = torch.as_tensor(g, device=device)
        mask[gi[:, None], gi[None, :]] = False
    return mask


def _particle_cost(x0: Tensor, y: Tensor, groups: list[np.ndarray]) -> Tensor:
    """``(P, n, n)`` squared distances ``|x0_i - y_j|^2``; pairs of different type get ``inf``."""
    c = (
        (x0 * x0).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2.0 * x0 @ y.transpose(-1, -2)
    ).clamp_min(0.0)
    mask = _type_mask(groups, x0.shape[1], x0.device)
    if mask is not None:
        c = c.masked_fill(mask, math.inf)
    return c


def equivariant_cost_matrix(
    x0: Tensor,
    x1: Tensor,
    atom_types: Tensor | np.ndarray | None = None,
    *,
    exhaustive_limit: int = 120,
    init: str = "pca",
    max_iter: int = 20,
    tol: float = 1e-10,
    max_elements: int = 2_000_000,
    fallback: bool = True,
    restarts: int = 0,
    seed: int = 0,
) -> EquivariantCost:
    """Minimal squared distance over proper rotations and within-type permutations, all pairs.

    Args:
        x0: ``(B0, n, d)`` CoM-free prior samples. x1: ``(B1, n, d)`` CoM-free data samples.
        atom_types: ``(n,)``; particles of equal type may be exchanged (``None``: all equal).
        exhaustive_limit: enumerate all within-type permutations when there are at most this many
            (DW4: 4! = 24) — with Kabsch per permutation the cost is then exact; otherwise
            alternate Hungarian and Kabsch (a local search; exact in the permutation step and in
            the rotation step, monotone, started from ``init``).
        init: ``"pca"`` (principal-axes start, orientation independent) or ``"identity"``.
        max_iter: cap on alternation sweeps.
        tol: relative improvement below which a pair counts as converged.
        max_elements: working-set size per chunk, bounds memory.
        fallback: replace an alternating-search result above the plain squared distance by the
            identity pairing (the default; the returned cost is then never above plain). False
            keeps the search's own result, to test the search itself; either way such pairs are
            counted in :attr:`EquivariantCost.n_fallback`. No effect when enumerating.
        restarts: further descents of the alternating search, each from another starting
            rotation (first the other proper principal-axes sign choices — 1 in 2D, 3 in 3D —
            then uniformly random rotations drawn from ``seed``, all relative to the two samples'
            principal-axes frames); every pair keeps its cheapest result, so the cost never
            rises with more restarts and the time grows about linearly in ``1 + restarts``.
            0 (this function's default) is the single descent from ``init``. No effect when
            enumerating. See ``bench/bench_eqot_optimality.py`` for the optimality gap.
        seed: seeds the random starting rotations (same inputs and seed: same result).

    Returns:
        :class:`EquivariantCost` (computed in float64 on the inputs' device).
    """
    _check_pair(x0, x1, equal_batch=False)
    n, d = x0.shape[1:]
    if d not in (2, 3):
        raise ValueError(f"equivariant OT supports spatial dimension 2 or 3, got {d}")
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    groups = type_groups(atom_types, n)
    with torch.no_grad():
        a = x0.detach().double()
        b = x1.detach().double()
        perms = within_type_permutations(groups, n, exhaustive_limit)
        if perms is not None:
            cost, perm = _exhaustive_cost(
                a, b, torch.as_tensor(perms, device=a.device), max_elements
            )
            return EquivariantCost(cost, perm, None)
        cost, perm, rot, calls, sweeps, n_fallback = _alternating_cost(
            a,
            b,
            groups,
            init=init,
            max_iter=max_iter,
            tol=tol,
            max_elements=max_elements,
            fallback=fallback,
            restarts=restarts,
            seed=seed,
        )
        return EquivariantCost(cost, perm, rot, calls, sweeps, n_fallback)


def equivariant_ot(
    x0: Tensor,
    x1: Tensor,
    atom_types: Tensor | np.ndarray | None = None,
    *,
    reflections: bool = False,
    **options,
) -> tuple[Tensor, Tensor, Tensor]:
    """Equivariant minibatch OT: batch OT (``ot.emd``) on the rotation/permutation-minimised cost.

    Args:
        x0: ``(B, n, d)`` prior samples (CoM-free). x1: ``(B, n, d)`` data samples (CoM-free).
        atom_types: ``(n,)`` atom types (``None``: all particles interchangeable).
        reflections: minimise over O(d) instead of SO(d): each data sample may also be mirrored
            (twice the search's cost). Only for targets whose density is reflection invariant
            (DW4, LJ; not a chiral molecule) and fields that are reflection equivariant (EGNN).
        **options: forwarded to :func:`equivariant_cost_matrix`.

    Returns:
        ``perm`` ``(B,)`` LongTensor (prior ``a`` is paired with data sample ``perm[a]``),
        ``x1_aligned`` ``(B, n, d)`` (``x1[perm[a]]`` relabelled and rotated — and with
        ``reflections`` possibly mirrored — onto ``x0[a]``, dtype of ``x1``), and ``cost``
        ``(B, B)`` float64 equivariant cost matrix.
    """
    _check_pair(x0, x1)
    d = x1.shape[-1]
    res = equivariant_cost_matrix(x0, x1, atom_types, **options)
    cost, perm, rotation = res.cost, res.perm, res.rotation
    if reflections:
        # O(d) = SO(d) u SO(d) F with F a fixed reflection: the best improper alignment of x1 is
        # the best proper one of x1 F; each pair keeps the cheaper of the two
        flip = torch.ones(d, dtype=torch.float64, device=x1.device)
        flip[0] = -1.0
        mirrored = equivariant_cost_matrix(x0, x1 * flip.to(x1.dtype), atom_types, **options)
        take = mirrored.cost < cost
        cost = torch.where(take, mirrored.cost, cost)
        perm = torch.where(take[..., None], mirrored.perm, perm)
        if rotation is not None:
            rotation = torch.where(take[..., None, None], mirrored.rotation, rotation)
    pi = torch.as_tensor(emd_permutation(cost), device=x1.device)
    rows = torch.arange(x0.shape[0], device=x1.device)
    p = perm[rows, pi]  # (B, n)
    x1sel = x1.detach().double()[pi]
    if reflections:  # mirror the chosen data samples whose cheaper alignment was improper
        x1sel = torch.where(take[rows, pi][:, None, None], x1sel * flip, x1sel)
    x1sel = torch.gather(x1sel, 1, p[..., None].expand(-1, -1, d))
    if rotation is not None:
        r = rotation[rows, pi]  # (B, d, d)
    else:
        r = rotation_from_cross_covariance(x1sel.transpose(-1, -2) @ x0.detach().double())
    aligned = (x1sel @ r.transpose(-1, -2)).to(x1.dtype)
    return pi, aligned, cost
