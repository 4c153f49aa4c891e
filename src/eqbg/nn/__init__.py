"""Equivariant networks used as CNF vector fields."""

from __future__ import annotations

from .egnn import EGNNField, time_features
from .kernel import KernelField

__all__ = ["EGNNField", "KernelField", "time_features"]
