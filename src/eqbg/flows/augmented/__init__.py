"""The SE(3)-equivariant augmented coupling flow (Midgley et al. 2023): per-node frames with
splines inside (:mod:`.frames`, :mod:`.splines`), the coupling (:mod:`.coupling`) and the flow
(:mod:`.flow`)."""

from __future__ import annotations

from .coupling import AugmentedCoupling
from .flow import AugmentedCouplingFlow
from .frames import FRAMES, AlongVectorFrame, Frame, ProjFrame, SphericalFrame

__all__ = [
    "AugmentedCoupling",
    "AugmentedCouplingFlow",
    "FRAMES",
    "Frame",
    "SphericalFrame",
    "ProjFrame",
    "AlongVectorFrame",
]
