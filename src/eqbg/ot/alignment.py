"""Rigid alignment of particle configurations: Kabsch (proper rotations only) and Hungarian
assignment restricted to atoms of equal type.

Conventions (shared with :mod:`eqbg.ot.coupling`):

* configurations are ``(..., n, d)`` tensors, ``d`` in {2, 3}, assumed centre-of-mass free, so a
  rotation about the origin is the whole rigid alignment (translations are already optimal);
* ``kabsch(x, y)`` returns ``R`` with ``det R = +1`` minimising ``sum_i |R x_i - y_i|^2``, i.e.
  ``x @ R.transpose(-1, -2) ≈ y`` (we work in SO(d), not O(d): a reflection would map a molecule
  onto its mirror image, which the energy need not share);
* a permutation ``perm`` of ``(n,)`` maps the particles of the second argument onto the first:
  ``x1[perm]`` is matched to ``x0``; only particles of equal atom type are ever exchanged.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Callable

import lap
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = [
    "kabsch",
    "align",
    "max_rotation_trace",
    "rotation_from_cross_covariance",
    "type_groups",
    "within_type_permutations",
    "batched_assignment",
    "ASSIGNMENT_SOLVERS",
    "LAP_MIN_SIZE",
    "default_assignment_solver",
    "random_rotation",
]


def _check_dim(d: int) -> None:
    if d not in (2, 3):
        raise ValueError(f"alignment supports spatial dimension 2 or 3, got {d}")


def rotation_from_cross_covariance(h: Tensor) -> Tensor:
    """Proper rotation ``R`` maximising ``trace(R @ h)`` for cross-covariances ``h`` (..., d, d).

    With ``h = sum_i x_i y_i^T`` this ``R`` minimises ``sum_i |R x_i - y_i|^2`` over SO(d).
    2D uses the closed form ``R = rot(atan2(h01 - h10, h00 + h11))``; 3D the SVD with the sign of
    the smallest singular direction flipped when needed so that ``det R = +1``.
    """
    d = h.shape[-1]
    _check_dim(d)
    if d == 2:
        a = h[..., 0, 0] + h[..., 1, 1]
        b = h[..., 0, 1] - h[..., 1, 0]
        r = torch.sqrt(a * a + b * b)
        # A zero cross-covariance leaves every rotation optimal: return the identity.
        safe = r > torch.finfo(h.dtype).tiny
        c = torch.where(safe, a / torch.where(safe, r, torch.ones_like(r)), torch.ones_like(r))
        s = torch.where(safe, b / torch.where(safe, r, torch.ones_like(r)), torch.zeros_like(r))
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(-1, -2)
    ut = u.transpose(-1, -2)
    sign = torch.sign(torch.linalg.det(v @ ut))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    diag = torch.ones(h.shape[:-1], dtype=h.dtype, device=h.device)
    diag[..., -1] = sign
    return (v * diag.unsqueeze(-2)) @ ut


def max_rotation_trace(h: Tensor) -> Tensor:
    """``max_{R in SO(d)} trace(R @ h)`` for ``h`` (..., d, d), without forming ``R``.

    2D: ``sqrt((h00 + h11)^2 + (h01 - h10)^2)``; 3D: ``s1 + s2 + sign(det h) * s3`` (singular
    values in decreasing order) — the det term is what restricts the optimum to proper rotations.
    """
    d = h.shape[-1]
    _check_dim(d)
    if d == 2:
        a = h[..., 0, 0] + h[..., 1, 1]
        b = h[..., 0, 1] - h[..., 1, 0]
        return torch.sqrt(a * a + b * b)
    s = torch.linalg.svdvals(h)
    sign = torch.sign(torch.linalg.det(h))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return s[..., 0] + s[..., 1] + sign * s[..., 2]


def kabsch(x: Tensor, y: Tensor) -> Tensor:
    """Optimal proper rotation aligning ``x`` onto ``y``.

    Args:
        x, y: ``(..., n, d)`` configurations (CoM-free; rotation is about the origin), d in {2, 3}.

    Returns:
        ``R`` ``(..., d, d)`` with ``det R = +1`` minimising ``sum_i |R x_i - y_i|^2``;
        apply it as ``x @ R.transpose(-1, -2)``.
    """
    if x.shape != y.shape:
        raise ValueError(f"kabsch needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    h = x.transpose(-1, -2) @ y
    return rotation_from_cross_covariance(h)


def align(x: Tensor, y: Tensor) -> Tensor:
    """``x`` rotated (proper rotation about the origin) to best match ``y``; shapes ``(..., n, d)``."""
    return x @ kabsch(x, y).transpose(-1, -2)


def random_rotation(
    d: int,
    *,
    batch: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniformly random proper rotations ``(*batch, d, d)`` (QR of a Gaussian, det fixed to +1),
    drawn on ``device`` (the generator's device)."""
    _check_dim(d)
    a = torch.randn(*batch, d, d, generator=generator, dtype=dtype, device=device)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[..., :, 0] = q[..., :, 0] * det.unsqueeze(-1)
    return q


def type_groups(atom_types: Tensor | np.ndarray | None, n: int) -> list[np.ndarray]:
    """Index arrays of the particles sharing each atom type (only groups with more than one member
    can be permuted). ``None`` means all particles are interchangeable."""
    if atom_types is None:
        return [np.arange(n)]
    types = np.asarray(atom_types.cpu() if isinstance(atom_types, Tensor) else atom_types)
    if types.shape != (n,):
        raise ValueError(f"atom_types must have shape ({n},), got {types.shape}")
    return [np.flatnonzero(types == t) for t in np.unique(types)]


