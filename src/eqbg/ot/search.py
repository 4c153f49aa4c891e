"""The equivariant-OT search of larger systems: alternate an exact within-type assignment
(Hungarian) and the optimal rotation (Kabsch) for all pairs of two batches at once, from
principal-axes starts, with optional restarts; a local search, monotone in every sweep.

:func:`alternating_cost` runs it: one sweep from the start (:func:`_first_sweep`), descents
(:func:`eqbg.ot.sweep.descend`), restarts from other rotations (:func:`_restart`), and the fallback to the
identity pairing where a search ended above the plain squared distance.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from eqbg.ot.alignment import random_rotation
from eqbg.ot.frames import canonical_frames, proper_frames, sign_matrices
from eqbg.ot.sweep import PairResult, assign_and_align, descend, sweep_from, type_mask

__all__ = ["alternating_cost"]


def alternating_cost(
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
    only where the row minima are not already a permutation), one batched Kabsch. A pair leaves
    the active set as soon as its assignment stops changing (its rotation, and so its cost, is
    then fixed too); the cost never increases from one sweep to the next.

    Last, every pair whose search ended above its plain squared distance is counted and, with
    ``fallback``, replaced by the identity pairing (see ``EquivariantCost.n_fallback``).

    Returns:
        ``(cost (B0, B1), perm (B0, B1, n), rotation (B0, B1, d, d), solver calls, sweeps,
        pairs that fell back)``.
    """
    b0, n, d = x0.shape
    b1 = x1.shape[0]
    e0, e1, signs = _starts(x0, x1, init)
    (cost, perm, rot), start_sign, calls = _first_sweep(x0, x1, groups, init, e0, e1, signs, max_elements)
    pa_all = torch.arange(b0, device=x0.device).repeat_interleave(b1)
    pb_all = torch.arange(b1, device=x0.device).repeat(b0)
    k, sweeps = descend(x0, x1, groups, pa_all, pb_all, cost, perm, rot, max_iter - 1, tol, max_elements)
    calls += k
    sweeps += 1
    if restarts:
        if init == "identity":  # the restarts still start from principal-axes frames
            e0, e1, signs = _starts(x0, x1, "pca")
            start_sign = torch.full_like(start_sign, -1)  # the identity start used no sign
        (cost, perm, rot), k, s = _restarts(
            x0, x1, groups, (cost, perm, rot), (e0, e1, torch.stack(signs), start_sign),
            n_extra_signs=len(signs) - 1 if init != "identity" else len(signs), restarts=restarts,
            seed=seed, max_iter=max_iter, tol=tol, max_elements=max_elements,
        )
        calls, sweeps = calls + k, sweeps + s
    # The identity pairing (no relabelling, no rotation) is feasible, so the minimum can never
    # exceed the plain squared distance; a local search that ended above it falls back to it
    # (only possible from a principal-axes start: from the identity start the first sweep is
    # already at or below plain, up to round-off, and the descent is monotone).
    n0, n1 = (x0 * x0).sum((-1, -2)), (x1 * x1).sum((-1, -2))
    plain = (n0[pa_all] + n1[pb_all] - 2.0 * (x0[pa_all] * x1[pb_all]).sum((-1, -2))).clamp_min(0.0)
    worse = plain < cost
    n_fallback = int(worse.sum())
    if fallback and n_fallback:
        cost = torch.where(worse, plain, cost)
        perm[worse] = torch.arange(n, device=x0.device)
        rot[worse] = torch.eye(d, dtype=x0.dtype, device=x0.device)
    return cost.reshape(b0, b1), perm.reshape(b0, b1, n), rot.reshape(b0, b1, d, d), calls, sweeps, n_fallback


def _starts(x0: Tensor, x1: Tensor, init: str) -> tuple[Tensor, Tensor, list[Tensor]]:
    """``(e0 (B0, d, d), e1 (B1, d, d), sign choices [(d,)])``: the frames a start expresses the
    samples in, and the axis-sign choices tried (identity: one, no signs)."""
    b0, _, d = x0.shape
    dev, dt = x0.device, x0.dtype
    if init == "identity":
        eye = torch.eye(d, dtype=dt, device=dev)
        return eye.expand(b0, d, d), eye.expand(x1.shape[0], d, d), [torch.ones(d, dtype=dt, device=dev)]
    if init in ("pca", "pca-all"):
        signs = [s for s in sign_matrices(d, dt, dev) if s.prod() > 0]
        return proper_frames(x0), proper_frames(x1), signs
    raise ValueError(f"unknown init {init!r}; expected 'pca', 'pca-all' or 'identity'")


