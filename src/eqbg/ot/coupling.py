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

from dataclasses import dataclass

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from eqbg.ot.alignment import rotation_from_cross_covariance, type_groups, within_type_permutations
from eqbg.ot.exhaustive import exhaustive_cost
from eqbg.ot.search import alternating_cost

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
            cost, perm = exhaustive_cost(
                a, b, torch.as_tensor(perms, device=a.device), max_elements
            )
            return EquivariantCost(cost, perm, None)
        cost, perm, rot, calls, sweeps, n_fallback = alternating_cost(
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