def within_type_permutations(groups: list[np.ndarray], n: int, limit: int) -> np.ndarray | None:
    """All permutations of ``n`` particles that only exchange equal types, as ``(K, n)``; ``None``
    when ``K`` would exceed ``limit``."""
    count = math.prod(math.factorial(len(g)) for g in groups)
    if count > limit:
        return None
    perms = np.empty((count, n), dtype=np.int64)
    for k, choice in enumerate(itertools.product(*(itertools.permutations(g) for g in groups))):
        for g, p in zip(groups, choice):
            perms[k, g] = p
    return perms


def _scipy_assignment(cost: Tensor) -> Tensor:
    """``(P, m, m)`` -> ``(P, m)``: one ``scipy.optimize.linear_sum_assignment`` per matrix, on
    the CPU (the fastest exact solver measured there, bench/README.md)."""
    c = cost.detach().cpu().numpy()
    cols = np.stack([linear_sum_assignment(ci)[1] for ci in c])
    return torch.as_tensor(cols, device=cost.device)


def _lap_assignment(cost: Tensor) -> Tensor:
    """``(P, m, m)`` -> ``(P, m)``: one ``lap.lapjv`` (Jonker-Volgenant) per matrix, on the CPU;
    faster than scipy's from m ~ 20 on (2.7x at m = 55), slower below (bench/README.md)."""
    c = cost.detach().cpu().numpy().astype(np.float64, copy=False)
    cols = np.stack([lap.lapjv(ci, extend_cost=False)[1] for ci in c])
    return torch.as_tensor(cols, dtype=torch.long, device=cost.device)


def _torch_linear_assignment(cost: Tensor) -> Tensor:
    """``(P, m, m)`` -> ``(P, m)`` by ``torch_linear_assignment.batch_linear_assignment``: one
    batched Triton kernel on CUDA (SciPy's algorithm, so the same optimum), without a copy to
    the host; on CPU the package itself loops over SciPy."""
    # optional: the `cuda` extra (pyproject), absent from CPU installs
    from torch_linear_assignment import batch_linear_assignment

    return batch_linear_assignment(cost.contiguous())


#: exact solvers of a stack of square assignment problems, ``(P, m, m) -> (P, m)`` column per
#: row; ``"auto"`` picks :func:`default_assignment_solver`
ASSIGNMENT_SOLVERS: dict[str, Callable[[Tensor], Tensor]] = {
    "scipy": _scipy_assignment,
    "lap": _lap_assignment,
    "torch-linear-assignment": _torch_linear_assignment,
}

#: problem size from which ``lap.lapjv`` beats scipy on the CPU (measured: equal at 16, 1.3x at
#: 24, 1.9x at 32, 2.7x at 55; scipy 1.3-5x faster at 4-13)
LAP_MIN_SIZE = 17


def default_assignment_solver(device: torch.device | str, size: int = 0) -> str:
    """The fastest measured exact solver for ``size x size`` problems on ``device``:
    ``torch-linear-assignment`` for CUDA tensors when it is installed (the ``cuda`` extra); on
    the CPU ``lap`` from :data:`LAP_MIN_SIZE` on, else ``scipy``."""
    if torch.device(device).type == "cuda" and importlib.util.find_spec("torch_linear_assignment"):
        return "torch-linear-assignment"
    return "lap" if size >= LAP_MIN_SIZE else "scipy"


def batched_assignment(
    cost: np.ndarray | Tensor,
    groups: list[np.ndarray],
    *,
    return_calls: bool = False,
    solver: str = "auto",
) -> np.ndarray | Tensor | tuple[np.ndarray | Tensor, int]:
    """Minimum-cost assignment for a stack of square cost matrices, within atom-type groups.

    Args:
        cost: ``(P, n, n)`` array or tensor (on any device); ``cost[p, i, j]`` is the price of
            matching particle ``i`` of the first configuration with particle ``j`` of the second.
        groups: index arrays from :func:`type_groups`.
        solver: a key of :data:`ASSIGNMENT_SOLVERS` or ``"auto"``
            (:func:`default_assignment_solver` of the cost's device and each group's size).

    Returns:
        ``(P, n)`` int64 with ``perm[p, i] = j``, of the input's kind (array, or tensor on the
        cost's device); with ``return_calls``, also the number of matrices given to the solver.

    When the row-wise minima of a matrix already form a permutation, that permutation is optimal
    (every row gets its cheapest column), so the solver only sees the remaining matrices — after
    a good rotation this is most of them. The check runs on the cost's device.
    """
    as_numpy = isinstance(cost, np.ndarray)
    c = torch.as_tensor(cost)
    if solver != "auto" and solver not in ASSIGNMENT_SOLVERS:
        raise ValueError(f"unknown assignment solver {solver!r}; use one of {list(ASSIGNMENT_SOLVERS)}")
    p_count, n, _ = c.shape
    perm = torch.empty((p_count, n), dtype=torch.long, device=c.device)
    calls = 0
    for g in groups:
        gi = torch.as_tensor(g, dtype=torch.long, device=c.device)
        if len(g) == 1:
            perm[:, gi] = gi
            continue
        whole = len(g) == n  # one type: no sub-matrix copy, no index mapping
        sub = c if whole else c[:, gi[:, None], gi[None, :]]
        local = sub.argmin(-1)
        srt = local.sort(-1).values
        todo = torch.nonzero(~(srt[:, 1:] != srt[:, :-1]).all(-1)).flatten()
        calls += int(todo.numel())
        if todo.numel():
            name = default_assignment_solver(c.device, len(g)) if solver == "auto" else solver
            local[todo] = ASSIGNMENT_SOLVERS[name](sub[todo]).to(local.dtype)
        perm[:, gi] = local if whole else gi[local]
    out = perm.numpy() if as_numpy else perm
    return (out, calls) if return_calls else out