def _first_sweep(
    x0: Tensor, x1: Tensor, groups: list[np.ndarray], init: str, e0: Tensor, e1: Tensor,
    signs: list[Tensor], max_elements: int,
) -> tuple[PairResult, Tensor, int]:
    """One assignment + rotation step of every pair from its start: ``(pairs, start sign index
    (P,), solver calls)``; ``pca-all`` keeps, per pair, the best of every sign choice."""
    b0, n, d = x0.shape
    b1 = x1.shape[0]
    dev, dt = x0.device, x0.dtype
    n0, n1 = (x0 * x0).sum((-1, -2)), (x1 * x1).sum((-1, -2))
    q0, q1 = (x0 * x0).sum(-1), (x1 * x1).sum(-1)  # (B, n)
    f0, f1 = x0 @ e0, x1 @ e1  # coordinates in the frames
    mask = type_mask(groups, n, dev)
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
        # per-axis products of frame coordinates, (r, B1, n, n) each: every sign choice is a
        # signed sum of these (reducing over a trailing axis of length d is slow in torch)
        prods = [f0[ia][:, None, :, None, k] * f1[None, :, None, :, k] for k in range(d)]
        base = q0[ia][:, None, :, None] + q1[None, :, None, :]
        cands, cand_sign = _start_costs(prods, base, signs, mask, all_signs=init == "pca-all")
        pa, pb = ia.repeat_interleave(b1), ib_all.repeat(ia.numel())
        flat = pa * b1 + pb
        best = None
        for c, c_sign in zip(cands, cand_sign):
            p, new_rot, new_cost, k = assign_and_align(
                c.reshape(-1, n, n), groups, x0[pa], x1[pb], n0[pa] + n1[pb]
            )
            calls += k
            if best is None:
                best = [new_cost, p, new_rot, c_sign.reshape(-1)]
            else:
                better = new_cost < best[0]
                best = [torch.where(better, new_cost, best[0]), torch.where(better[:, None], p, best[1]),
                        torch.where(better[:, None, None], new_rot, best[2]),
                        torch.where(better, c_sign.reshape(-1), best[3])]
        cost[flat], perm[flat], rot[flat], start_sign[flat] = best
    return (cost, perm, rot), start_sign, calls


def _start_costs(
    prods: list[Tensor], base: Tensor, signs: list[Tensor], mask: Tensor | None, *, all_signs: bool,
) -> tuple[list[Tensor], list[Tensor]]:
    """Particle cost matrices ``(r, B1, n, n)`` of a chunk's pairs in their start frames, with
    each candidate's sign index ``(r, B1)``: one per sign choice (``all_signs`` or a single
    choice), else per pair the choice of the smallest lower bound (sum of row minima)."""
    r, b1 = base.shape[:2]
    dev = base.device
    cands: list[Tensor] = []
    cand_sign: list[Tensor] = []
    best_lb = None
    for si, s in enumerate(signs):
        dot = prods[0] * s[0]
        for k in range(1, len(prods)):
            dot = dot + prods[k] * s[k]
        c = (base - 2.0 * dot).clamp_min(0.0)
        if mask is not None:
            c = c.masked_fill(mask, math.inf)
        if all_signs or len(signs) == 1:
            cands.append(c)
            cand_sign.append(torch.full((r, b1), si, dtype=torch.long, device=dev))
            continue
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
    return cands, cand_sign


def _restarts(
    x0: Tensor, x1: Tensor, groups: list[np.ndarray], pairs: PairResult,
    frames: tuple[Tensor, Tensor, Tensor, Tensor], *, n_extra_signs: int, restarts: int, seed: int,
    max_iter: int, tol: float, max_elements: int,
) -> tuple[PairResult, int, int]:
    """Further descents from other starting rotations, each run like the first (one sweep from
    the start, then up to ``max_iter - 1`` more); every pair keeps its best result.

    Starts, in this order: the proper principal-axes sign choices other than the one the first
    descent used (``n_extra_signs`` of them; for the identity start all), then seeded uniformly
    random rotations, all expressed in the two samples' principal-axes frames (R = e0 Q e1^T) so
    that the result stays independent of how either sample is oriented (for the random ones,
    frames whose axis signs are fixed by the samples: :func:`canonical_frames`).

    ``frames``: ``(e0, e1, sign choices (S, d), each pair's start sign index (P,))``. Returns
    ``(pairs, solver calls, sweeps)``.
    """
    e0, e1, sign_stack, start_sign = frames
    cost, perm, rot = pairs
    b0, n, d = x0.shape
    b1 = x1.shape[0]
    pa_all = torch.arange(b0, device=x0.device).repeat_interleave(b1)
    pb_all = torch.arange(b1, device=x0.device).repeat(b0)
    n_random = max(0, restarts - n_extra_signs)
    # the random starts come from their own CPU generator, drawn one at a time: the same seed
    # gives the same starts (and so the same result) on every device, more restarts only append
    # starts (so the cost never rises with them), and the global RNG is untouched
    gen = torch.Generator().manual_seed(int(seed))
    q_random = [random_rotation(d, generator=gen, dtype=x0.dtype).to(x0.device) for _ in range(n_random)]
    if n_random:
        c0, c1 = canonical_frames(x0), canonical_frames(x1)
    calls = sweeps = 0
    for j in range(1, restarts + 1):
        if j <= n_extra_signs:
            # per pair: the j-th sign choice after the one its first descent started from (all
            # sign choices together are a set that turns with the samples, so the raw frames
            # e0, e1 are fine here)
            q = torch.diag_embed(sign_stack[(start_sign + j) % sign_stack.shape[0]])  # (P, d, d)
            g0, g1 = e0, e1
        else:
            # a random start is one rotation: relative to frames that turn with the samples
            q = q_random[j - n_extra_signs - 1].expand(b0 * b1, d, d)
            g0, g1 = c0, c1
        r_pairs, k = sweep_from(x0, x1, groups, pa_all, pb_all, (g0, q, g1), max_elements)
        k2, s_more = descend(x0, x1, groups, pa_all, pb_all, *r_pairs, max_iter - 1, tol, max_elements)
        calls, sweeps = calls + k + k2, sweeps + 1 + s_more
        r_cost, r_perm, r_rot = r_pairs
        # strict improvement only: ties keep the earlier start's result
        take = r_cost < cost - tol * (1.0 + cost)
        cost = torch.where(take, r_cost, cost)
        perm = torch.where(take[:, None], r_perm, perm)
        rot = torch.where(take[:, None, None], r_rot, rot)
    return (cost, perm, rot), calls, sweeps
