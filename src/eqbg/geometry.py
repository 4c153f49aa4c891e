"""Geometry shared by every stage: the centre-of-mass-free subspace."""

from __future__ import annotations

from torch import Tensor

__all__ = ["remove_mean"]


def remove_mean(x: Tensor) -> Tensor:
    """Project onto the CoM-free subspace by subtracting the unweighted particle mean.

    Args:
        x: ``(..., n, d)`` positions (or vectors attached to them).

    Returns:
        ``(..., n, d)`` with ``x.sum(-2) == 0``.
    """
    return x - x.mean(dim=-2, keepdim=True)
