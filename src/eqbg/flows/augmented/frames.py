"""Per-node invariant frames of the augmented coupling flow, and the transforms inside them.

Each transformed node ``p`` (``d``-vector) gets an origin and axes built from its own reference
points ``r_0 .. r_{d-1}`` (equivariant points from the conditioning half, see
:class:`~eqbg.flows.augmented.coupling.AugmentedCoupling`). ``p`` is mapped into the frame,
transformed by an invertible map whose parameters are invariant (they come from invariant node
features), and mapped back. Because the frame rotates, translates and permutes with the input,
the coupling is equivariant, and its log-determinant is invariant.

Three frames (Midgley et al. 2023, option ``frame``):

* :class:`SphericalFrame` (default): origin ``r_0``; 3D axes ``z = n(r_1 - r_0)``,
  ``x = n(rejection of r_2 - r_0 from z)``, ``y = z x x``; ``p`` in spherical coordinates
  ``(rho, theta, phi)``, each through a rational-quadratic spline (``rho`` on [0, 10], ``theta`` on
  [0, pi], ``phi`` on [-pi, pi] followed by a rotation of the circle); log-det = the spline
  log-derivatives + ``2 log rho' + log sin theta' - 2 log rho - log sin theta``. 2D: polar
  ``(rho, theta)`` with ``theta`` measured from ``r_1 - r_0``; ``+ log rho' - log rho``.
* :class:`ProjFrame`: Gram-Schmidt axes from ``r_1 - r_0`` (and ``r_2 - r_0`` in 3D, the third
  axis by a cross product; in 2D the second is the first turned by +90 degrees); the frame
  coordinates through an affine map (scale ``softplus(u + softplus^-1(1))``, shift) or a spline on
  [-10, 10]; log-det = sum of log scales (or spline log-derivatives).
* :class:`AlongVectorFrame`: ``d`` moves in sequence, move ``k`` rescales the distance
  ``rho = |p - r_k|`` by a spline on [0, 10] keeping the direction; log-det per move
  ``log f'(rho) + (d - 1)(log rho' - log rho)``.

**Reflections.** The spherical and proj frames contain a handedness (a cross product in 3D, a
+90 degree turn in 2D) that flips under a reflection, so the flow is SE(d)- but not
E(d)-equivariant: the density of a configuration and of its mirror image differ. This is the
paper's default (``reflection_invariant=False``), kept because molecules are chiral. With
``reflection_invariant=True`` the handed axis is multiplied by ``sign(axis . r_0)`` (``r_0``
relative to the centre of the conditioning half, which is the origin of the coordinates the
coupling works in), which flips back under a reflection: the flow becomes E(d)-equivariant.
:class:`AlongVectorFrame` uses distances and directions only and is E(d)-equivariant whatever the
option.

**Degenerate inputs** (coincident reference points, collinear vectors, ``p`` at the origin) have
measure zero; norms, ``atan2`` and logs are guarded so values and gradients stay finite there.

Shapes: ``p (..., d)``, ``refs (..., d, d)`` (reference points along the second-last axis),
``params (..., n_params)``; every method returns ``(points (..., d), log_det (...))``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from eqbg.flows.augmented.splines import spline_forward, spline_inverse, spline_params

__all__ = ["Frame", "SphericalFrame", "ProjFrame", "AlongVectorFrame", "FRAMES", "collinearity_loss"]

#: radial splines act on [0, RHO_MAX] (identity beyond)
RHO_MAX = 10.0
#: the proj frame's splines act on [-PROJ_BOUND, PROJ_BOUND]
PROJ_BOUND = 10.0
_SOFTPLUS_INV_1 = math.log(math.e - 1.0)


def _safe_norm(v: Tensor, keepdim: bool = False) -> Tensor:
    """``|v|`` over the last axis with a finite gradient at 0 (torch's norm gives NaN there)."""
    sq = v.pow(2).sum(-1, keepdim=keepdim)
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def _normalize(v: Tensor) -> Tensor:
    norm = _safe_norm(v, keepdim=True)
    return v / torch.where(norm > 0, norm, torch.ones_like(norm))


def _safe_atan2(y: Tensor, x: Tensor) -> Tensor:
    """``atan2(y, x)`` with value and gradient 0 at ``(0, 0)``."""
    zero = (x == 0) & (y == 0)
    return torch.where(zero, torch.zeros_like(x), torch.atan2(y, torch.where(zero, torch.ones_like(x), x)))


def _log(x: Tensor) -> Tensor:
    return x.clamp_min(torch.finfo(x.dtype).tiny).log()


def _sign(x: Tensor) -> Tensor:
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


def _turn90(v: Tensor) -> Tensor:
    """2D vectors turned by +90 degrees."""
    return torch.stack([-v[..., 1], v[..., 0]], dim=-1)


def _wrap(angle: Tensor) -> Tensor:
    """Angles onto [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def collinearity_loss(vectors: Tensor) -> Tensor:
    """``-log(1 - |cos angle(v_1, v_2)|)`` per node: the authors' 3D auxiliary loss, which keeps
    the conditioner's vectors apart; 0 where ``1 - |cos|`` is below 1e-4 (degenerate vectors: no
    gradient rather than an infinite one) and in 2D.

    As EACF (``spherical_coupling.py::get_vector_info_single``), the penalty is on the raw
    equivariant vectors ``v_k`` the EGNN returns (reference point ``r_k = c + v_k``), not on the
    frame's ``r_1 - r_0``, ``r_2 - r_0``: with one conditioning channel those are ``v_1 - v_0``,
    ``v_2 - v_0``, so the two penalties differ whenever ``v_0 != 0``.

    Args:
        vectors: ``(..., d, d)`` the vectors ``v_0 .. v_{d-1}`` of each node.

    Returns:
        ``(...)`` non-negative losses.
    """
    if vectors.shape[-1] != 3:
        return vectors.new_zeros(vectors.shape[:-2])
    a, b = vectors[..., 1, :], vectors[..., 2, :]
    cos = (a * b).sum(-1) / (_safe_norm(a) * _safe_norm(b)).clamp_min(torch.finfo(vectors.dtype).tiny)
    gap = 1.0 - cos.abs()
    ok = gap >= 1e-4
    return torch.where(ok, -torch.log(torch.where(ok, gap, torch.ones_like(gap))), torch.zeros_like(gap))


class Frame:
    """A per-node frame and the transform inside it (see the module docstring).

    Args:
        spatial_dim: ``d`` (2 or 3).
        n_bins: spline bins ``K``.
        reflection_invariant: make the handed axis reflect with the input (E(d) instead of SE(d)).
    """

    name: ClassVar[str]

    def __init__(self, spatial_dim: int, n_bins: int = 8, reflection_invariant: bool = False) -> None:
        if spatial_dim not in (2, 3):
            raise ValueError(f"frames are defined in 2D and 3D, got spatial_dim={spatial_dim}")
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        self.d, self.n_bins, self.reflection_invariant = int(spatial_dim), int(n_bins), bool(reflection_invariant)
        self.k = spline_params(self.n_bins)

    @property
    def n_refs(self) -> int:
        """Reference points the frame needs per node."""
        return self.d

    @property
    def n_params(self) -> int:
        """Unconstrained parameters of the transform of one node (zeros: the identity)."""
        raise NotImplementedError

    def forward(self, p: Tensor, refs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, p: Tensor, refs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def axes(self, refs: Tensor) -> tuple[Tensor, Tensor]:
        """``(origin (..., d), axes (..., d, d))``: orthonormal rows (Gram-Schmidt on ``r_k - r_0``,
        the last axis by the cross product or the +90 degree turn)."""
        o = refs[..., 0, :]
        e1 = _normalize(refs[..., 1, :] - o)
        if self.d == 3:
            w = refs[..., 2, :] - o
            e2 = _normalize(w - (w * e1).sum(-1, keepdim=True) * e1)
            e3 = torch.cross(e1, e2, dim=-1)
            if self.reflection_invariant:
                e3 = e3 * _sign((e3 * o).sum(-1, keepdim=True))
            return o, torch.stack([e1, e2, e3], dim=-2)
        e2 = _turn90(e1)
        if self.reflection_invariant:
            e2 = e2 * _sign((e2 * o).sum(-1, keepdim=True))
        return o, torch.stack([e1, e2], dim=-2)

    @staticmethod
    def to_frame(p: Tensor, o: Tensor, axes: Tensor) -> Tensor:
        return torch.einsum("...kd,...d->...k", axes, p - o)

    @staticmethod
    def from_frame(c: Tensor, o: Tensor, axes: Tensor) -> Tensor:
        return o + torch.einsum("...kd,...k->...d", axes, c)


class SphericalFrame(Frame):
    """Spherical (3D) or polar (2D) coordinates, each through a spline (the paper's default)."""

    name = "spherical"

    @property
    def n_params(self) -> int:
        return self.d * self.k + 1  # d splines and the rotation of the periodic angle

    def _local(self, p: Tensor, refs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(origin, axes, spherical coordinates (..., d), log of the volume element)``."""
        o, ax = self.axes(refs)
        # spherical axes order (x, y, z) = (e2, e3, e1): the polar axis is r_1 - r_0
        if self.d == 3:
            ax = ax[..., [1, 2, 0], :]
        c = self.to_frame(p, o, ax)
        rho = _safe_norm(c)
        if self.d == 3:
            r_perp = _safe_norm(c[..., :2])
            coords = torch.stack([rho, _safe_atan2(r_perp, c[..., 2]), _safe_atan2(c[..., 1], c[..., 0])], -1)
            log_vol = 2 * _log(rho) + _log(r_perp) - _log(rho)  # rho^2 sin(theta)
        else:
            coords = torch.stack([rho, _safe_atan2(c[..., 1], c[..., 0])], -1)
            log_vol = _log(rho)
        return o, ax, coords, log_vol

    def _global(self, coords: Tensor, o: Tensor, ax: Tensor) -> tuple[Tensor, Tensor]:
        rho = coords[..., 0]
        if self.d == 3:
            theta, phi = coords[..., 1], coords[..., 2]
            s = torch.sin(theta)
            c = torch.stack([s * torch.cos(phi), s * torch.sin(phi), torch.cos(theta)], -1)
            log_vol = 2 * _log(rho) + _log(s)
        else:
            phi = coords[..., 1]
            c = torch.stack([torch.cos(phi), torch.sin(phi)], -1)
            log_vol = _log(rho)
        return self.from_frame(rho.unsqueeze(-1) * c, o, ax), log_vol

    def _ranges(self) -> list[tuple[float, float]]:
        return [(0.0, RHO_MAX), (0.0, math.pi), (-math.pi, math.pi)] if self.d == 3 else [
            (0.0, RHO_MAX), (-math.pi, math.pi)]

    def forward(self, p: Tensor, refs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        o, ax, coords, log_vol = self._local(p, refs)
        out, ladj = [], torch.zeros_like(coords[..., 0])
        for i, (lo, hi) in enumerate(self._ranges()):
            y, l = spline_forward(coords[..., i], params[..., i * self.k:(i + 1) * self.k], lo, hi)
            out.append(y)
            ladj = ladj + l
        out[-1] = _wrap(out[-1] + params[..., -1])  # rotate the circle (volume preserving)
        p_new, log_vol_new = self._global(torch.stack(out, -1), o, ax)
        return p_new, ladj + log_vol_new - log_vol

    def inverse(self, p: Tensor, refs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        o, ax, coords, log_vol = self._local(p, refs)
        cols = [coords[..., i] for i in range(self.d)]
        cols[-1] = _wrap(cols[-1] - params[..., -1])
        out, ladj = [], torch.zeros_like(coords[..., 0])
        for i, (lo, hi) in enumerate(self._ranges()):
            y, l = spline_inverse(cols[i], params[..., i * self.k:(i + 1) * self.k], lo, hi)
            out.append(y)
            ladj = ladj + l
        p_new, log_vol_new = self._global(torch.stack(out, -1), o, ax)
        return p_new, ladj + log_vol_new - log_vol


class ProjFrame(Frame):
    """Cartesian coordinates in the Gram-Schmidt frame, through an affine map or splines."""

    name = "proj"

    def __init__(self, spatial_dim: int, n_bins: int = 8, reflection_invariant: bool = False,
                 transform: str = "affine") -> None:
        super().__init__(spatial_dim, n_bins, reflection_invariant)
        if transform not in ("affine", "spline"):
            raise ValueError(f"proj transform must be 'affine' or 'spline', got {transform!r}")
        self.transform = transform

    @property
    def n_params(self) -> int:
        return self.d * (2 if self.transform == "affine" else self.k)

    def _map(self, c: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        if self.transform == "affine":
            raw, shift = params[..., : self.d], params[..., self.d:]
            log_scale = torch.log(F.softplus(raw + _SOFTPLUS_INV_1))
            if inverse:
                return (c - shift) * torch.exp(-log_scale), -log_scale.sum(-1)
            return c * torch.exp(log_scale) + shift, log_scale.sum(-1)
        step = spline_inverse if inverse else spline_forward
        out, ladj = [], torch.zeros_like(c[..., 0])
        for i in range(self.d):
            y, l = step(c[..., i], params[..., i * self.k:(i + 1) * self.k], -PROJ_BOUND, PROJ_BOUND)
            out.append(y)
            ladj = ladj + l
        return torch.stack(out, -1), ladj

    def forward(self, p: Tensor, refs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        o, ax = self.axes(refs)
        c, ladj = self._map(self.to_frame(p, o, ax), params, inverse=False)
        return self.from_frame(c, o, ax), ladj

    def inverse(self, p: Tensor, refs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        o, ax = self.axes(refs)
        c, ladj = self._map(self.to_frame(p, o, ax), params, inverse=True)
        return self.from_frame(c, o, ax), ladj


class AlongVectorFrame(Frame):
    """``d`` radial rescalings, each about its own reference point (E(d)-equivariant)."""

    name = "along_vector"

    @property
    def n_params(self) -> int:
        return self.d * self.k

    def _move(self, p: Tensor, r: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        u = p - r
        rho = _safe_norm(u)
        step = spline_inverse if inverse else spline_forward
        rho_new, l = step(rho, params, 0.0, RHO_MAX)
        scale = rho_new / torch.where(rho > 0, rho, torch.ones_like(rho))
        return r + u * scale.unsqueeze(-1), l + (self.d - 1) * (_log(rho_new) - _log(rho))

    def forward(self, p: Tensor, refs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        ladj = torch.zeros_like(p[..., 0])
        for k in range(self.d):
            p, l = self._move(p, refs[..., k, :], params[..., k * self.k:(k + 1) * self.k], False)
            ladj = ladj + l
        return p, ladj

    def inverse(self, p: Tensor, refs: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        ladj = torch.zeros_like(p[..., 0])
        for k in reversed(range(self.d)):
            p, l = self._move(p, refs[..., k, :], params[..., k * self.k:(k + 1) * self.k], True)
            ladj = ladj + l
        return p, ladj


#: ``frame`` option -> class
FRAMES: dict[str, type[Frame]] = {f.name: f for f in (SphericalFrame, ProjFrame, AlongVectorFrame)}
