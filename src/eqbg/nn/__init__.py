"""Networks used as CNF vector fields: the equivariant EGNN and Köhler kernel fields, and the
non-equivariant MLP baseline."""

from __future__ import annotations

from .egnn import EGNNField, time_features
from .kernel import KernelField
from .mlp import MLPField

__all__ = ["EGNNField", "KernelField", "MLPField", "time_features"]
