"""Rational-quadratic splines on an interval, from zuko.

We use zuko's :class:`~zuko.transforms.MonotonicRQSTransform` (Durkan et al. 2019), a maintained
implementation with forward, inverse and log-derivative. It is symmetric on ``[-B, B]``, has
both end slopes fixed to 1 and identity tails outside the interval (``3K - 1`` parameters for
``K`` bins). The authors' splines (distrax) have free end slopes (``3K + 1`` parameters) and
linear tails with the boundary slope; fixing the end slopes loses a little flexibility at the
interval ends and nothing else, and makes the circular spline's end slopes tied by
construction. Intervals ``[lo, hi]`` are shifted onto ``[-B, B]``. All-zero parameters give
the identity (uniform bins, unit knot slopes).
"""

from __future__ import annotations

from torch import Tensor
from zuko.transforms import MonotonicRQSTransform

__all__ = ["spline_params", "spline_forward", "spline_inverse"]

#: smallest slope of a spline (zuko's ``slope``): keeps log-derivatives bounded
MIN_SLOPE = 1e-3


def spline_params(n_bins: int) -> int:
    """Unconstrained parameters of one spline with ``n_bins`` bins (``3K - 1``)."""
    return 3 * n_bins - 1


def _spline(params: Tensor, half_width: float) -> MonotonicRQSTransform:
    k = (params.shape[-1] + 1) // 3
    widths, heights, slopes = params.split([k, k, k - 1], dim=-1)
    return MonotonicRQSTransform(widths, heights, slopes, bound=half_width, slope=MIN_SLOPE)


def spline_forward(u: Tensor, params: Tensor, lo: float, hi: float) -> tuple[Tensor, Tensor]:
    """``(f(u), log f'(u))`` of the spline on ``[lo, hi]`` (identity outside).

    Args:
        u: ``(...)`` inputs.
        params: ``(..., 3K - 1)`` unconstrained parameters (see :func:`spline_params`).
    """
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    y, ladj = _spline(params, half).call_and_ladj(u - mid)
    return y + mid, ladj


def spline_inverse(y: Tensor, params: Tensor, lo: float, hi: float) -> tuple[Tensor, Tensor]:
    """``(f^{-1}(y), log |d f^{-1}/dy|)``: the inverse of :func:`spline_forward`."""
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    spline = _spline(params, half)
    u = spline.inv(y - mid)
    _, ladj = spline.call_and_ladj(u)
    return u + mid, -ladj
